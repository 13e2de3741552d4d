"""The image shape and classes a run's networks are built for.

Owns: `data_shape`, which reads them from what fitted them (an evaluator's network settings,
else the loaded data, else the config). Must not load data or build anything: the caller
passes what it has, so the master reads the data once and every part gets the same answer.
"""

from __future__ import annotations

from typing import Any

from blockqnn.settings.config import Config, NetworkConfig


def data_shape(
    config: Config, data: Any, evaluator: Any = None
) -> tuple[tuple[int, int, int], int]:
    """The images' (C, H, W) and the classes: the evaluator's fitted network, else the data's,
    else the config's (evaluators without data: tables, synthetic)."""
    fitted = getattr(evaluator, "network_config", None)
    if isinstance(fitted, NetworkConfig):
        return fitted.input_shape, fitted.num_classes
    shape = getattr(data, "input_shape", None)
    classes = getattr(data, "num_classes", None)
    if shape is not None and classes is not None:
        return tuple(shape), int(classes)
    return config.network.input_shape, config.network.num_classes
