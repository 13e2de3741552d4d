"""Name -> factory tables for every pluggable kind: spaces, strategies, rewards, executors.

Owns: the registries, their built-in entries and the loading of plug-ins that installed
packages declare as Python entry points. Must not import torch or the modules it registers
(entries are `module:attribute` strings, imported when first used), so that config
validation and `--help` can list names cheaply.

A plug-in package declares, in its `pyproject.toml`:

    [project.entry-points."blockqnn.strategies"]
    mine = "my_package.module:make_mine"

Groups: `blockqnn.spaces`, `blockqnn.strategies`, `blockqnn.rewards`, `blockqnn.executors`.
The factory's signature is the one documented on each registry below. A plug-in whose entry
point fails to import is reported in one line naming it when it is asked for; the others keep
working. A plug-in may not replace a built-in name.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from importlib import metadata
from typing import Any, Generic, TypeVar

from blockqnn.errors import BlockQNNError, clip

log = logging.getLogger("blockqnn.settings.registry")

F = TypeVar("F", bound=Callable[..., Any])


def resolve(target: str) -> Any:
    module, _, attr = target.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


class Registry(Generic[F]):
    """One kind's table. `get(name)` returns the factory; unknown names raise `BlockQNNError`
    listing the registered ones."""

    def __init__(self, kind: str, group: str, builtins: dict[str, str]) -> None:
        self.kind = kind
        self.group = group
        self._targets: dict[str, str | F] = dict(builtins)
        self._builtins = frozenset(builtins)
        self._loaded: dict[str, F] = {}
        self._plugins_read = False
        self._broken: dict[str, str] = {}  # plug-in name -> why it could not be loaded

    def register(self, name: str, factory: F) -> F:
        """Add (or replace, for a name that is not built in) an entry at run time."""
        if name in self._builtins:
            raise BlockQNNError(f"{self.kind} {name!r} is built in and cannot be replaced")
        self._targets[name] = factory
        self._loaded.pop(name, None)
        self._broken.pop(name, None)
        return factory

    def unregister(self, name: str) -> None:
        if name in self._builtins:
            raise BlockQNNError(f"{self.kind} {name!r} is built in and cannot be removed")
        self._targets.pop(name, None)
        self._loaded.pop(name, None)

    def names(self) -> list[str]:
        """Every registered name, built-ins first, then plug-ins alphabetically."""
        self._read_plugins()
        plugins = sorted(n for n in self._targets if n not in self._builtins)
        return [n for n in self._targets if n in self._builtins] + plugins

    def check(self, name: str) -> str:
        """`name` if registered, else `BlockQNNError` listing the registered names."""
        self._read_plugins()
        if name in self._broken:
            raise BlockQNNError(self._broken[name])
        if name not in self._targets:
            raise BlockQNNError(
                f"unknown {self.kind} {clip(name, quote=True)} "
                f"(registered: {', '.join(self.names())})"
            )
        return name

    def get(self, name: str) -> F:
        """The factory registered as `name`, imported on first use."""
        self.check(name)
        if name not in self._loaded:
            target = self._targets[name]
            if isinstance(target, str):
                try:
                    factory = resolve(target)
                except Exception as exc:  # a plug-in's own import error: report, keep going
                    if name in self._builtins:
                        raise
                    why = f"{self.kind} plug-in {name!r} ({target}) failed to load: {exc}"
                    self._broken[name] = why.splitlines()[0]
                    raise BlockQNNError(self._broken[name]) from None
            else:
                factory = target
            self._loaded[name] = factory
        return self._loaded[name]

    def _read_plugins(self) -> None:
        if self._plugins_read:
            return
        self._plugins_read = True
        try:
            found = metadata.entry_points(group=self.group)
        except Exception as exc:  # pragma: no cover - a broken installation's metadata
            log.warning("cannot read %s entry points: %s", self.group, exc)
            return
        for ep in found:
            if ep.name in self._builtins:
                log.warning(
                    "%s plug-in %r (%s) ignored: the name is built in", self.kind, ep.name, ep.value
                )
                continue
            self._targets.setdefault(ep.name, ep.value)

    def reload_plugins(self) -> None:
        """Read the entry points again (after installing a plug-in in a running process)."""
        self._plugins_read = False
        for name in [n for n in self._targets if n not in self._builtins]:
            if isinstance(self._targets[name], str):
                del self._targets[name]
                self._loaded.pop(name, None)
                self._broken.pop(name, None)


# factory(config: Config) -> Space
SPACES: Registry[Callable[..., Any]] = Registry(
    "space",
    "blockqnn.spaces",
    {"nsc": "blockqnn.space.nsc.space:make_space", "nb201": "blockqnn.space.nb201:make_space"},
)
# factory(space: Space, budget: int, seed: int, config: AgentConfig) -> Strategy
STRATEGIES: Registry[Callable[..., Any]] = Registry(
    "strategy",
    "blockqnn.strategies",
    {
        "qlearning": "blockqnn.strategy.qlearning:make_strategy",
        "random": "blockqnn.strategy.random_search:make_strategy",
        "evolution": "blockqnn.strategy.evolution:make_strategy",
    },
)
# factory(config: Config) -> Reward
REWARDS: Registry[Callable[..., Any]] = Registry(
    "reward",
    "blockqnn.rewards",
    {
        "paper": "blockqnn.reward:PaperReward",
        "accuracy": "blockqnn.reward:AccuracyReward",
        "mnasnet": "blockqnn.reward:MnasNetReward",
        "additive": "blockqnn.reward:AdditiveLatencyReward",
    },
)
# factory(spec: EvaluatorSpec) -> Executor
EXECUTORS: Registry[Callable[..., Any]] = Registry(
    "executor",
    "blockqnn.executors",
    {
        "local": "blockqnn.execute.local:make_executor",
        "ray": "blockqnn.execute.ray_executor:make_executor",
    },
)
