"""The fast training loop shared by early-stop evaluation and final training.

Owns: `fit` (train a model on a `DeviceData` for some epochs), `accuracy` (inference over
one split), BatchNorm re-estimation, the optimiser, torch.compile and CUDA-graph execution.
The settings live in `blockqnn.recipe`, device and precision choice in `blockqnn.devices`.
Must not know about blocks, rewards or the store: it trains any `nn.Module` that maps
normalised images to logits.

Speed follows airbench: the dataset stays on the device as uint8; each epoch slices batches
out of a seeded `randperm`; every batch is augmented and normalised on the device; there is
no DataLoader. On CUDA the step runs under bf16 autocast in channels_last, and the whole step
(forward, backward, Adam) is captured once as a CUDA graph and replayed, which removes the
kernel-launch overhead that dominates these small networks (DESIGN.md, "Measured anchors").
When capture is not possible the loop runs eagerly and `FitResult.mode` says why. On the
CPU it uses every core, channels_last, and bf16 only where the CPU has bf16 hardware (AMX or
AVX512-BF16); elsewhere emulated bf16 is slower than fp32 (measured: 93 vs 125-200 images/s
on a 2-core AVX512 Xeon), so "auto" means fp32 there.

Checkpoint and resume: the learning rate is a pure function of the epoch (and of the step,
for cosine) and the batch order and augmentation of an epoch are seeded by (seed, epoch), so
the model state, the optimiser state and the epoch count are the whole training state. The
epoch callback receives them (`EpochInfo.checkpoint()`); `fit(..., resume=checkpoint)` goes
on from there.

Expected failures of a candidate (non-finite or diverged loss, time limit) end training and
are returned in `FitResult.error`; CUDA out-of-memory propagates (the caller retries at a
smaller batch); anything else is a bug and raises.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from blockqnn.devices import cpu_has_fast_bf16, describe_device, resolve_device, resolve_precision
from blockqnn.errors import BlockQNNError
from blockqnn.optim import GraphableSGD
from blockqnn.recipe import (
    COMPILE_AUTO_SECONDS,
    EARLY_STOP_BN_IMAGES,
    Recipe,
    augmentation,
    early_stop_recipe,
    lr_at,
    should_compile,
)
from blockqnn.threads import configure_threads

if TYPE_CHECKING:
    from blockqnn.data import DeviceData

# Re-exported: the trainer's public names include the recipe and device helpers it uses.
__all__ = [
    "COMPILE_AUTO_SECONDS",
    "EARLY_STOP_BN_IMAGES",
    "EpochInfo",
    "FitResult",
    "Recipe",
    "accuracy",
    "augmentation",
    "configure_threads",
    "cpu_has_fast_bf16",
    "describe_device",
    "early_stop_recipe",
    "fit",
    "lr_at",
    "make_optimizer",
    "recalibrate_batchnorm",
    "resolve_device",
    "resolve_precision",
    "should_compile",
]

SPLITS = ("val", "test")
# (choice) An epoch whose mean loss is this many times that of uniform guessing (ln classes)
# has diverged: a huge lr can keep the loss finite (1e20) while the network learns nothing.
DIVERGED_FACTOR = 100.0


@dataclass
class EpochInfo:
    """Handed to `fit`'s `on_epoch` callback after every completed epoch."""

    epoch: int  # epochs completed so far (resume from here)
    epochs: int  # total epochs of this fit
    train_loss: float  # mean training loss of this epoch
    lr: float  # learning rate at the end of this epoch
    accuracy: float | None  # on the eval split when evaluated this epoch, else None
    train_seconds: float  # training time of this fit so far
    model: nn.Module
    optimizer: torch.optim.Optimizer

    def checkpoint(self) -> dict[str, Any]:
        """Everything `fit(..., resume=...)` needs to go on after this epoch."""
        return {
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
        }


