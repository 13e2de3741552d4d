"""One training step of `blockqnn.train.loop.fit` and what it runs on: the execution settings
(device, autocast, memory layout), the optimiser and its resumable state, the batches, and
the step itself in an eager and a CUDA-graph form, with torch.compile and graph capture.

Owns, as the loop's interface: `Execution` (how a fit runs, and its mode), the optimiser
(`make_optimizer`, `set_lr`, `load_optimizer_state`), `Batches`, the step objects
(`EagerStep`, `GraphedStep` made by `graphed_step`) and `compile_forward`, with the capture
and compile fallbacks (a step that cannot be compiled or captured runs eagerly, and the mode
says why). Must not know about epochs, schedules or evaluation: `blockqnn.train.loop` does.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from blockqnn.data.augment import augment, cutout
from blockqnn.train.optim import GraphableSGD
from blockqnn.train.recipe import Recipe

if TYPE_CHECKING:
    from blockqnn.data import DeviceData


@dataclass
class Execution:
    """How one `fit` runs: the device, the autocast dtype, the memory layout, and whether the
    step became a CUDA graph or was compiled (with the reason when not)."""

    device: torch.device
    amp: torch.dtype | None  # autocast dtype; None = fp32
    channels_last: bool
    graph_reason: str = ""  # on CUDA: why the step is not a CUDA graph ("" = try one)
    graphed: bool = False
    compiled: bool = False
    compile_reason: str = ""  # why compiling was asked for but not used

    def mode(self) -> str:
        parts = ["cuda graph" if self.graphed else "eager", "bf16" if self.amp else "fp32"]
        if self.compiled:
            parts.insert(1, "compiled")
        if self.channels_last:
            parts.append("channels_last")
        text = " ".join(parts)
        if self.device.type == "cuda" and not self.graphed and self.graph_reason:
            text += f" (no cuda graph: {self.graph_reason})"
        if self.compile_reason:
            text += f" (not compiled: {self.compile_reason})"
        return text

    def autocast(self) -> AbstractContextManager[Any]:
        if self.amp is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp)

    @property
    def try_graph(self) -> bool:
        return self.device.type == "cuda" and not self.graph_reason


def make_optimizer(model: nn.Module, recipe: Recipe, graphed: bool) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if recipe.optimizer == "sgd" and graphed:
        # torch's SGD reads a tensor lr on the host; this one multiplies it in on the device
        lr_tensor = torch.tensor(recipe.lr, device=params[0].device)
        return GraphableSGD(
            params,
            lr=lr_tensor,
            momentum=recipe.momentum,
            nesterov=recipe.nesterov,
            weight_decay=recipe.weight_decay,
        )
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=recipe.lr,
            momentum=recipe.momentum,
            nesterov=recipe.nesterov,
            weight_decay=recipe.weight_decay,
        )
    if graphed:
        # A tensor lr lives in the graph's memory: the schedule updates it in place.
        device = params[0].device
        lr: float | torch.Tensor = torch.tensor(recipe.lr, device=device)
        return torch.optim.Adam(
            params, lr=lr, betas=recipe.betas, eps=recipe.eps,
            weight_decay=recipe.weight_decay, capturable=True, foreach=True,
        )  # fmt: skip
    return torch.optim.Adam(
        params, lr=recipe.lr, betas=recipe.betas, eps=recipe.eps, weight_decay=recipe.weight_decay
    )


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's lr, in place when it is a tensor (a CUDA graph reads its memory)."""
    for group in optimizer.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr


def load_optimizer_state(
    optimizer: torch.optim.Optimizer, state: Mapping[str, Any], graphed: bool
) -> None:
    """Load a saved optimiser state, keeping this run's lr objects and capturable flag (a
    checkpoint from an eager run may resume in graph mode and vice versa)."""
    lrs = [g["lr"] for g in optimizer.param_groups]
    optimizer.load_state_dict(dict(state))
    for group, lr in zip(optimizer.param_groups, lrs, strict=True):
        group["lr"] = lr
        for key, value in optimizer.defaults.items():  # a checkpoint of the other SGD class
            group.setdefault(key, value)
        if "capturable" in group:
            group["capturable"] = graphed
        for param in group["params"]:
            pstate = optimizer.state.get(param, {})
            step = pstate.get("step")
            if isinstance(step, torch.Tensor):  # capturable Adam keeps it on the device
                pstate["step"] = step.to(param.device if graphed else "cpu")


