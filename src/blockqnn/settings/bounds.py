"""The documented range of every numeric setting, and the one check that enforces them.

Owns: `Range`, `check` (finite, of the right kind, inside its range, one-line message
`section.key = value: must be ...`), the size limits that keep a run's cost bounded
(`MAX_DEPTH`, `MAX_BUDGET`, network widths) and `SETTINGS`, the table of every config key's
range that `blockqnn.settings.config` and `blockqnn.space.nsc.cost` validate against and
the docs list. Must
not import anything but `blockqnn.errors`: the torch-free core (nsc, cost, config) uses it.

Why bounds at all: a value that passes validation reaches the trainer, the store or a loop
whose size it sets. A seed of 2**64 overflows torch's seed, a width of 2e9 overflows SQLite's
integers, an lr of 1e300 overflows float32 inside Adam, `blocks_per_stage = 1e8` makes even
the analytic cost count run for minutes and `max_depth = 100000` builds gigabytes of Q-table
actions before the first ask. The ranges are generous for real use and far from those cliffs.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from blockqnn.errors import BlockQNNError, clip

# A whole number as text: ASCII digits only (int() also takes "1_0" and "٢"); the CLI's
# integer flags and the thread setting read numbers with it
INTEGER_TEXT = re.compile(r"[+-]?[0-9]+\Z", re.ASCII)
MAX_DEPTH = 64  # layer indices of a block: the Q-table's actions grow with its square
DEFAULT_MAX_DEPTH = 10  # choice: the paper's value is uncertain (23 recalled), ports use 10
MAX_BUDGET = 10_000_000  # trained candidates of one search (the paper's largest run: 11,392)
MAX_FILTERS = 65_536  # first-stage width F; stages double it (x4 or x8 at the last stage)
MAX_BLOCKS_PER_STAGE = 64  # N; the paper's final networks use up to 6
MAX_SEED = 2**32 - 1  # every seed; numpy's legacy seeding and most tools take 32 bits
MAX_TEXT = 4096  # characters of a string setting (a path: Linux's PATH_MAX)
MAX_EPOCHS = 100_000
MAX_LR = 1e6  # far beyond any useful rate, still finite after Adam's float32 arithmetic
MAX_TOP = 100_000  # rows a --top or --rank option may ask for


@dataclass(frozen=True)
class Range:
    """Allowed values: `low`..`high`, each end included unless `open_low` / `open_high`;
    `integer` ones must be whole numbers (bools are refused), the others finite numbers."""

    low: float
    high: float
    integer: bool = False
    open_low: bool = False
    open_high: bool = False

    def contains(self, value: float) -> bool:
        above = value > self.low if self.open_low else value >= self.low
        below = value < self.high if self.open_high else value <= self.high
        return above and below

    def describe(self) -> str:
        """`an integer in [1, 64]`, `a finite number in (0, 1]`."""
        kind = "an integer" if self.integer else "a finite number"
        left = "(" if self.open_low else "["
        right = ")" if self.open_high else "]"
        return f"{kind} in {left}{_number(self.low)}, {_number(self.high)}{right}"


def _number(value: float) -> str:
    if float(value).is_integer() and abs(value) < 1e15:
        return f"{int(value):,}".replace(",", "_") if abs(value) >= 10_000 else str(int(value))
    return f"{value:g}"


def check(name: str, value: object, allowed: Range) -> None:
    """Raise `BlockQNNError("name = value: must be ...")` unless `value` is in `allowed`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BlockQNNError(f"{name} = {clip(value)}: must be {allowed.describe()}")
    if allowed.integer and not isinstance(value, int):
        raise BlockQNNError(f"{name} = {clip(value)}: must be {allowed.describe()}")
    if isinstance(value, float) and not math.isfinite(value):
        raise BlockQNNError(f"{name} = {value}: must be {allowed.describe()}")
    if not allowed.contains(value):
        raise BlockQNNError(f"{name} = {clip(value)}: must be {allowed.describe()}")


def check_text(name: str, value: str, empty: bool = True) -> None:
    """A string setting: at most `MAX_TEXT` characters, no NUL (it cannot be a path)."""
    if not empty and not value:
        raise BlockQNNError(f"{name}: empty; give a value")
    if len(value) > MAX_TEXT:
        raise BlockQNNError(
            f"{name} = {clip(value, quote=True)}: {len(value):,} characters, at most {MAX_TEXT}"
        )
    if "\x00" in value:
        raise BlockQNNError(f"{name} = {clip(value, quote=True)}: contains a NUL character")


def integers(low: int, high: int) -> Range:
    return Range(low, high, integer=True)


