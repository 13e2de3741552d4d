"""The CPU-thread setting: its policies, its help text and its parsing.

Owns: the canonical text of a `--threads` / `train.threads` value. Must not look at the
machine: resolving a setting to a number of threads is `blockqnn.train.threads`'s work.
"""

from __future__ import annotations

from blockqnn.errors import BlockQNNError, clip
from blockqnn.settings.bounds import INTEGER_TEXT, THREADS, check

POLICIES = ("auto", "all", "physical", "minus-one")
DEFAULT = "auto"  # measured: docs/benchmarks.md, "Threads"
HELP = (
    "CPU threads: auto (the idle cores; default), all, physical, minus-one, or a number; "
    "local workers divide them"
)


def parse(setting: str | int, where: str = "--threads") -> str:
    """The canonical text of a setting (`auto`, `all`, `physical`, `minus-one` or a whole
    number of threads in `bounds.THREADS`); anything else raises a one-line error."""
    text = str(setting).strip().lower()
    if text in POLICIES:
        return text
    try:
        if not INTEGER_TEXT.match(text):
            raise ValueError(text)
        number = int(text)
    except ValueError:
        raise BlockQNNError(
            f"{where} = {clip(setting, quote=True)}: give a number of threads or one of "
            f"{', '.join(POLICIES)}"
        ) from None
    check(where, number, THREADS)
    return str(number)