@dataclass(frozen=True)
class FitResult:
    """What one `fit` did. `error` is empty when it ran all its epochs (or was stopped by the
    callback) and says why otherwise (non-finite loss, time limit)."""

    epochs: int  # epochs completed, counting those before `start_epoch`
    accuracy: float | None  # on the eval split after training; None if not evaluated
    train_loss: float  # mean training loss of the last epoch run (nan if none)
    images: int  # training images processed
    setup_seconds: float  # optimiser creation, moving the model, CUDA-graph capture
    train_seconds: float  # the training steps only
    eval_seconds: float
    mode: str  # e.g. "cuda graph bf16 channels_last", "eager fp32 (no cuda graph: ...)"
    batch_size: int
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error

    @property
    def images_per_second(self) -> float:
        return self.images / self.train_seconds if self.train_seconds > 0 else 0.0


@dataclass
class _Execution:
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


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7919 + 1) % 2**63


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


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr


def _load_optimizer_state(
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


def _cutout(x: torch.Tensor, size: int, fill: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Set a random size x size square of each image to `fill`; the square's centre is
    uniform over the image, so squares are clipped at the border (DeVries & Taylor, 2017)."""
    b, _, h, w = x.shape
    y0 = torch.randint(0, h, (b, 1, 1), generator=gen, device=gen.device).to(x.device)
    x0 = torch.randint(0, w, (b, 1, 1), generator=gen, device=gen.device).to(x.device)
    y0, x0 = y0 - size // 2, x0 - size // 2  # top-left corner
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    inside = (ys >= y0) & (ys < y0 + size) & (xs >= x0) & (xs < x0 + size)  # (B, H, W)
    return torch.where(inside.unsqueeze(1), fill, x)


def recalibrate_batchnorm(
    model: nn.Module, data: DeviceData, images: int, batch_size: int, ex: _Execution
) -> None:
    """Replace every BatchNorm's running mean and variance by their average over the batch
    statistics of `images` training images (a fixed, seeded sample; no augmentation)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms or images <= 0:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # None = a cumulative average over the batches that follow
    gen = torch.Generator(device=data.device).manual_seed(12345)
    n = len(data.x_train)
    idx = torch.randperm(n, device=data.device, generator=gen)[: min(images, n)]
    was_training = model.training
    model.train()
    with torch.no_grad(), ex.autocast():
        for i in range(0, len(idx), batch_size):
            xb = data.x_train[idx[i : i + batch_size]]
            if ex.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            model(data.normalize(xb))
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    model.train(was_training)


def accuracy(
    model: nn.Module,
    data: DeviceData,
    split: str = "val",
    *,
    batch_size: int = 1024,
    precision: str = "auto",
    channels_last: bool = True,
    tta: bool = False,
) -> float:
    """Top-1 accuracy of `model` on one split, in inference mode, one host sync at the end.
    `tta`: flip test-time augmentation, the class of the summed logits of each image and its
    mirror image (for models trained with random flips: both are images it learned)."""
    if split not in SPLITS:
        raise BlockQNNError(f"split {split!r}: choose one of {SPLITS}")
    ex = _Execution(data.device, resolve_precision(precision, data.device), channels_last)
    return _accuracy(model, data, split, batch_size, ex, tta)


def _accuracy(
    model: nn.Module,
    data: DeviceData,
    split: str,
    batch_size: int,
    ex: _Execution,
    tta: bool = False,
) -> float:
    x: torch.Tensor = getattr(data, f"x_{split}")
    y: torch.Tensor = getattr(data, f"y_{split}")
    if len(x) == 0:
        raise BlockQNNError(f"the {split} split of {data.name} is empty")
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=x.device)
    with torch.inference_mode(), ex.autocast():
        for i in range(0, len(x), batch_size):
            xb = x[i : i + batch_size]
            if ex.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            logits = model(data.normalize(xb))  # (B, classes)
            if tta:
                mirrored = xb.flip(-1)  # (B, C, H, W): W is the last dimension
                if ex.channels_last:
                    mirrored = mirrored.contiguous(memory_format=torch.channels_last)
                logits = logits.float() + model(data.normalize(mirrored)).float()
            correct += (logits.argmax(1) == y[i : i + batch_size]).sum()
    model.train(was_training)
    return int(correct.item()) / len(x)


def fit(
    model: nn.Module,
    data: DeviceData,
    recipe: Recipe,
    *,
    epochs: int,
    eval_split: str | None = "val",
    eval_every: int = 0,
    on_epoch: Callable[[EpochInfo], bool | None] | None = None,
    start_epoch: int = 0,
    resume: Mapping[str, Any] | None = None,
) -> FitResult:
    """Train `model` in place on `data.x_train` for epochs `start_epoch` .. `epochs - 1`.

    The model is moved to `data.device`. `eval_split` ("val", "test" or None) is measured
    after the last epoch and, with `eval_every = k > 0`, after every k-th epoch. `on_epoch`
    is called after each completed epoch; returning True stops training (not an error).
    `resume` is an `EpochInfo.checkpoint()`: its model and optimiser states are loaded and
    training goes on after its epoch. Same seed, same device and thread count -> the same
    result on the CPU.
    """
    from blockqnn.data import augment

    if epochs < 1:
        raise BlockQNNError(f"epochs = {epochs}: must be at least 1")
    if eval_split is not None and eval_split not in SPLITS:
        raise BlockQNNError(f"eval_split {eval_split!r}: choose one of {SPLITS} or None")
    if resume is not None:
        start_epoch = int(resume["epoch"])
    if not 0 <= start_epoch <= epochs:
        raise BlockQNNError(f"start_epoch = {start_epoch}: must be in [0, epochs = {epochs}]")
    t_setup = time.perf_counter()
    device = data.device
    n_train = len(data.x_train)
    if n_train == 0:
        raise BlockQNNError(f"the training split of {data.name} is empty")
    batch_size = min(recipe.batch_size, n_train)  # a tiny subset trains in whole batches
    ex = _Execution(device, resolve_precision(recipe.precision, device), recipe.channels_last)
    if device.type == "cpu":
        configure_threads()
    else:
        torch.backends.cudnn.benchmark = True  # fixed shapes: autotune each conv once
    ex.graph_reason = _graph_obstacle(recipe)
    model.to(device)
    if ex.channels_last:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    if resume is not None:
        model.load_state_dict(resume["model"])
    optimizer = make_optimizer(model, recipe, graphed=ex.try_graph)
    if resume is not None:
        _load_optimizer_state(optimizer, resume["optimizer"], graphed=ex.try_graph)
    diverged = DIVERGED_FACTOR * math.log(max(data.num_classes, 2))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    loss_sum = torch.zeros((), dtype=torch.float32, device=device)  # sum over the epoch's images
    # Cutout fills with the dataset mean, which normalises to 0.
    fill = (data.mean * 255).round().to(torch.uint8)

    forward: Callable[[torch.Tensor], torch.Tensor] = model

    def step(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        with ex.autocast():
            loss = loss_fn(forward(data.normalize(xb)), yb)
        loss.backward()
        optimizer.step()
        return loss.detach().float()

    gen = torch.Generator(device=device)

    def batch(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xb = augment(data.x_train[idx], recipe.pad, recipe.flip, gen)
        if recipe.cutout:
            xb = _cutout(xb, recipe.cutout, fill, gen)
        if ex.channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        return xb, data.y_train[idx]

    graph: Any = None
    static_x = static_y = None
    model.train()
    if recipe.compile and start_epoch < epochs:
        gen.manual_seed(_epoch_seed(recipe.seed, -1))
        xb, yb = batch(torch.arange(batch_size, device=device))
        forward = _compile(model, loss_fn, data.normalize(xb), yb, ex)
    if ex.try_graph and start_epoch < epochs:
        gen.manual_seed(_epoch_seed(recipe.seed, -1))
        static_x, static_y = batch(torch.arange(batch_size, device=device))
        try:
            graph = _capture(step, static_x, static_y, model, optimizer, loss_sum)
            ex.graphed = True
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as exc:  # e.g. an op that cannot be captured: run eagerly instead
            ex.graph_reason = f"capture failed: {type(exc).__name__}: {_first_line(exc)}"
            optimizer = make_optimizer(model, recipe, graphed=False)
            if resume is not None:
                _load_optimizer_state(optimizer, resume["optimizer"], graphed=False)
    setup_seconds = time.perf_counter() - t_setup

    train_seconds = eval_seconds = 0.0
    images = 0
    acc: float | None = None
    acc_epoch = -1  # the epoch count `acc` was measured at
    last_loss = math.nan
    error = ""
    done = start_epoch
    # A CUDA graph and a compiled network have fixed shapes: they drop the last partial batch.
    fixed = ex.graphed or ex.compiled
    steps = n_train // batch_size if fixed else math.ceil(n_train / batch_size)
    for epoch in range(start_epoch, epochs):
        t0 = time.perf_counter()
        seed = _epoch_seed(recipe.seed, epoch)
        gen.manual_seed(seed)
        torch.manual_seed(seed)  # dropout
        order = torch.randperm(n_train, device=device, generator=gen)
        loss_sum.zero_()
        epoch_images = 0
        lr = lr_at(recipe, epochs, epoch)
        _set_lr(optimizer, lr)
        model.train()
        for i in range(steps):
            # cosine and warm-up change the lr every step; the others once per epoch
            if i and (recipe.schedule == "cosine" or epoch < recipe.warmup_epochs):
                lr = lr_at(recipe, epochs, epoch + i / steps)
                _set_lr(optimizer, lr)
            xb, yb = batch(order[i * batch_size : (i + 1) * batch_size])
            if graph is not None and static_x is not None and static_y is not None:
                static_x.copy_(xb)
                static_y.copy_(yb)
                graph.replay()  # adds the step's loss to loss_sum inside the graph
                epoch_images += len(yb)
            else:
                optimizer.zero_grad(set_to_none=True)
                loss = step(xb, yb)
                loss_sum += loss * len(yb)
                epoch_images += len(yb)
                # On the CPU reading the loss costs nothing: stop a diverging run at once.
                if device.type == "cpu" and not math.isfinite(loss.item()):
                    error = f"non-finite loss at epoch {epoch + 1}"
                    break
            if recipe.max_seconds and time.perf_counter() - t_setup > recipe.max_seconds:
                error = f"time limit of {recipe.max_seconds:g} s reached in epoch {epoch + 1}"
                break
        last_loss = loss_sum.item() / max(epoch_images, 1)  # one host sync per epoch
        train_seconds += time.perf_counter() - t0
        images += epoch_images
        if not error and not math.isfinite(last_loss):
            error = f"non-finite loss at epoch {epoch + 1}"
        elif not error and last_loss > diverged:
            error = f"loss diverged at epoch {epoch + 1} (mean {last_loss:.3g} > {diverged:.3g})"
        if error:
            break
        done = epoch + 1
        epoch_acc = None
        if eval_split and (done == epochs or (eval_every and done % eval_every == 0)):
            t0 = time.perf_counter()
            recalibrate_batchnorm(model, data, recipe.bn_recalibrate, batch_size, ex)
            epoch_acc = acc = _accuracy(model, data, eval_split, recipe.eval_batch_size, ex)
            acc_epoch = done
            eval_seconds += time.perf_counter() - t0
        if on_epoch is not None:
            info = EpochInfo(
                done, epochs, last_loss, lr, epoch_acc, train_seconds, model, optimizer
            )
            if on_epoch(info):
                break
    if not error and eval_split and acc_epoch != done and done > 0:
        t0 = time.perf_counter()  # stopped by the callback between evaluations
        recalibrate_batchnorm(model, data, recipe.bn_recalibrate, batch_size, ex)
        acc = _accuracy(model, data, eval_split, recipe.eval_batch_size, ex)
        eval_seconds += time.perf_counter() - t0
    return FitResult(
        epochs=done,
        accuracy=None if error else acc,
        train_loss=last_loss,
        images=images,
        setup_seconds=setup_seconds,
        train_seconds=train_seconds,
        eval_seconds=eval_seconds,
        mode=ex.mode(),
        batch_size=batch_size,
        error=error,
    )


def _compile(
    model: nn.Module, loss_fn: nn.Module, x: torch.Tensor, yb: torch.Tensor, ex: _Execution
) -> Callable[[torch.Tensor], torch.Tensor]:
    """torch.compile `model` and compile its forward and backward now, on one normalised
    batch `x`, with the
    model's state restored afterwards; on any failure (no C++ compiler, an unsupported op)
    train eagerly and say why in the mode."""
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


def _graph_obstacle(recipe: Recipe) -> str:
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
