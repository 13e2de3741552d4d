"""blockqnn: block-wise neural architecture search with Q-learning (BlockQNN, Zhong et al.).

The public API: `Block` (the NSC value), `build_network` (block -> torch module), the
strategies (`QLearningAgent`, `RandomAgent`, `make_strategy` for any registered one), the
network settings and their analytic cost, `load_arrays` and `load_model`. Torch is imported
only when a torch-backed name is first used, so the pure parts (NSC, agent, cost) stay light.
"""

from __future__ import annotations

from typing import Any

from blockqnn.errors import BlockQNNError
from blockqnn.space.nsc.block import Block, Layer, LayerType

__version__ = "0.1.0"

__all__ = [
    "Block",
    "BlockQNNError",
    "Layer",
    "LayerType",
    "NetworkConfig",
    "QLearningAgent",
    "RandomAgent",
    "__version__",
    "build_network",
    "load_arrays",
    "load_model",
    "make_strategy",
    "network_cost",
]

_LAZY = {
    "build_network": "blockqnn.space.nsc.builder",
    "NetworkConfig": "blockqnn.settings.network",
    "network_cost": "blockqnn.space.nsc.cost",
    "QLearningAgent": "blockqnn.strategy",
    "RandomAgent": "blockqnn.strategy",
    "make_strategy": "blockqnn.strategy",
    "load_model": "blockqnn.final.model_io",
    "load_arrays": "blockqnn.data",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'blockqnn' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    """The public names, the lazy ones included, for tab completion and `dir(blockqnn)`."""
    return sorted(__all__)
