"""The fast training loop shared by early-stop evaluation and final training.

Owns: `fit` (train a model on a `DeviceData` for some epochs), `accuracy` (inference over
one split), BatchNorm re-estimation, the optimiser, torch.compile and CUDA-graph execution.
The settings live in `blockqnn.train.recipe`, device and precision choice in
`blockqnn.train.devices`, the step (optimiser, eager and CUDA-graph forms, compile) in
`blockqnn.train.step`.
Must not know about blocks, rewards or the store: it trains any `nn.Module` that maps
normalised images to logits.

Speed follows airbench: the dataset stays on the device as uint8; each epoch slices batches
out of a seeded `randperm`; every batch is augmented and normalised on the device; there is
no DataLoader (a last batch of one image joins the one before: BatchNorm cannot train on one
image). On CUDA the step runs under bf16 autocast in channels_last, and the whole step
(forward, backward, Adam) is captured once as a CUDA graph and replayed, which removes the
kernel-launch overhead that dominates these small networks.
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
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from blockqnn.errors import BlockQNNError
from blockqnn.train.devices import resolve_precision
from blockqnn.train.recipe import Recipe, lr_at
from blockqnn.train.step import (
    Batches,
    EagerStep,
    Execution,
    GraphedStep,
    compile_forward,
    graph_obstacle,
    graphed_step,
    load_optimizer_state,
    make_optimizer,
    set_lr,
)
from blockqnn.train.threads import configure_threads

if TYPE_CHECKING:
    from blockqnn.data import DeviceData

__all__ = [
    "EpochInfo",
    "FitResult",
    "accuracy",
    "configure_threads",
    "fit",
    "make_optimizer",
    "recalibrate_batchnorm",
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


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7919 + 1) % 2**63


def recalibrate_batchnorm(
    model: nn.Module,
    data: DeviceData,
    images: int,
    batch_size: int,
    *,
    precision: str = "auto",
    channels_last: bool = True,
) -> None:
    """Replace every BatchNorm's running mean and variance by their average over the batch
    statistics of `images` training images (a fixed, seeded sample; no augmentation)."""
    ex = Execution(data.device, resolve_precision(precision, data.device), channels_last)
    _recalibrate(model, data, images, batch_size, ex)


def _batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _steps(n: int, batch_size: int, fixed: bool) -> int:
    """Batches of `n` images per pass. Fixed shapes (CUDA graph, compiled) drop the last
    partial batch; otherwise a last batch of one image joins the one before, since
    BatchNorm cannot train on one image (a 1x1 feature map gives one value per channel)."""
    full, rest = divmod(n, batch_size)
    if fixed or (rest == 1 and full):
        return full
    return full + (rest > 0)


def _batch(i: int, steps: int, batch_size: int, n: int, fixed: bool) -> slice:
    """The positions of batch `i` of `steps` (`_steps`): the last one takes the rest."""
    last = i == steps - 1 and not fixed
    return slice(i * batch_size, n if last else (i + 1) * batch_size)


def _recalibrate(
    model: nn.Module, data: DeviceData, images: int, batch_size: int, ex: Execution
) -> None:
    norms = _batchnorms(model)
    n = min(images, len(data.x_train))
    if not norms or n < 2:  # BatchNorm cannot take statistics of one image: keep the averages
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # None = a cumulative average over the batches that follow
    gen = torch.Generator(device=data.device).manual_seed(12345)
    idx = torch.randperm(len(data.x_train), device=data.device, generator=gen)[:n]
    batch_size = max(2, batch_size)  # no gradients: a larger batch costs only memory
    steps = _steps(n, batch_size, fixed=False)
    was_training = model.training
    model.train()
    with torch.no_grad(), ex.autocast():
        for i in range(steps):
            xb = data.x_train[idx[_batch(i, steps, batch_size, n, fixed=False)]]
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
    batch_size: int = Recipe.eval_batch_size,
    precision: str = "auto",
    channels_last: bool = True,
    tta: bool = False,
) -> float:
    """Top-1 accuracy of `model` on one split, in inference mode, one host sync at the end.
    `tta`: flip test-time augmentation, the class of the summed logits of each image and its
    mirror image (for models trained with random flips: both are images it learned)."""
    if split not in SPLITS:
        raise BlockQNNError(f"split {split!r}: choose one of {SPLITS}")
    ex = Execution(data.device, resolve_precision(precision, data.device), channels_last)
    return _accuracy(model, data, split, batch_size, ex, tta)


def _accuracy(
    model: nn.Module,
    data: DeviceData,
    split: str,
    batch_size: int,
    ex: Execution,
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


def _evaluates_at(done: int, epochs: int, every: int, at: Collection[int]) -> bool:
    """Whether the accuracy is measured after `done` epochs: the last, every k-th, or asked."""
    return done == epochs or bool(every and done % every == 0) or done in at


def fit(
    model: nn.Module,
    data: DeviceData,
    recipe: Recipe,
    *,
    epochs: int,
    eval_split: str | None = "val",
    eval_every: int = 0,
    eval_at: Collection[int] = (),
    on_epoch: Callable[[EpochInfo], bool | None] | None = None,
    start_epoch: int = 0,
    resume: Mapping[str, Any] | None = None,
) -> FitResult:
    """Train `model` in place on `data.x_train` for epochs `start_epoch` .. `epochs - 1`.

    The model is moved to `data.device`. `eval_split` ("val", "test" or None) is measured
    after the last epoch, with `eval_every = k > 0` after every k-th epoch, and after each
    epoch count in `eval_at` (early termination validates at one epoch only). `on_epoch`
    is called after each completed epoch; returning True stops training (not an error).
    `resume` is an `EpochInfo.checkpoint()`: its model and optimiser states are loaded and
    training goes on after its epoch. Same seed, same device and thread count -> the same
    result on the CPU.
    """
    start_epoch = _first_epoch(epochs, eval_split, start_epoch, resume)
    run = _prepare(model, data, recipe, resume, train=start_epoch < epochs)
    train_seconds, eval_seconds, images, last_loss, error = 0.0, 0.0, 0, math.nan, ""
    acc: float | None = None
    acc_epoch, done = -1, start_epoch  # the epoch count `acc` was measured at; epochs done
    for epoch in range(start_epoch, epochs):
        ep = _train_epoch(run, epoch, epochs)
        train_seconds, images = train_seconds + ep.seconds, images + ep.images
        last_loss, error = ep.loss, ep.error
        if error:
            break
        done = epoch + 1
        epoch_acc = None
        if eval_split and _evaluates_at(done, epochs, eval_every, eval_at):
            epoch_acc, seconds = _evaluate(run, eval_split)
            acc, acc_epoch, eval_seconds = epoch_acc, done, eval_seconds + seconds
        if on_epoch is not None:
            info = EpochInfo(
                done, epochs, last_loss, ep.lr, epoch_acc, train_seconds, model, run.optimizer
            )
            if on_epoch(info):
                break
    if not error and eval_split and acc_epoch != done and done > 0:
        acc, seconds = _evaluate(run, eval_split)  # stopped by the callback between evaluations
        eval_seconds += seconds
    return FitResult(
        epochs=done,
        accuracy=None if error else acc,
        train_loss=last_loss,
        images=images,
        setup_seconds=run.setup_seconds,
        train_seconds=train_seconds,
        eval_seconds=eval_seconds,
        mode=run.ex.mode(),
        batch_size=run.batch_size,
        error=error,
    )


def _first_epoch(
    epochs: int, eval_split: str | None, start_epoch: int, resume: Mapping[str, Any] | None
) -> int:
    """`fit`'s arguments checked; the epoch it starts at (the checkpoint's, when resuming)."""
    if epochs < 1:
        raise BlockQNNError(f"epochs = {epochs}: must be at least 1")
    if eval_split is not None and eval_split not in SPLITS:
        raise BlockQNNError(f"eval_split {eval_split!r}: choose one of {SPLITS} or None")
    if resume is not None:
        start_epoch = int(resume["epoch"])
    if not 0 <= start_epoch <= epochs:
        raise BlockQNNError(f"start_epoch = {start_epoch}: must be in [0, epochs = {epochs}]")
    return start_epoch


@dataclass
class _Run:
    """Everything one `fit` prepared before its first epoch."""

    model: nn.Module
    data: DeviceData
    recipe: Recipe
    ex: Execution
    optimizer: torch.optim.Optimizer
    step: EagerStep | GraphedStep
    batches: Batches
    gen: torch.Generator
    loss_sum: torch.Tensor  # the sum of the epoch's per-image losses, on the device
    batch_size: int
    steps: int  # per epoch
    started: float  # perf_counter at the start of preparation (the time limit counts it)
    setup_seconds: float


@dataclass(frozen=True)
class _Epoch:
    images: int
    loss: float  # the mean training loss (nan if no step ran)
    lr: float  # at the end of the epoch
    seconds: float
    error: str


def _batch_size(model: nn.Module, data: DeviceData, recipe: Recipe) -> int:
    """The training batch: the recipe's, at most the training split (a tiny subset trains in
    whole batches); an empty split, or one image for a network with BatchNorm, is refused."""
    n_train = len(data.x_train)
    if n_train == 0:
        raise BlockQNNError(f"the training split of {data.name} is empty")
    if n_train == 1 and _batchnorms(model):
        raise BlockQNNError(
            f"the training split of {data.name} has 1 image: BatchNorm needs at least 2"
        )
    return min(recipe.batch_size, n_train)


def _prepare(
    model: nn.Module,
    data: DeviceData,
    recipe: Recipe,
    resume: Mapping[str, Any] | None,
    train: bool,
) -> _Run:
    """Device, model placement, optimiser, resume, compilation and CUDA-graph capture.
    `train`: epochs are left to run (nothing to compile or capture otherwise)."""
    started = time.perf_counter()
    device = data.device
    n_train = len(data.x_train)
    batch_size = _batch_size(model, data, recipe)
    ex = Execution(device, resolve_precision(recipe.precision, device), recipe.channels_last)
    if device.type == "cpu":
        configure_threads()
    else:
        torch.backends.cudnn.benchmark = True  # fixed shapes: autotune each conv once
    ex.graph_reason = graph_obstacle(recipe)
    model.to(device)
    if ex.channels_last:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    if resume is not None:
        model.load_state_dict(resume["model"])
    optimizer = make_optimizer(model, recipe, graphed=ex.try_graph)
    if resume is not None:
        load_optimizer_state(optimizer, resume["optimizer"], graphed=ex.try_graph)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    loss_sum = torch.zeros((), dtype=torch.float32, device=device)
    gen = torch.Generator(device=device)
    batches = Batches(data, recipe, ex, gen)
    model.train()
    forward: Callable[[torch.Tensor], torch.Tensor] = model
    if recipe.compile and train:
        gen.manual_seed(_epoch_seed(recipe.seed, -1))
        xb, yb = batches(torch.arange(batch_size, device=device))
        forward = compile_forward(model, loss_fn, data.normalize(xb), yb, ex)
    eager = EagerStep(forward, loss_fn, optimizer, data, ex, loss_sum)
    step: EagerStep | GraphedStep = eager
    if ex.try_graph and train:
        gen.manual_seed(_epoch_seed(recipe.seed, -1))
        static = batches(torch.arange(batch_size, device=device))
        graphed = graphed_step(eager, static, model, ex)
        if graphed is not None:
            step = graphed
        else:  # run eagerly, with an optimiser of the eager kind
            optimizer = make_optimizer(model, recipe, graphed=False)
            if resume is not None:
                load_optimizer_state(optimizer, resume["optimizer"], graphed=False)
            step = EagerStep(forward, loss_fn, optimizer, data, ex, loss_sum)
    steps = _steps(n_train, batch_size, fixed=ex.graphed or ex.compiled)
    setup_seconds = time.perf_counter() - started
    return _Run(
        model, data, recipe, ex, optimizer, step, batches, gen, loss_sum, batch_size, steps,
        started, setup_seconds,
    )  # fmt: skip


def _train_epoch(run: _Run, epoch: int, epochs: int) -> _Epoch:
    """One epoch of `fit`: a seeded order and augmentation, the lr schedule, the steps, and
    the checks for a non-finite or diverged loss and the time limit."""
    t0 = time.perf_counter()
    recipe = run.recipe
    seed = _epoch_seed(recipe.seed, epoch)
    run.gen.manual_seed(seed)
    torch.manual_seed(seed)  # dropout
    n_train = len(run.data.x_train)
    order = torch.randperm(n_train, device=run.data.device, generator=run.gen)
    run.loss_sum.zero_()
    images = 0
    error = ""
    lr = lr_at(recipe, epochs, epoch)
    set_lr(run.optimizer, lr)
    run.model.train()
    fixed = run.ex.graphed or run.ex.compiled
    for i in range(run.steps):
        # cosine and warm-up change the lr every step; the others once per epoch
        if i and (recipe.schedule == "cosine" or epoch < recipe.warmup_epochs):
            lr = lr_at(recipe, epochs, epoch + i / run.steps)
            set_lr(run.optimizer, lr)
        xb, yb = run.batches(order[_batch(i, run.steps, run.batch_size, n_train, fixed)])
        finite = run.step(xb, yb)
        images += len(yb)
        if not finite:
            error = f"non-finite loss at epoch {epoch + 1}"
            break
        if recipe.max_seconds and time.perf_counter() - run.started > recipe.max_seconds:
            error = f"time limit of {recipe.max_seconds:g} s reached in epoch {epoch + 1}"
            break
    loss = run.loss_sum.item() / max(images, 1)  # one host sync per epoch
    seconds = time.perf_counter() - t0
    diverged = DIVERGED_FACTOR * math.log(max(run.data.num_classes, 2))
    if not error and not math.isfinite(loss):
        error = f"non-finite loss at epoch {epoch + 1}"
    elif not error and loss > diverged:
        error = f"loss diverged at epoch {epoch + 1} (mean {loss:.3g} > {diverged:.3g})"
    return _Epoch(images, loss, lr, seconds, error)


def _evaluate(run: _Run, split: str) -> tuple[float, float]:
    """BatchNorm re-estimation then accuracy on `split`: (accuracy, seconds)."""
    t0 = time.perf_counter()
    _recalibrate(run.model, run.data, run.recipe.bn_recalibrate, run.batch_size, run.ex)
    acc = _accuracy(run.model, run.data, split, run.recipe.eval_batch_size, run.ex)
    return acc, time.perf_counter() - t0
