"""Zero-cost scores of a block: a guess of its trained accuracy from one batch, no training.

Owns: `synflow` (Tanaka et al. 2020, as a NAS proxy in Abdelfattah et al. 2021), `jacob_cov`
(Mellor et al. 2021), `params` (the analytic count, nothing built) and `ZeroCostScorer`,
which the search's pre-screen (`blockqnn.search.prescreen`) calls in the master. Must not
train, know the strategy or the store. Higher is better for every score. A score that
cannot be computed (non-finite, out of memory) is -inf: the candidate ranks last and the
search goes on.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from blockqnn.errors import BlockQNNError
from blockqnn.settings.config import PRESCREEN_SCORES, Config
from blockqnn.space.nsc.block import Block
from blockqnn.space.nsc.builder import Network
from blockqnn.space.nsc.cost import network_cost

if TYPE_CHECKING:
    from blockqnn.data import DataArrays

BATCH = 64  # images of the one batch jacob_cov looks at (Mellor et al. use 128)
SEED = 0  # every candidate's weights start from the same draw, as in the early stop


def synflow(model: nn.Module, input_shape: tuple[int, ...]) -> float:
    """sum over parameters of |theta * dR/dtheta|, R the sum of the network's output for an
    all-ones input with every weight replaced by its absolute value; in double precision
    with BatchNorm in eval mode (its running statistics are 0 and 1), so the score depends
    on the weights' magnitudes alone and does not overflow."""
    model = model.double().eval()
    signs = {}
    with torch.no_grad():
        for name, p in model.state_dict().items():
            if p.is_floating_point():
                signs[name] = torch.sign(p)
                p.abs_()
    model.zero_grad()
    x = torch.ones((1, *input_shape), dtype=torch.float64)
    model(x).sum().backward()
    total = 0.0
    for p in model.parameters():
        if p.grad is not None:
            total += float((p.detach() * p.grad).abs().sum())
    with torch.no_grad():
        for name, p in model.state_dict().items():
            if name in signs:
                p.mul_(signs[name])
    return total


def jacob_cov(model: nn.Module, x: torch.Tensor) -> float:
    """Mellor et al.'s score: the input Jacobians of the summed output over a batch, their
    correlation matrix C, and -sum(log(eigenvalue + k) + 1 / (eigenvalue + k)), k = 1e-5;
    larger when the network separates the images' local linear maps (higher is better)."""
    model.train()
    x = x.clone().requires_grad_(True)
    model.zero_grad()
    model(x).sum().backward()
    assert x.grad is not None
    jac = x.grad.reshape(len(x), -1).double().numpy()
    corr = np.corrcoef(jac)
    eigenvalues = np.linalg.eigvalsh(corr)
    k = 1e-5
    return float(-np.sum(np.log(eigenvalues + k) + 1.0 / (eigenvalues + k)))


class ZeroCostScorer:
    """Scores blocks in the master with `[search] prescreen_score`, on one seeded batch of
    the run's training images (host arrays: the master's data)."""

    def __init__(self, config: Config, data: DataArrays | None) -> None:
        self.name = config.search.prescreen_score
        if self.name not in PRESCREEN_SCORES:
            raise BlockQNNError(f"search.prescreen_score = {self.name!r}: unknown")
        self.network_config = config.network
        self._batch: torch.Tensor | None = None
        if data is not None:
            self.network_config = replace(
                config.network, num_classes=data.num_classes, input_shape=data.input_shape
            )
            rng = np.random.default_rng(SEED)
            n = len(data.x_train)
            idx = np.sort(rng.choice(n, size=min(BATCH, n), replace=False))
            x = torch.from_numpy(np.ascontiguousarray(data.x_train[idx])).float() / 255.0
            mean = torch.tensor(data.mean, dtype=torch.float32).view(1, -1, 1, 1)
            std = torch.tensor(data.std, dtype=torch.float32).view(1, -1, 1, 1)
            self._batch = (x - mean) / std
        elif self.name == "jacob_cov":
            raise BlockQNNError("search.prescreen_score = 'jacob_cov' needs the run's images")

    def __call__(self, candidate: Any) -> tuple[float, float]:
        """(score, seconds); -inf when the score cannot be computed."""
        t0 = time.perf_counter()
        try:
            value = self._score(candidate)
        except (MemoryError, RuntimeError, np.linalg.LinAlgError):
            value = -math.inf  # out of memory or a degenerate network: ranks last
        if not math.isfinite(value):
            value = -math.inf
        return value, time.perf_counter() - t0

    def _score(self, candidate: Any) -> float:
        if not isinstance(candidate, Block):
            raise BlockQNNError("the pre-screen scores NSC blocks only")
        if self.name == "params":
            return float(network_cost(candidate, self.network_config).params)
        torch.manual_seed(SEED)
        model = Network(candidate, self.network_config)
        if self.name == "synflow":
            return synflow(model, tuple(self.network_config.input_shape))
        assert self._batch is not None
        return jacob_cov(model, self._batch)