SEED = integers(0, MAX_SEED)
FRACTION = Range(0.0, 1.0)  # [0, 1]
UNIT_OPEN_LOW = Range(0.0, 1.0, open_low=True)  # (0, 1]
UNIT_OPEN_HIGH = Range(0.0, 1.0, open_high=True)  # [0, 1)
INPUT_CHANNELS = integers(1, 64)  # network.input_shape C (set from the data)
INPUT_SIDE = integers(1, 8192)  # network.input_shape H and W (the template sets the minimum)
# Ranges of the early-stop training (`SETTINGS`) that the final training's settings share
# (`blockqnn.settings.final`)
EPOCHS = integers(1, MAX_EPOCHS)
BATCH_SIZE = integers(1, 1_048_576)  # images per step: 2**20
LEARNING_RATE = Range(0.0, MAX_LR, open_low=True)
CUTOUT = integers(0, int(INPUT_SIDE.high))  # side in pixels of the erased square

# Every numeric config setting, `section.key` -> its range (`[train] betas` applies to each of
# its two values). `tests/test_bounds.py` checks that every numeric field of every section is
# here and that docs/configuration.md lists them.
SETTINGS: dict[str, Range] = {
    "search.budget": integers(1, MAX_BUDGET),
    "search.seed": SEED,
    "search.workers": integers(1, 4096),
    "search.gpus_per_trial": Range(0.0, 1024.0),
    "search.cpus_per_trial": Range(0.0, 4096.0),
    "search.max_attempts": integers(1, 100),
    "search.stop_after": integers(0, MAX_EPOCHS - 1),  # 0 = off; must be below train.epochs
    "search.stop_quantile": Range(0.0, 1.0, open_low=True, open_high=True),
    "search.prescreen": integers(1, 10_000),  # 1 = off
    "agent.max_depth": integers(2, MAX_DEPTH),
    "agent.alpha": UNIT_OPEN_LOW,
    "agent.gamma": FRACTION,
    "agent.q_init": Range(-1e6, 1e6),
    "agent.replay_size": integers(0, 1_000_000),
    "agent.iteration_size": integers(0, 1_000_000),
    "agent.explore_share": FRACTION,
    "agent.ucb": Range(0.0, 1e6),
    "agent.population_size": integers(1, 1_000_000),
    "agent.sample_size": integers(1, 1_000_000),
    "data.train_samples": integers(0, 1_000_000_000),
    "data.val_size": Range(0.0, 1e9),
    "data.seed": SEED,
    "data.fidelity": integers(12, 200),  # and one of choices.FIDELITIES
    "network.num_classes": integers(1, 100_000),
    "network.filters": integers(1, MAX_FILTERS),
    "network.blocks_per_stage": integers(1, MAX_BLOCKS_PER_STAGE),
    "network.hidden": integers(1, MAX_FILTERS),
    "network.dropout": UNIT_OPEN_HIGH,
    "train.epochs": EPOCHS,
    "train.batch_size": BATCH_SIZE,
    "train.lr": LEARNING_RATE,
    "train.betas": UNIT_OPEN_HIGH,
    "train.eps": UNIT_OPEN_LOW,
    "train.weight_decay": FRACTION,
    "train.lr_step_epochs": EPOCHS,
    "train.lr_gamma": UNIT_OPEN_LOW,
    "train.max_seconds": Range(0.0, 1e7),  # 0 = no limit; 1e7 s is 116 days
    "train.seed": SEED,
    "reward.mu": Range(0.0, 1000.0),
    "reward.rho": Range(0.0, 1000.0),
    "reward.latency_target_ms": Range(0.0, 1e7),  # 0 = unset; the latency rewards need > 0
    "reward.latency_alpha": Range(-100.0, 100.0),
    "reward.latency_beta": Range(-100.0, 100.0),
    "reward.latency_lambda": Range(0.0, 1000.0),
    "reward.latency_batch": integers(1, 65_536),
    "reward.latency_threads": integers(1, 4096),
    "reward.latency_warmup": integers(0, 100_000),
    "reward.latency_repeats": integers(1, 100_000),
    "reward.latency_filters": integers(0, MAX_FILTERS),
    "reward.latency_blocks_per_stage": integers(0, MAX_BLOCKS_PER_STAGE),
}
# `[train] threads` / `--threads` when a number (a text setting, so not in SETTINGS; checked by
# `blockqnn.settings.threads.parse`): more than 4096 threads is a typo on any machine
THREADS = integers(1, 4096)


def check_settings(section: str, obj: object) -> None:
    """Check every numeric field of a config section against `SETTINGS`."""
    prefix = section + "."
    for key, allowed in SETTINGS.items():
        if not key.startswith(prefix):
            continue
        value = getattr(obj, key[len(prefix) :])
        if isinstance(value, tuple):
            for item in value:
                check(key, item, allowed)
        else:
            check(key, value, allowed)
