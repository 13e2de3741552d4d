"""The trainer's `Recipe` of a final training, built from its `FinalSettings`.

Owns: how the final settings map onto the trainer's recipe (SGD, the paper's milestones,
the dataset's augmentation). Must not hold defaults of its own (they are
`blockqnn.settings.final`'s) nor train anything (`blockqnn.final.train` does).
"""

from __future__ import annotations

from blockqnn.settings.final import MILESTONE_GAMMA, MILESTONES, FinalSettings
from blockqnn.train.recipe import Recipe, augmentation


def final_recipe(
    settings: FinalSettings, dataset: str, input_shape: tuple[int, int, int]
) -> Recipe:
    """The trainer's recipe for these settings on a dataset of this name and shape."""
    pad, flip = augmentation(settings.augment, dataset, input_shape)
    return Recipe(
        optimizer="sgd",
        lr=settings.lr,
        momentum=settings.momentum,
        nesterov=settings.nesterov,
        warmup_epochs=settings.warmup_epochs,
        weight_decay=settings.weight_decay,
        schedule=settings.schedule,
        gamma=MILESTONE_GAMMA,
        milestones=MILESTONES,
        label_smoothing=settings.label_smoothing,
        pad=pad,
        flip=flip,
        cutout=settings.cutout,
        batch_size=settings.batch_size,
        precision=settings.precision,
        cuda_graphs=True,
        seed=settings.seed,
    )
