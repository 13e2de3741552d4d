"""Search: assemble a run's parts from the settings, run the asynchronous ask/tell loop, and
keep its sessions, resume, warm start and extension in the store.

Modules, in the order a session uses them: `resume` (open a run, read-only checks, restore
the strategy), `warm` (warm-start trials), `assemble` (every part built once), `parts` (what
the loop is handed), `loop` (the ask/tell loop), `session` (`run_search`: lock, loop, close).
"""

from blockqnn.search.loop import (
    SearchEvent,
    SearchStalled,
    SearchSummary,
    Terminated,
)
from blockqnn.search.resume import check_resume_overrides, restore_agent
from blockqnn.search.session import run_search

__all__ = [
    "SearchEvent",
    "SearchStalled",
    "SearchSummary",
    "Terminated",
    "check_resume_overrides",
    "restore_agent",
    "run_search",
]
