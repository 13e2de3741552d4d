"""How to train: the `Recipe`, the paper's early-stop recipe and the schedule's learning rate.

Owns: every training setting of `trainer.fit` (optimiser, schedule, regularisation,
augmentation, execution), the early-stop recipe built from `TrainConfig`, the augmentation
settings, the torch.compile policy and `lr_at`. Must not import torch at module level or
train anything: it is configuration the trainer, the evaluator and final training share.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from blockqnn.errors import BlockQNNError
from blockqnn.settings.choices import PRECISIONS
from blockqnn.settings.config import TrainConfig
from blockqnn.settings.final import MILESTONES, FinalSettings

if TYPE_CHECKING:
    import torch

OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("step", "multistep", "cosine", "constant")
# (choice) Images whose batch statistics replace BatchNorm's running averages before the
# early-stop evaluation. The running averages (momentum 0.1) forget their initial values
# only after ~50 steps: the paper's CIFAR early stop takes 2,100 steps, but a digits proxy
# at batch 256 takes 5 per epoch, and after 3 epochs the stale averages cut validation
# accuracy from 97% to 21% (measured). Re-estimating costs one forward pass over 2,048
# images: under 0.2% of a 12-epoch CIFAR evaluation.
EARLY_STOP_BN_IMAGES = 2048
# (choice) compile = "auto": compile on the CPU when the eager training is estimated to take
# longer than this. The estimate is forward+backward FLOPs (3x forward) over the measured
# eager rate of this project's 2-core Xeon (~50 images/s x 1.75 GFLOP = 8.8e10 FLOP/s for the
# search-time network, benchmarks/trainer.py); compiling costs 60-90 s there, so at 1,200 s
# it is at most ~8% of the run and halves the rest.
COMPILE_AUTO_SECONDS = 1200.0
# (choice) A warm-up starts at this fraction of the lr, not at 0: a first step at lr 0 would
# be wasted, and 10% of a large-batch lr is already a safe first step (Goyal et al., 2017,
# ramp from lr / k towards k x lr over 5 epochs; ours reaches the peak linearly).
WARMUP_START = 0.1
CPU_EAGER_FLOPS_PER_SECOND = 8.8e10
# The defaults a `Recipe` shares with the settings: the early-stop training's (`[train]`) and
# the final training's SGD (`blockqnn train`), each written once, there.
_EARLY_STOP, _FINAL = TrainConfig(), FinalSettings()


@dataclass(frozen=True)
class Recipe:
    """How to train. Defaults are the paper's early-stop recipe (`TrainConfig`'s defaults; see
    `Recipe.from_config`), with the final training's SGD momentum and milestones."""

    optimizer: str = "adam"  # "adam" or "sgd"
    lr: float = _EARLY_STOP.lr  # peak learning rate per step (not scaled with the batch size)
    betas: tuple[float, float] = _EARLY_STOP.betas  # Adam moment decays
    eps: float = _EARLY_STOP.eps  # Adam denominator guard
    momentum: float = _FINAL.momentum  # SGD momentum
    nesterov: bool = _FINAL.nesterov  # SGD Nesterov momentum
    weight_decay: float = _EARLY_STOP.weight_decay  # L2 penalty added to the gradients (both)
    schedule: str = "step"  # "step" | "multistep" | "cosine" | "constant"
    step_epochs: int = _EARLY_STOP.lr_step_epochs  # "step": lr x `gamma` every this many epochs
    gamma: float = _EARLY_STOP.lr_gamma  # lr factor at each step or milestone
    milestones: tuple[float, ...] = MILESTONES  # "multistep": fractions of the total epochs
    # linear warm-up over this many epochs (fractions allowed), per step, from
    # WARMUP_START of the schedule's lr to all of it; 0 = none
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0  # cross-entropy target smoothing in [0, 1)
    pad: int = 0  # random-crop shift in pixels (reflect padding); 0 = no crop
    flip: bool = False  # random horizontal flip
    cutout: int = 0  # side in pixels of a random square set to the mean per image; 0 = off
    batch_size: int = _EARLY_STOP.batch_size  # training images per step
    eval_batch_size: int = 1024  # inference images per forward: larger is faster
    bn_recalibrate: int = 0  # training images re-estimating BatchNorm statistics before
    # each evaluation; 0 = keep the running averages (see EARLY_STOP_BN_IMAGES)
    # "auto": bf16 where it is fast (CUDA, AMX CPUs), else fp32
    precision: str = _EARLY_STOP.precision
    channels_last: bool = _EARLY_STOP.channels_last  # NHWC convs: faster on GPUs and x86 CPUs
    cuda_graphs: bool = _EARLY_STOP.cuda_graphs  # capture the whole step as one CUDA graph
    # torch.compile the training forward: on a 2-core AVX512 CPU it doubles throughput
    # (fused BatchNorm backward) but costs ~90 s per network, so only long runs gain
    compile: bool = False
    max_seconds: float = _EARLY_STOP.max_seconds  # wall-clock limit of one `fit` in s; 0 = none
    seed: int = _EARLY_STOP.seed  # seed of the batch order, augmentation and dropout

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", tuple(self.betas))
        object.__setattr__(self, "milestones", tuple(self.milestones))
        if self.optimizer not in OPTIMIZERS:
            raise BlockQNNError(f"optimizer = {self.optimizer!r}: choose one of {OPTIMIZERS}")
        if self.schedule not in SCHEDULES:
            raise BlockQNNError(f"schedule = {self.schedule!r}: choose one of {SCHEDULES}")
        if self.precision not in PRECISIONS:
            raise BlockQNNError(f"precision = {self.precision!r}: choose one of {PRECISIONS}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise BlockQNNError(f"lr = {self.lr}: must be a positive number")
        if self.batch_size < 1 or self.eval_batch_size < 1 or self.step_epochs < 1:
            raise BlockQNNError("batch_size, eval_batch_size and step_epochs must be at least 1")
        if not 0 < self.gamma <= 1:
            raise BlockQNNError(f"gamma = {self.gamma}: must be in (0, 1]")
        if not all(0 < m < 1 for m in self.milestones):
            raise BlockQNNError(f"milestones = {self.milestones}: fractions in (0, 1)")
        if not 0 <= self.label_smoothing < 1:
            raise BlockQNNError(f"label_smoothing = {self.label_smoothing}: must be in [0, 1)")
        if not (math.isfinite(self.warmup_epochs) and self.warmup_epochs >= 0):
            raise BlockQNNError(f"warmup_epochs = {self.warmup_epochs}: must be >= 0")
        if self.nesterov and (self.optimizer != "sgd" or self.momentum <= 0):
            raise BlockQNNError("nesterov needs the sgd optimizer with a momentum > 0")
        if min(self.pad, self.cutout, self.weight_decay, self.max_seconds, self.bn_recalibrate) < 0:
            raise BlockQNNError(
                "pad, cutout, weight_decay, max_seconds and bn_recalibrate must be >= 0"
            )

    @classmethod
    def from_config(
        cls, train: TrainConfig, dataset: str, input_shape: tuple[int, int, int] | None = None
    ) -> Recipe:
        """The paper's early-stop recipe (Adam, lr x gamma every k epochs) from a `TrainConfig`.

        `augment = "auto"` takes the dataset's default (none for digits, crop + flip otherwise);
        "crop_flip" shifts by 1/8 of the side (4 px at 32x32) and flips."""
        pad, flip = augmentation(train.augment, dataset, input_shape)
        return cls(
            optimizer="adam",
            lr=train.lr,
            betas=train.betas,
            eps=train.eps,
            weight_decay=train.weight_decay,
            schedule="step",
            step_epochs=train.lr_step_epochs,
            gamma=train.lr_gamma,
            pad=pad,
            flip=flip,
            batch_size=train.batch_size,
            precision=train.precision,
            channels_last=train.channels_last,
            cuda_graphs=train.cuda_graphs,
            max_seconds=train.max_seconds,
            seed=train.seed,
            bn_recalibrate=EARLY_STOP_BN_IMAGES,
        )


def augmentation(
    mode: str, dataset: str, input_shape: tuple[int, int, int] | None = None
) -> tuple[int, bool]:
    """(pad, flip) for an `augment` setting: "none"; "crop_flip" shifts by 1/8 of the side
    (4 px at 32x32) and flips; "auto" takes the dataset's default (none for digits)."""
    from blockqnn.data import default_augmentation

    if mode == "none":
        return 0, False
    if mode == "crop_flip":
        return max(1, (input_shape[1] if input_shape else 32) // 8), True
    return default_augmentation(dataset, input_shape)


def should_compile(
    mode: str, device: torch.device, forward_flops: int, images: int, epochs: int
) -> bool:
    """The `compile` decision ("auto" | "on" | "off") for one training run.

    "auto" compiles only on the CPU, and only when the estimated eager training time exceeds
    `COMPILE_AUTO_SECONDS`: a digits proxy of a few seconds never compiles, a 12-epoch CIFAR-10
    evaluation (hours in eager mode on 2 cores) does. On CUDA the whole-step CUDA graph is
    already launch-free and compiling (30+ s per network) would cost more than it saves.
    """
    if mode in ("on", "off"):
        return mode == "on"
    if device.type != "cpu":
        return False
    estimated = 3.0 * forward_flops * images * epochs / CPU_EAGER_FLOPS_PER_SECOND
    return estimated > COMPILE_AUTO_SECONDS


def lr_at(recipe: Recipe, epochs: int, progress: float) -> float:
    """The learning rate after `progress` epochs (fractional within an epoch) of `epochs`:
    the schedule's, times the linear warm-up's factor while `progress < warmup_epochs`."""
    lr = _scheduled_lr(recipe, epochs, progress)
    if progress < recipe.warmup_epochs:
        lr *= WARMUP_START + (1.0 - WARMUP_START) * progress / recipe.warmup_epochs
    return lr


def _scheduled_lr(recipe: Recipe, epochs: int, progress: float) -> float:
    if recipe.schedule == "constant":
        return recipe.lr
    if recipe.schedule == "cosine":
        return recipe.lr * 0.5 * (1.0 + math.cos(math.pi * min(progress / epochs, 1.0)))
    epoch = int(progress)  # piecewise constant over whole epochs
    if recipe.schedule == "step":
        return recipe.lr * recipe.gamma ** (epoch // recipe.step_epochs)
    # ceil, not round: round(0.5) is 0 (banker's rounding), which would drop the lr of a
    # 1-epoch run at once; ceil keeps 150 and 225 of 300 epochs and 2, 3 of 4
    passed = sum(epoch >= math.ceil(m * epochs) for m in recipe.milestones)
    return recipe.lr * recipe.gamma**passed
