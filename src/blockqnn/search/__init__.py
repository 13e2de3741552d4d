"""Search: assemble a run's parts from the settings, run the asynchronous ask/tell loop, and
keep its sessions, resume, warm start and extension in the store."""

from blockqnn.search.loop import SearchSummary, restore_agent, run_search

__all__ = ["SearchSummary", "restore_agent", "run_search"]
