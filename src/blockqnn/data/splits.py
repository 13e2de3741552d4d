"""Seeded, stratified subsets and splits of a labelled set, and per-channel statistics.

Owns: the class-balanced training subset (`train_samples`), the validation split
(`val_size`) and the mean/std used for normalisation. Pure numpy; must not read files or
import torch. Every function returns sorted indices, so the images keep their source order and
a split is the same on every machine for the same seed.
"""

from __future__ import annotations

import numpy as np

from blockqnn.errors import BlockQNNError

AUTO_VAL_IMAGES = 5000  # (issue) validation images for CIFAR-size sets, as is usual for CIFAR
AUTO_VAL_MIN_TRAIN = 20000  # training images from which a set counts as CIFAR-size
AUTO_VAL_FRACTION = 0.2  # (issue) validation fraction of smaller sets


def _allocate(counts: np.ndarray, n: int) -> np.ndarray:
    """Split `n` over classes in proportion to `counts` (largest remainders, ties by class)."""
    exact = counts * (n / counts.sum())
    quota = np.floor(exact).astype(np.int64)
    short = n - int(quota.sum())
    order = np.argsort(-(exact - quota), kind="stable")
    quota[order[:short]] += 1
    return quota


def _take(
    y: np.ndarray, classes: np.ndarray, quota: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    picked = [
        rng.permutation(np.flatnonzero(y == c))[:q] for c, q in zip(classes, quota, strict=True)
    ]
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, np.int64)


def stratified_split(
    y: np.ndarray, n_out: int, seed: int | list[int]
) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held out) indices; `n_out` held out in proportion to each class's size."""
    classes, counts = np.unique(y, return_counts=True)
    out = _take(y, classes, _allocate(counts, n_out), np.random.default_rng(seed))
    keep = np.ones(len(y), dtype=bool)
    keep[out] = False
    return np.flatnonzero(keep), out


def balanced_subset(y: np.ndarray, n: int, seed: int | list[int]) -> np.ndarray:
    """Indices of `n` items with classes as equal as possible (a class with too few images
    gives all it has and the others share its remainder); all items if `n` >= len(y)."""
    if n >= len(y):
        return np.arange(len(y))
    classes, counts = np.unique(y, return_counts=True)
    quota = np.zeros(len(classes), np.int64)
    remaining = n
    while remaining > 0:
        open_ = np.flatnonzero(quota < counts)  # classes that can still give images
        share = remaining // len(open_)
        if share == 0:  # fewer images left than open classes: one each, lowest labels first
            quota[open_[:remaining]] += 1
            break
        add = np.minimum(share, counts[open_] - quota[open_])
        quota[open_] += add
        remaining -= int(add.sum())
    return _take(y, classes, quota, np.random.default_rng(seed))


def val_count(val_size: float, n_train: int) -> int:
    """Validation images for `val_size` (>= 1 a count, < 1 a fraction, 0 auto) of `n_train`."""
    if n_train < 2:
        raise BlockQNNError(
            f"only {n_train} training image(s): need at least 2 to hold out validation"
        )
    if val_size == 0:
        auto = (
            AUTO_VAL_IMAGES if n_train >= AUTO_VAL_MIN_TRAIN else round(AUTO_VAL_FRACTION * n_train)
        )
        return max(1, auto)
    if val_size < 1:
        count = max(1, round(val_size * n_train))
        shown = f"{val_size:g} ({count} images)"
    elif val_size != int(val_size):
        raise BlockQNNError(f"data.val_size = {val_size}: a count (>= 1) must be a whole number")
    else:
        count, shown = int(val_size), str(int(val_size))
    if count >= n_train:  # a fraction near 1 rounds up to every image too
        raise BlockQNNError(
            f"data.val_size = {shown}: leaves no training images (the training split has {n_train})"
        )
    return count


def channel_stats(x: np.ndarray, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of uint8 images (N, C, H, W) scaled to [0, 1].

    Exact integer sums of x and x**2 (uint16 holds 255**2), chunk by chunk, so no float copy
    of the whole set is made. A constant channel gets std 1 (normalising by 0 would give inf).
    """
    s1 = np.zeros(x.shape[1], np.uint64)
    s2 = np.zeros(x.shape[1], np.uint64)
    for start in range(0, len(x), chunk):
        part = x[start : start + chunk]
        s1 += part.sum(axis=(0, 2, 3), dtype=np.uint64)
        sq = part.astype(np.uint16)
        sq *= sq
        s2 += sq.sum(axis=(0, 2, 3), dtype=np.uint64)
    n = x.size // x.shape[1]
    mean = s1 / (n * 255.0)
    std = np.sqrt(np.maximum(s2 / (n * 255.0**2) - mean**2, 0.0))
    std[std == 0] = 1.0
    return tuple(float(m) for m in mean), tuple(float(v) for v in std)
