"""The final training's settings: `FinalSettings` (the paper's CIFAR recipe by default) and
the named recipes `blockqnn train --recipe` starts from.

Owns: every default of the final training, in one place (the CLI's help reads them here),
and their validation against the ranges of `blockqnn.settings.bounds`. Must stay light (no
numpy, no torch) and must not build the trainer's recipe: the CLI imports it to build its
parser, and `blockqnn.final.recipe` turns these settings into a `Recipe`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from blockqnn.errors import BlockQNNError
from blockqnn.settings.bounds import (
    BATCH_SIZE,
    CUTOUT,
    EPOCHS,
    FRACTION,
    LEARNING_RATE,
    SEED,
    UNIT_OPEN_HIGH,
    check,
)
from blockqnn.settings.choices import AUGMENTS, FINAL_SCHEDULES, TTA_MODES, either

# (paper) The step schedule of the final training: the lr is divided by 10 (x MILESTONE_GAMMA)
# at 50% and 75% of the epochs (`schedule = "multistep"`).
MILESTONES = (0.5, 0.75)  # fractions of the total epochs
MILESTONE_GAMMA = 0.1  # lr factor at each milestone


@dataclass(frozen=True)
class FinalSettings:
    """The final recipe. Defaults: the paper's CIFAR training (`FINAL_RECIPES["paper"]`)."""

    epochs: int = 300  # (paper) total epochs
    batch_size: int = 128  # (paper) images per step
    lr: float = 0.1  # (paper) SGD learning rate (peak, after any warm-up)
    momentum: float = 0.9  # (paper) SGD momentum
    weight_decay: float = 5e-4  # (paper) L2 penalty
    schedule: str = "multistep"  # (paper) lr /10 at 50% and 75%; or "cosine" (modern)
    label_smoothing: float = 0.0  # (modern option) e.g. 0.1
    cutout: int = 0  # (modern option) side in pixels of the erased square, e.g. 16 on CIFAR
    augment: str = "auto"  # "auto": crop+flip for images, none for digits; "crop_flip"; "none"
    precision: str = "auto"  # bf16 where it is fast, else fp32
    seed: int = 0
    nesterov: bool = False  # (paper: plain momentum) Nesterov momentum
    warmup_epochs: float = 0.0  # linear lr warm-up, in epochs; 0 = none
    # test-time augmentation for the test accuracy: "flip" sums the logits of each image and
    # its mirror image; "auto" does so when training flips images; "none"
    tta: str = "none"

    def __post_init__(self) -> None:
        for flag, value, allowed in (
            ("--epochs", self.epochs, EPOCHS),
            ("--batch-size", self.batch_size, BATCH_SIZE),
            ("--lr", self.lr, LEARNING_RATE),
            ("--momentum", self.momentum, UNIT_OPEN_HIGH),
            ("--weight-decay", self.weight_decay, FRACTION),
            ("--label-smoothing", self.label_smoothing, UNIT_OPEN_HIGH),
            ("--cutout", self.cutout, CUTOUT),
            ("--seed", self.seed, SEED),
        ):
            check(flag, value, allowed)
        for option, text, choices in (
            ("--schedule", self.schedule, FINAL_SCHEDULES),
            ("--augment", self.augment, AUGMENTS),
            ("--tta", self.tta, TTA_MODES),
        ):
            if text not in choices:
                raise BlockQNNError(f"{option} {text!r}: choose {either(choices)}")
        if not (math.isfinite(self.warmup_epochs) and self.warmup_epochs >= 0):
            raise BlockQNNError(f"--warmup-epochs {self.warmup_epochs:g}: must be >= 0")


# The recipes `blockqnn train --recipe NAME` starts from; flags given beside it override.
FINAL_RECIPES: dict[str, FinalSettings] = {
    # (paper) SGD momentum 0.9, lr 0.1 /10 at 50% and 75% of 300 epochs, wd 5e-4, batch 128
    "paper": FinalSettings(),
    # (choice) A short schedule for one GPU, a few minutes on CIFAR-10 instead of hours:
    "fast": FinalSettings(
        # 40 epochs: one-cycle/cosine CIFAR schedules reach ~94% with ResNet-sized networks
        # in 30-40 epochs, where a step schedule needs 100+; fewer leave accuracy behind
        epochs=40,
        # 512 images per step: 4x fewer steps than the paper's 128, so 4x fewer kernel
        # launches for the launch-bound small networks, while BatchNorm statistics and the
        # gradient noise stay in the range large-batch CIFAR training uses without harm
        batch_size=512,
        # lr 0.4 = the paper's 0.1 per 128 images scaled linearly with the batch (Goyal et
        # al., 2017, "Accurate, Large Minibatch SGD"), reached after the warm-up below
        lr=0.4,
        momentum=0.9,
        # Nesterov momentum: the same cost, a little more stable at a large lr
        nesterov=True,
        weight_decay=5e-4,  # the paper's L2: short schedules need the regularisation too
        # cosine to 0 after a 2-epoch linear warm-up: a large lr from a random start would
        # diverge (the warm-up), and annealing to 0 gets the most out of few epochs
        schedule="cosine",
        warmup_epochs=2.0,
        # label smoothing 0.1: about +0.5 point on CIFAR for short schedules, no cost
        label_smoothing=0.1,
        # flip test-time augmentation: the network saw mirrored images in training, so the
        # mirror's logits are a free second opinion (+0.2-0.5 point on CIFAR)
        tta="auto",
        # augment "auto" (crop + flip on images), precision "auto" (bf16 on CUDA), and the
        # whole step as a CUDA graph (the trainer's default): as fast as the trainer goes
    ),
}


# (choice) The recipes' epoch counts are for CIFAR's 50,000 training images (the paper's 300
# epochs take hours there on one GPU). Unless --epochs is given, a smaller data set trains
# for proportionally fewer epochs, but never fewer than FEWEST_EPOCHS: 30 epochs of the paper
# recipe on digits (1,438 images) take about 2-3 minutes on a 2-core CPU where 300 took 23,
# and a multistep schedule still gets its two lr steps (after 15 and 23 epochs).
RECIPE_IMAGES = 50_000
FEWEST_EPOCHS = 30


def epochs_for_data(recipe_epochs: int, train_images: int) -> int:
    """The recipe's epoch count scaled to a training set of `train_images` images."""
    scaled = round(recipe_epochs * train_images / RECIPE_IMAGES)
    return min(recipe_epochs, max(FEWEST_EPOCHS, scaled))