class Batches:
    """The training batches: seeded crop, flip and cutout on the device, in the layout the
    model trains in."""

    def __init__(
        self, data: DeviceData, recipe: Recipe, ex: Execution, gen: torch.Generator
    ) -> None:
        self.data, self.recipe, self.ex, self.gen = data, recipe, ex, gen
        # Cutout fills with the dataset mean, which normalises to 0.
        self.fill = (data.mean * 255).round().to(torch.uint8)

    def __call__(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xb = augment(self.data.x_train[idx], self.recipe.pad, self.recipe.flip, self.gen)
        if self.recipe.cutout:
            xb = cutout(xb, self.recipe.cutout, self.fill, self.gen)
        if self.ex.channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        return xb, self.data.y_train[idx]


class EagerStep:
    """One training step (forward, backward, optimiser) run op by op; it adds the batch's
    summed loss to `loss_sum`."""

    def __init__(
        self,
        forward: Callable[[torch.Tensor], torch.Tensor],
        loss_fn: nn.Module,
        optimizer: torch.optim.Optimizer,
        data: DeviceData,
        ex: Execution,
        loss_sum: torch.Tensor,
    ) -> None:
        self.forward, self.loss_fn, self.optimizer = forward, loss_fn, optimizer
        self.data, self.ex, self.loss_sum = data, ex, loss_sum

    def loss(self, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        """The step itself, without zeroing the gradients; returns the detached loss."""
        with self.ex.autocast():
            loss = self.loss_fn(self.forward(self.data.normalize(xb)), yb)
        loss.backward()
        self.optimizer.step()
        return loss.detach().float()

    def __call__(self, xb: torch.Tensor, yb: torch.Tensor) -> bool:
        """Run one step; False when the loss is known to be non-finite."""
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss(xb, yb)
        self.loss_sum += loss * len(yb)
        # On the CPU reading the loss costs nothing: stop a diverging run at once.
        return self.ex.device.type != "cpu" or math.isfinite(loss.item())


class GraphedStep:
    """One training step replayed from a CUDA graph: the batch is copied into the graph's
    static inputs, and the graph adds the loss to `loss_sum` itself."""

    def __init__(
        self, graph: torch.cuda.CUDAGraph, static_x: torch.Tensor, static_y: torch.Tensor
    ) -> None:
        self.graph, self.static_x, self.static_y = graph, static_x, static_y

    def __call__(self, xb: torch.Tensor, yb: torch.Tensor) -> bool:
        self.static_x.copy_(xb)
        self.static_y.copy_(yb)
        self.graph.replay()
        return True  # read once per epoch: a host sync per step would cost the graph's gain


def graphed_step(
    eager: EagerStep,
    static: tuple[torch.Tensor, torch.Tensor],
    model: nn.Module,
    ex: Execution,
) -> GraphedStep | None:
    """Capture `eager` as a CUDA graph on the static batch; None (and the reason in `ex`)
    when capture fails, e.g. on an op that cannot be captured."""
    static_x, static_y = static
    try:
        graph = _capture(eager.loss, static_x, static_y, model, eager.optimizer, eager.loss_sum)
    except torch.cuda.OutOfMemoryError:
        raise
    except Exception as exc:
        ex.graph_reason = f"capture failed: {type(exc).__name__}: {_first_line(exc)}"
        return None
    ex.graphed = True
    return GraphedStep(graph, static_x, static_y)


def compile_forward(
    model: nn.Module, loss_fn: nn.Module, x: torch.Tensor, yb: torch.Tensor, ex: Execution
) -> Callable[[torch.Tensor], torch.Tensor]:
    """torch.compile `model` and compile its forward and backward now, on one normalised
    batch `x`, with the model's state restored afterwards; on any failure (no C++ compiler,
    an unsupported op) train eagerly and say why in the mode."""
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    compiled = torch.compile(model)
    try:
        with ex.autocast():
            loss = loss_fn(compiled(x), yb)
        loss.backward()
    except torch.cuda.OutOfMemoryError:
        raise
    except Exception as exc:
        ex.compile_reason = f"{type(exc).__name__}: {_first_line(exc)}"[:200]
        return model
    finally:
        model.zero_grad(set_to_none=True)
        model.load_state_dict(saved)  # the warm-up step moved BatchNorm's running statistics
    ex.compiled = True
    return compiled


def graph_obstacle(recipe: Recipe) -> str:
    """Why the step cannot be a CUDA graph ("" when it can be tried on CUDA)."""
    if not recipe.cuda_graphs:
        return "disabled"
    return ""


def _capture(
    step: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    static_x: torch.Tensor,
    static_y: torch.Tensor,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_sum: torch.Tensor,
) -> torch.cuda.CUDAGraph:
    """Capture one whole training step (forward, backward, optimiser) as a CUDA graph.

    Warm-up steps on a side stream initialise the optimiser state and autotune the kernels
    (as the PyTorch docs prescribe); the model and optimiser state are then put back exactly
    as they were, so capture does not change what is trained."""
    model_state = {k: v.clone() for k, v in model.state_dict().items()}
    opt_state = {
        id(t): t.clone()
        for s in optimizer.state.values()
        for t in s.values()
        if isinstance(t, torch.Tensor)
    }
    try:
        side = torch.cuda.Stream()  # type: ignore[no-untyped-call]
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                optimizer.zero_grad(set_to_none=True)
                step(static_x, static_y)
        torch.cuda.current_stream().wait_stream(side)
        _restore(model, model_state, optimizer, opt_state)
        graph = torch.cuda.CUDAGraph()
        optimizer.zero_grad(set_to_none=True)  # backward allocates .grad from the graph's pool
        with torch.cuda.graph(graph):
            loss_sum.add_(step(static_x, static_y) * len(static_y))
    except BaseException:
        with suppress(Exception):  # a broken capture may leave an error to collect
            torch.cuda.synchronize()
        _restore(model, model_state, optimizer, opt_state)  # the caller goes on eagerly
        raise
    return graph


def _restore(
    model: nn.Module,
    model_state: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    opt_state: dict[int, torch.Tensor],
) -> None:
    with torch.no_grad():
        model.load_state_dict(model_state)  # copies in place: the addresses stay
        for s in optimizer.state.values():
            for t in s.values():
                if isinstance(t, torch.Tensor):
                    saved = opt_state.get(id(t))
                    # fresh Adam state is all zeros (step 0, no moments)
                    t.copy_(saved) if saved is not None else t.zero_()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else "")[:160]
