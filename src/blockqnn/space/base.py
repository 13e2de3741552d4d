"""The `Space` protocol: the decision process a strategy walks to build one candidate.

Owns: what every search space must provide, when each part is used, and `make_space`
(the configured space, built by its registry factory). Must not import
torch, know about strategies, the store or training.

A space describes its candidates twice:

- as *values* (`Candidate`): immutable, validated objects with a canonical text (`str(c)`,
  which `parse` reads back) and an isomorphism-invariant `hash` (equal for candidates that
  compute the same function). The hash is the candidate's identity in the store, the reward
  cache and the strategies' memories;
- as *paths* through a decision process (what Q-learning walks): a state is a tuple of ints
  (the step just taken; `start` before the first), an action is a tuple of ints (the next
  step), the state after an action is that action, and a path is the actions of one
  candidate, closed by a terminal action. Every path the space offers is a valid candidate
  and every candidate has a path (`path_of`).

Life cycle. A strategy receives the space at construction and may call any method at any
time; all methods are pure (the RNG is the caller's). States and actions are JSON-friendly
(lists of ints) so strategies can snapshot tables keyed by them; `intern` maps such a list
back to the space's own tuple and `check_path` validates rows read back from a snapshot.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from blockqnn.settings.registry import SPACES

if TYPE_CHECKING:
    from blockqnn.settings.config import Config

Action = tuple[int, ...]
State = Action
Path = tuple[Action, ...]


@runtime_checkable
class Candidate(Protocol):
    """One point of a space: immutable, validated, `str()` is its canonical text."""

    @property
    def hash(self) -> str:
        """Isomorphism-invariant identity: equal for candidates computing the same function."""
        ...


@runtime_checkable
class Space(Protocol):
    """A search space as a decision process (see the module docstring)."""

    name: str  # the registry name, e.g. "nsc", "nb201"
    # Optional class attributes, read with getattr: `evaluator`, a "module:attr" factory
    # (config, data, device) -> evaluator used when the run names no other (default: the
    # early-stop trainer), and `needs_data` (default True): whether the master loads the
    # dataset for it (False: `[data] dataset` is a name, e.g. a table's column, never a path;
    # see `reads_data`). Optional method `distinct_count()`: how many distinct candidates
    # (hashes) it holds, where fewer than `count()` (see `distinct_count`).

    @property
    def start(self) -> State:
        """The state before the first action."""
        ...

    def settings(self) -> dict[str, Any]:
        """JSON values that identify this space's shape (checked by strategy snapshots)."""
        ...

    def actions(self, state: State) -> tuple[Action, ...]:
        """The valid actions after the non-terminal `state`, in a fixed order."""
        ...

    def is_terminal(self, action: Action) -> bool:
        """Whether `action` closes a path."""
        ...

    def intern(self, values: Sequence[int]) -> Action | None:
        """The space's own tuple equal to `values`, or None if it is no state or action."""
        ...

    def is_action(self, state: State, action: Sequence[int]) -> bool:
        """Whether `action` is valid after `state`."""
        ...

    def check_path(self, rows: Iterable[Sequence[int]]) -> Path:
        """Validate rows as a path; raises `BlockQNNError` naming the first bad row."""
        ...

    def sample(self, rng: random.Random) -> Path:
        """A path drawn uniformly over the valid actions at every step."""
        ...

    def to_candidate(self, path: Path) -> Any:
        """The candidate a (valid) path describes."""
        ...

    def path_of(self, candidate: Any) -> Path:
        """The path that produces `candidate`; raises `BlockQNNError` if it does not fit."""
        ...

    def parse(self, text: str) -> Any:
        """A candidate from its text; raises `BlockQNNError` with a one-line reason."""
        ...

    def mutate(self, candidate: Any, rng: random.Random) -> Any:
        """A valid candidate one small random change away from `candidate`, with another hash
        whenever the space allows one."""
        ...

    def count(self) -> int:
        """How many distinct paths the space holds (an upper bound on distinct candidates)."""
        ...


def path_text(path: Path) -> str:
    """Text of a path's rows: `1,1,3,0,0; 2,7,0,0,0` (snapshots store paths this way)."""
    return "; ".join(",".join(str(v) for v in a) for a in path)


def parse_path_rows(text: str) -> list[tuple[int, ...]]:
    """Rows of integers from `path_text`, without validation (see `Space.check_path`)."""
    from blockqnn.errors import BlockQNNError

    try:
        return [tuple(int(v) for v in chunk.split(",")) for chunk in text.split(";")]
    except ValueError:
        raise BlockQNNError(f"{text[:60]!r} is not a path's text") from None


def make_space(config: Config) -> Space:
    """The run's search space, built by its registry factory (`[search] space`)."""
    space: Space = SPACES.get(config.search.space)(config)
    return space


def reads_data(space: Space) -> bool:
    """Whether `[data] dataset` names data the space's evaluator reads (a path or built-in
    name), not only a key such as nb201's table column (`needs_data` False)."""
    return bool(getattr(space, "needs_data", True))


def distinct_count(space: Space) -> int:
    """How many candidates of distinct hash `space` holds, the most a search can train: its
    `distinct_count()` where it has one, else `count()` (an upper bound, as for NSC)."""
    counter = getattr(space, "distinct_count", None)
    return int(counter()) if callable(counter) else space.count()
