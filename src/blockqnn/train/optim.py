"""An SGD whose whole step can be captured in a CUDA graph.

Owns: `GraphableSGD`. Must not know about models, data or schedules: the trainer owns them
and changes the learning rate by filling the lr tensor in place.

Why: torch's SGD (2.13) applies the learning rate as `alpha=-lr`, a host number; given a
tensor lr it reads it on the host, which a CUDA graph cannot do, so the trainer ran SGD
recipes (the final training) eagerly. Here the lr is a one-element tensor on the parameters'
device, multiplied in on the device, so the graph reads its current value at every replay.
The arithmetic is torch's SGD with momentum, dampening 0 and L2 weight decay:

    g = grad + weight_decay * p
    buf = momentum * buf + g                       (buf starts at 0: the first buf is g,
                                                    as torch's first step makes it)
    p = p - lr * (g + momentum * buf)  Nesterov,   p - lr * buf  otherwise

The state uses torch's key (`momentum_buffer`), so checkpoints move between the two.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch


class GraphableSGD(torch.optim.Optimizer):
    """SGD with momentum (optionally Nesterov) and L2 weight decay; `lr` is a tensor."""

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter],
        lr: torch.Tensor,
        momentum: float = 0.9,
        nesterov: bool = False,
        weight_decay: float = 0.0,
    ) -> None:
        if lr.numel() != 1:
            raise ValueError("lr must be a one-element tensor")
        if nesterov and momentum <= 0:
            raise ValueError("Nesterov momentum requires a momentum > 0")
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "nesterov": nesterov,
            "weight_decay": weight_decay,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads: list[torch.Tensor] = [p.grad for p in params if p.grad is not None]
            if group["weight_decay"]:
                grads = list(torch._foreach_add(grads, params, alpha=group["weight_decay"]))
            momentum = group["momentum"]
            updates: list[torch.Tensor] = grads
            if momentum:
                bufs: list[torch.Tensor] = []
                for p in params:
                    state = self.state[p]
                    if "momentum_buffer" not in state:  # allocated before capture (warm-up)
                        state["momentum_buffer"] = torch.zeros_like(p)
                    bufs.append(state["momentum_buffer"])
                torch._foreach_mul_(bufs, momentum)
                torch._foreach_add_(bufs, grads)
                if group["nesterov"]:
                    updates = list(torch._foreach_add(grads, bufs, alpha=momentum))
                else:
                    updates = bufs
            lr = group["lr"]
            if isinstance(lr, torch.Tensor):  # read on the device: no host sync, graphable
                scaled = torch._foreach_mul(updates, lr.to(params[0].device))
            else:  # a float lr (a state loaded from torch's SGD before the lr is restored)
                scaled = torch._foreach_mul(updates, float(lr))
            torch._foreach_sub_(params, list(scaled))
