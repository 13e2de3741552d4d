"""The early-termination gate a job carries from the master to its evaluator.

Owns: `Gate` (validate after epoch `epoch`; stop there if the accuracy is below `below`),
`Job` (a candidate with its gate, as the search loop submits it) and the text form a job
takes through the process pool's pipe and Ray (`job_text` / `split_job`). Must not import
torch nor decide thresholds (the master does, `blockqnn.search.terminate`).

The gate travels with each job rather than with the evaluator's spec: the threshold moves as
candidates complete, and the spec is shipped once, when the workers start.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

MARK = " @gate "  # no candidate's text contains it (NSC layers and nb201 cells use no "@")


@dataclass(frozen=True)
class Gate:
    """Validate after `epoch` epochs; stop there when the accuracy is below `below` (None:
    record the accuracy only, never stop: before the master has a threshold)."""

    epoch: int
    below: float | None = None

    def stops(self, accuracy: float) -> bool:
        return self.below is not None and accuracy < self.below


@dataclass(frozen=True)
class Job:
    """A candidate with its gate. `str(job)` is the text `split_job` reads back."""

    candidate: Any
    gate: Gate

    def __str__(self) -> str:
        below = "none" if self.gate.below is None else repr(self.gate.below)
        return f"{self.candidate}{MARK}{self.gate.epoch} {below}"


def split_job(text: str) -> tuple[str, Gate | None]:
    """The candidate's text and the gate of a job's text (None for a bare candidate)."""
    head, mark, tail = text.rpartition(MARK)
    if not mark:
        return text, None
    epoch, below = tail.split()
    value = None if below == "none" else float(below)
    if value is not None and not math.isfinite(value):
        value = None
    return head, Gate(int(epoch), value)


def unwrap(candidate: Any) -> tuple[Any, Gate | None]:
    """(candidate, gate) of a submitted job or a bare candidate."""
    if isinstance(candidate, Job):
        return candidate.candidate, candidate.gate
    return candidate, None
