"""Run configuration: frozen dataclasses with unit-carrying defaults, loaded from TOML.

Owns: every setting of a search or an evaluation, its default with the reason, validation
(once, at load: every numeric setting against its documented range in `blockqnn.settings.bounds`,
every string's length), merging TOML tables and flags into the sections, and the round trip to
a plain dict (saved with every run). The `[network]` section is `blockqnn.settings.network`'s,
reading the file and checking each value's type `blockqnn.settings.toml`'s. Must not import
torch. Values marked (paper) come from BlockQNN; (choice) are ours where the paper is silent.

A TOML file has one table per section, each optional:

    [search]   budget = 100, space = "nsc", agent = "qlearning", executor = "local", ...
    [agent]    alpha = 0.01, gamma = 1.0, ...
    [data]     dataset = "digits", train_samples = 500, table = "", ...
    [network]  filters = 32, blocks_per_stage = 2, head = "paper", ...
    [train]    epochs = 12, batch_size = 256, lr = 0.001, ...
    [reward]   name = "paper", mu = 0.01, rho = 0.01

Names of spaces, strategies, rewards and executors are checked against
`blockqnn.settings.registry`, so plug-ins are accepted wherever built-ins are.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar

from blockqnn.errors import BlockQNNError, clip
from blockqnn.settings.bounds import DEFAULT_MAX_DEPTH, check_settings, check_text
from blockqnn.settings.choices import (
    AUGMENTS,
    COMPILE_MODES,
    FIDELITIES,
    LATENCY_PLACES,
    LATENCY_RUNTIMES,
    PRECISIONS,
)
from blockqnn.settings.datasets import BUILTIN_DATASETS
from blockqnn.settings.network import NetworkConfig as NetworkConfig  # a section of Config
from blockqnn.settings.registry import EXECUTORS, REWARDS, SPACES, STRATEGIES, Registry
from blockqnn.settings.threads import parse as parse_threads
from blockqnn.settings.toml import coerce, read_toml


@dataclass(frozen=True)
class TrainConfig:
    """The early-stop training that scores a candidate (paper: Adam, 12 epochs)."""

    epochs: int = 12  # (paper) early-stop epochs per candidate
    batch_size: int = 256  # (paper) images per step
    lr: float = 1e-3  # (paper) Adam learning rate
    betas: tuple[float, float] = (0.9, 0.999)  # (paper) Adam betas
    eps: float = 1e-8  # (paper) Adam epsilon
    weight_decay: float = 0.0  # (paper: none stated) Adam L2 penalty
    lr_step_epochs: int = 5  # (paper) multiply lr by lr_gamma every this many epochs
    lr_gamma: float = 0.2  # (paper) lr factor at each step
    precision: str = "auto"  # "auto" (bf16 where fast), "bf16" or "fp32"
    channels_last: bool = True  # (choice) NHWC memory format: faster convs on GPU and AMX CPUs
    cuda_graphs: bool = True  # (choice) capture the whole step as a CUDA graph when it works
    # (choice) torch.compile the network: "auto" compiles on the CPU when the eager training
    # would take over 20 minutes (compiling costs ~1-2 min and doubles CPU throughput),
    # never on CUDA (the CUDA graph is faster for 12-epoch runs); "on" / "off" force it
    compile: str = "auto"
    augment: str = "auto"  # "auto" (crop+flip for images, none for digits), "crop_flip", "none"
    max_seconds: float = 0.0  # wall-clock limit per evaluation in seconds; 0 = none
    seed: int = 0  # base seed of weight init and batch order
    # CPU threads: "auto" (load-aware), "all", "physical", "minus-one" or a number; local
    # workers divide them (blockqnn.train.threads; a TOML integer is accepted)
    threads: str = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", tuple(self.betas))
        if len(self.betas) != 2:
            raise BlockQNNError(f"train.betas = {clip(self.betas)}: expected two numbers")
        _validate("train", self)
        _choice(self, "precision", PRECISIONS)
        _choice(self, "augment", AUGMENTS)
        _choice(self, "compile", COMPILE_MODES)
        object.__setattr__(self, "threads", parse_threads(self.threads, "train.threads"))


@dataclass(frozen=True)
class RewardConfig:
    """Which reward turns an evaluation's metrics into the scalar the strategy is told.

    `paper`: accuracy - mu * log(FLOPs / FLOPs_ref) - rho * log(density). The paper's mu and
    rho are not known reliably, and a raw log(FLOPs) is ~20, so FLOPs are normalised by the
    network of a single 3x3 conv block (`cost.REFERENCE_BLOCK`, same network settings). With
    mu = 0.01 a block ten times costlier than that reference must earn 2.3 points of
    accuracy more to be worth it; with rho = 0.01 the densest blocks (density ~1.5) pay 0.4
    points. mu = rho = 0 gives plain accuracy. `accuracy`: the accuracy alone.

    Latency (`blockqnn.evaluate.latency`): `mnasnet` is MnasNet's soft constraint, accuracy x
    (latency / target) ^ w with w = latency_alpha at or under the target and latency_beta
    over it (MnasNet: -0.07 for both); `additive` is accuracy - latency_lambda x
    log(latency / target). Both use the measured batch-1 latency of the deployment-size
    network and need latency_target_ms > 0. `latency_device` set with another reward records
    the latency without rewarding it.
    """

    name: str = "paper"  # (paper) a name registered in blockqnn.settings.registry.REWARDS
    mu: float = 0.01  # (choice) reward per unit of log FLOPs ratio
    rho: float = 0.01  # (choice) reward per unit of log density
    # "cpu" | "cuda" | "onnxruntime" (ONNX Runtime on the CPU); "" = measure no latency
    # (the latency rewards then measure on "cpu")
    latency_device: str = ""
    # "worker": each evaluating worker measures after training; "master": the search's own
    # machine measures (the search runs on GPUs, the model ships to a CPU)
    latency_on: str = "worker"
    latency_target_ms: float = 0.0  # mnasnet: the target; additive: the reference (> 0)
    latency_alpha: float = -0.07  # (MnasNet) exponent at or under the target
    latency_beta: float = -0.07  # (MnasNet) exponent over the target (-1: a hard constraint)
    # (choice) additive: 0.07 x log 2 = 0.05 accuracy for twice the latency, about
    # what MnasNet's -0.07 costs a 0.7-accurate network
    latency_lambda: float = 0.07
    latency_batch: int = 1  # > 1: also time this batch (metric latency_batch_ms)
    latency_threads: int = 1  # (choice) CPU threads of the timed runtime: one core
    latency_warmup: int = 5  # (choice) untimed passes first
    latency_repeats: int = 20  # (choice) timed passes: median, IQR, CV
    latency_filters: int = 0  # deployment network's F; 0 = network.filters (as `train`)
    latency_blocks_per_stage: int = 0  # deployment network's N; 0 = network.blocks_per_stage

    def __post_init__(self) -> None:
        _validate("reward", self)
        _registered(self, "name", REWARDS)
        if self.latency_device:
            _choice(self, "latency_device", LATENCY_RUNTIMES)
        _choice(self, "latency_on", LATENCY_PLACES)


@dataclass(frozen=True)
class DataConfig:
    """Which data scores candidates. The reward uses a validation split held out from the
    training set, never the test set."""

    # digits | cifar10 | cifar100 | a folder | a .npz file; for the nb201 space the table's
    # column: cifar10 | cifar100 | imagenet16-120
    dataset: str = "digits"
    # nb201 space: the accuracy table (CSV or .csv.gz; several files joined by os.pathsep,
    # e.g. the 200- and 12-epoch tables, are joined on their cells)
    table: str = ""
    # nb201 space: the table accuracy after this many epochs is the reward (12: BlockQNN's
    # early-stop proxy; 200: the final training); the 200-epoch one is recorded beside it
    fidelity: int = 200
    data_dir: str = ""  # where cifar archives are, or are downloaded to; "" = the cache
    cache_dir: str = ""  # decoded-array cache; "" = $BLOCKQNN_CACHE, else the user cache
    train_samples: int = 0  # class-balanced subset of the training split; 0 = all
    val_size: float = 0.0  # validation images (>= 1) or fraction (< 1); 0 = auto
    seed: int = 0  # seed of the subset and the split

    def __post_init__(self) -> None:
        if not self.dataset:
            raise BlockQNNError("data.dataset: empty; name a dataset")
        _validate("data", self)
        if self.fidelity not in FIDELITIES:
            raise BlockQNNError(
                f"data.fidelity = {self.fidelity}: choose one of {', '.join(map(str, FIDELITIES))}"
            )


def with_absolute_paths(config: Config, dataset_is_path: bool = True) -> Config:
    """`config` with its data set (when it names an existing file or folder, not a built-in
    name), tables and data folders made absolute, as a new run stores them.
    `dataset_is_path` False (a space that reads no data set, e.g. nb201, whose dataset is a
    table's column): the dataset is a name even where a folder of that name exists."""
    d = config.data

    def absolute(path: str) -> str:
        return os.path.abspath(path) if path else path

    dataset = d.dataset
    if dataset_is_path and dataset not in BUILTIN_DATASETS and os.path.exists(dataset):
        dataset = absolute(dataset)
    table = os.pathsep.join(absolute(t) for t in d.table.split(os.pathsep)) if d.table else ""
    data = replace(
        d,
        dataset=dataset,
        table=table,
        data_dir=absolute(d.data_dir),
        cache_dir=absolute(d.cache_dir),
    )
    return config if data == d else replace(config, data=data)


# [agent] presets: `paper` keeps every constant of BlockQNN (and MetaQNN where it is silent)
# exactly; `blockqnn` is ours, chosen by measurement (docs/benchmarks.md, "How the agent's
# defaults were chosen"). A preset sets every field it lists; keys given beside it override it.
_PAPER_AGENT: dict[str, Any] = {
    "alpha": 0.01,
    "gamma": 1.0,
    "q_init": 0.5,
    "replay_size": 128,
    "iteration_size": 64,
    "reward_shaping": True,
    "q_init_mode": "fixed",
    "alpha_mode": "fixed",
    "on_repeat": "allow",
}
# Levers added after runs were stored (`[agent]` keys a stored config may lack): off, as the
# releases before them behaved; the paper has none of them.
LEVERS_OFF: dict[str, Any] = {
    "explore_share": 0.0,
    "ucb": 0.0,
    "state": "last",
    "replay": "uniform",
    "explore_per": "step",
}
_PAPER_AGENT.update(LEVERS_OFF)
AGENT_PRESETS: dict[str, dict[str, Any]] = {
    "paper": _PAPER_AGENT,
    # the paper and four departures, measured (docs/benchmarks.md, "Q-learning's levers")
    "blockqnn": {
        **_PAPER_AGENT,
        "alpha_mode": "max",
        "on_repeat": "explore",
        "explore_share": 0.2,
        "replay": "ranked",
    },
}


# A preset field left unset reads its preset's value (`AgentConfig.__post_init__`), so the
# preset is resolved however the section is made: `AgentConfig(preset="paper")`, TOML, CLI.
_FROM_PRESET: Any = None


@dataclass(frozen=True)
class AgentConfig:
    """The strategies' settings and the NSC space's size, every default of the agents in one
    place: the strategies' constructors read this section (or `AgentConfig()`). Fields listed
    in AGENT_PRESETS default to the `preset`'s value; keys given beside it override it."""

    preset: str = "blockqnn"  # "blockqnn" (ours, measured) or "paper"
    max_depth: int = DEFAULT_MAX_DEPTH  # (choice) layer indices 1..max_depth, last terminal
    alpha: float = _FROM_PRESET  # (paper 0.01) Q-learning rate; alpha_mode "visits": its floor
    gamma: float = _FROM_PRESET  # (paper 1.0) discount
    # (MetaQNN 0.5) initial Q value; with q_init_mode "mean", before any reward
    q_init: float = _FROM_PRESET
    # (choice; MetaQNN 100-128: 128) blocks replayed after each iteration
    replay_size: int = _FROM_PRESET
    # (paper 64) distinct blocks per replay iteration; 0 = budget / 178 (at least 4, at most
    # 64), as many iterations as the paper's schedule
    iteration_size: int = _FROM_PRESET
    reward_shaping: bool = _FROM_PRESET  # (paper true) every step gets R / T instead of 0
    # (paper "fixed") what unvisited pairs read: "fixed" = q_init; "mean" = the mean reward
    # told so far (measured: no gain, a loss at small budgets with a fixed alpha)
    q_init_mode: str = _FROM_PRESET
    # (paper "fixed") "visits": each pair learns at max(alpha, 1 / its updates), the sample
    # mean of its targets until then; with alpha = 0.01 alone a few hundred blocks leave
    # every Q-value near q_init (measured: the largest gain of all); "max": a pair's first
    # target, then the best target so far (the greedy walk rebuilds the best block found)
    alpha_mode: str = _FROM_PRESET
    # (paper "allow") "explore": a walk that rebuilds a block already told explores one
    # random step of it instead (10 tries), then more steps (10 more, the last a random
    # walk); "allow": propose it again
    on_repeat: str = _FROM_PRESET
    # (choice; paper 0 = the schedule's own 95/178) the share of the budget at epsilon 1,
    # then the paper's decay stages over the rest
    explore_share: float = _FROM_PRESET
    # (choice; paper 0) count bonus on greedy steps: Q + ucb sqrt(ln(1 + N(s)) / (1 + n(s, a)))
    ucb: float = _FROM_PRESET
    # (choice; paper "last") the Q-table's state: "last" step, or the whole "prefix" so far
    state: str = _FROM_PRESET
    # (choice; paper "uniform") replay draws: "uniform", or "ranked" (the i-th best: 1 / i)
    replay: str = _FROM_PRESET
    # (choice; paper "step") epsilon is each "step"'s chance to be random, or a "block"'s
    # chance to be the greedy walk with one random step (a mutation of it)
    explore_per: str = _FROM_PRESET
    population_size: int = 20  # (choice) regularized evolution: candidates alive at once
    sample_size: int = 5  # (choice) regularized evolution: tournament size

    def __post_init__(self) -> None:
        _choice(self, "preset", tuple(AGENT_PRESETS))
        for key, value in AGENT_PRESETS[self.preset].items():
            if getattr(self, key) is _FROM_PRESET:
                object.__setattr__(self, key, value)
        _validate("agent", self)
        _choice(self, "q_init_mode", ("fixed", "mean"))
        _choice(self, "alpha_mode", ("fixed", "visits", "max"))
        _choice(self, "on_repeat", ("allow", "explore"))
        _choice(self, "state", ("last", "prefix"))
        _choice(self, "replay", ("uniform", "ranked"))
        _choice(self, "explore_per", ("step", "block"))
        if self.sample_size > self.population_size:
            raise BlockQNNError(
                f"agent.sample_size = {self.sample_size}: must not exceed population_size "
                f"= {self.population_size}"
            )


# (choice) More worker processes than this on one machine is a typo, not a plan: each holds
# the dataset and, on a GPU, a CUDA context (~0.5 GB), and 256 already means 32 per GPU on
# an 8-GPU machine. A Ray cluster may hold more slots, but not millions.
MAX_LOCAL_WORKERS = 256
PRESCREEN_SCORES = ("params", "synflow", "jacob_cov")  # blockqnn.evaluate.zero_cost


@dataclass(frozen=True)
class SearchSettings:
    """The search loop and where it runs."""

    budget: int = 64  # trained (not reused) candidates to evaluate
    space: str = "nsc"  # (paper) the search space: "nsc" (BlockQNN's blocks), "nb201", plug-ins
    agent: str = "qlearning"  # (paper) the strategy: "qlearning", "random", "evolution", plug-ins
    seed: int = 0  # seed of the agent
    # "local" (this machine: in process for 1 worker, worker processes for more) or "ray"
    executor: str = "local"
    # evaluation slots running at once; at most MAX_LOCAL_WORKERS with "local" (bounds.py
    # caps every executor)
    workers: int = 1
    # GPUs per evaluation; fractions pack one GPU (0.5: two per GPU). "local": 0 (the
    # default) spreads the workers over the visible GPUs without a cap, > 0 requires a GPU
    # and must be 1/k (an evaluation uses one device, and a share that leaves a remainder
    # would leave part of every GPU idle)
    gpus_per_trial: float = 0.0
    cpus_per_trial: float = 1.0  # Ray: CPUs reserved per evaluation ("local" divides them)
    address: str = ""  # Ray: address of an existing cluster; "" starts a local one
    max_attempts: int = 3  # tries per trial when a worker dies mid-evaluation
    # the evaluation cache shared by runs (blockqnn.store.cache): a folder, "" = the user cache
    # folder ($XDG_CACHE_HOME/blockqnn, else ~/.cache/blockqnn), "off" = no cache
    cache: str = ""
    # (choice, off until measured: benchmarks/faster.py) early termination inside the early
    # stop: after `stop_after` epochs (0 = off) a candidate whose validation accuracy is below
    # the `stop_quantile` quantile of earlier candidates' at that epoch stops
    # (blockqnn.search.terminate); must be below train.epochs
    stop_after: int = 0
    stop_quantile: float = 0.5
    # (choice, off until measured) a free pre-screen: the strategy proposes `prescreen`
    # candidates (1 = off), a zero-cost score ranks them and only the best is trained
    # (blockqnn.search.prescreen): "params", "synflow" or "jacob_cov"
    prescreen: int = 1
    prescreen_score: str = "params"

    def __post_init__(self) -> None:
        _validate("search", self)
        _choice(self, "prescreen_score", PRESCREEN_SCORES)
        _registered(self, "space", SPACES)
        _registered(self, "agent", STRATEGIES)
        _registered(self, "executor", EXECUTORS)
        # bounds.py has checked the ranges (workers 1..4096, finite non-negative shares)
        if self.executor == "local" and self.workers > MAX_LOCAL_WORKERS:
            raise BlockQNNError(
                f"search.workers = {self.workers}: the local executor runs at most "
                f"{MAX_LOCAL_WORKERS} at once"
            )
        g = self.gpus_per_trial
        if self.executor == "local" and g > 0:
            if g > 1:
                raise BlockQNNError(
                    f"search.gpus_per_trial = {g:g}: the local executor runs an evaluation "
                    "on one GPU; use at most 1"
                )
            if g < 1e-6 or abs(1 / g - round(1 / g)) > 1e-9:  # 1e-320: 1/g is inf
                raise BlockQNNError(
                    f"search.gpus_per_trial = {g:g}: must divide one GPU evenly "
                    "(1, 0.5, 0.25, ...: 1/k)"
                )


@dataclass(frozen=True)
class Config:
    """Everything a search needs; saved, resolved, in the run's store."""

    search: SearchSettings = field(default_factory=SearchSettings)
    agent: AgentConfig = field(default_factory=AgentConfig)
    data: DataConfig = field(default_factory=DataConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)

    def __post_init__(self) -> None:
        k, epochs = self.search.stop_after, self.train.epochs
        if k and k >= epochs:  # stopping at the last epoch would save nothing
            raise BlockQNNError(
                f"search.stop_after = {k}: must be below train.epochs = {epochs} (0 = off)"
            )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["network"] = self.network.to_dict()
        out["train"]["betas"] = list(self.train.betas)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        """Build and validate from nested dicts; unknown sections or keys are refused."""
        return merge(cls(), data)

    @classmethod
    def from_saved(cls, data: dict[str, Any]) -> Config:
        """A config a run saved: `[agent]` levers that its release predates (absent from a
        saved section, which holds every key of its time) read as off, as that run had
        them, not as today's preset sets them."""
        agent = data.get("agent")
        if isinstance(agent, dict) and agent:
            data = {**data, "agent": {**LEVERS_OFF, **agent}}
        return cls.from_dict(data)

    @classmethod
    def from_toml(cls, path: str | Path, overrides: dict[str, Any] | None = None) -> Config:
        """Read and validate a TOML file (`blockqnn.settings.toml.read_toml`), then apply
        `overrides` (command-line flags) as if their keys stood in the file: a preset among
        them stays beneath the file's explicit `[agent]` keys, as the file's own preset is
        (`merge` onto the built config could not tell them from the old preset's values)."""
        data = read_toml(path)
        config = cls.from_dict(data)  # the file alone is valid, or refused as such
        if not overrides:
            return config
        combined = dict(data)
        for name, values in overrides.items():
            given = data.get(name)
            combined[name] = {**given, **values} if isinstance(given, dict) else values
        return cls.from_dict(combined)


T = TypeVar("T")


def merge(config: Config, overrides: dict[str, Any]) -> Config:
    """Return `config` with `{section: {key: value}}` overrides applied and validated."""
    sections = {f.name: f for f in fields(Config)}
    updated: dict[str, Any] = {}
    for name, values in overrides.items():
        if name not in sections:
            raise BlockQNNError(
                f"unknown config section [{clip(name)}] (valid: {', '.join(sorted(sections))})"
            )
        if not isinstance(values, dict):
            raise BlockQNNError(f"config section [{name}] must be a table")
        updated[name] = _update(getattr(config, name), values, name)
    return replace(config, **updated)


def preset_first(values: dict[str, Any]) -> dict[str, Any]:
    """[agent] `values` that name a preset, with its fields beneath them: the preset sets
    every field it lists, and the keys given beside it override it. A changed preset must
    not keep the fields the old one filled in (`replace` passes every field along)."""
    preset = values.get("preset")
    if isinstance(preset, str) and preset in AGENT_PRESETS:
        return {**AGENT_PRESETS[preset], **values}
    return values


def _update(section: T, values: dict[str, Any], name: str) -> T:
    known = {f.name: f for f in fields(section)}  # type: ignore[arg-type]
    if name == "agent":
        values = preset_first(values)
    for key in values:
        if key not in known:
            raise BlockQNNError(
                f"unknown config key {name}.{clip(key)} (valid: {', '.join(sorted(known))})"
            )
    clean: dict[str, Any] = {}
    for key, value in values.items():
        default = getattr(section, key)  # the current value carries the expected type
        clean[key] = coerce(value, default, f"{name}.{key}")
    try:
        return replace(section, **clean)  # type: ignore[type-var]
    except TypeError as exc:
        raise BlockQNNError(f"config section [{name}]: {exc}") from None


def _validate(section: str, obj: Any) -> None:
    """Every numeric field in its documented range (`blockqnn.settings.bounds.SETTINGS`),
    every string of a sane length: once, when the section is built."""
    check_settings(section, obj)
    for f in fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, str):
            check_text(f"{section}.{f.name}", value)


_SECTIONS = {
    "TrainConfig": "train",
    "AgentConfig": "agent",
    "SearchSettings": "search",
    "DataConfig": "data",
    "RewardConfig": "reward",
}


def _registered(obj: Any, name: str, registry: Registry[Any]) -> None:
    section = _SECTIONS.get(type(obj).__name__, type(obj).__name__)
    try:
        registry.check(getattr(obj, name))
    except BlockQNNError as exc:
        raise BlockQNNError(f"{section}.{name}: {exc}") from None


def _choice(obj: Any, name: str, options: tuple[str, ...]) -> None:
    value = getattr(obj, name)
    if value not in options:
        section = _SECTIONS.get(type(obj).__name__, type(obj).__name__)
        raise BlockQNNError(
            f"{section}.{name} = {clip(value, quote=True)}: choose one of {', '.join(options)}"
        )
