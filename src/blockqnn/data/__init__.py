"""Datasets as uint8 arrays, split for the early-stop reward, and moved to the device.

Owns: turning `DataConfig` into a `DataArrays` (name resolution, the class-balanced
`train_samples` subset, the stratified validation split, per-channel statistics); the
sources live in submodules (`cifar`, `local`), the containers in `arrays`, augmentation in
`augment`. Must not train or know about networks.

    >>> from blockqnn.settings.config import DataConfig
    >>> data = load_arrays(DataConfig(dataset="digits"))
    >>> data.input_shape, data.num_classes, len(data.x_train), len(data.x_val), len(data.x_test)
    ((1, 8, 8), 10, 1150, 288, 359)

Dataset names (`DataConfig.dataset`): "digits", "cifar10", "cifar100" (builtin names win: a
folder called "digits" is "./digits"), else a path: a folder with train/ and test/, or a .npz.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from blockqnn.data.arrays import DataArrays, DeviceData
from blockqnn.data.augment import augment, cutout, default_augmentation
from blockqnn.data.cache import cache_root
from blockqnn.data.cifar import load_cifar
from blockqnn.data.local import Raw, load_folder, load_npz_dataset
from blockqnn.data.splits import balanced_subset, channel_stats, stratified_split, val_count
from blockqnn.errors import BlockQNNError, clip
from blockqnn.settings.config import DataConfig
from blockqnn.settings.datasets import BUILTIN_DATASETS, missing_dataset

__all__ = [
    "BUILTIN",
    "DataArrays",
    "DeviceData",
    "augment",
    "cutout",
    "default_augmentation",
    "load_arrays",
]

BUILTIN = BUILTIN_DATASETS
DIGITS_TEST_FRACTION = 0.2  # digits has no official test split: this much is held out as one
DIGITS_TEST_SEED = 0  # fixed, not config.seed: the test split must not change between runs


def _digits_table() -> np.ndarray:
    """(1797, 65) float: 64 pixels then the label, as scikit-learn stores them. Read straight
    from its data file when it is where scikit-learn keeps it: importing sklearn costs ~1 s,
    ten times the read. Falls back to `sklearn.datasets.load_digits`."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is not None and spec.submodule_search_locations:
        file = Path(next(iter(spec.submodule_search_locations))) / "datasets/data/digits.csv.gz"
        if file.is_file():
            table = np.loadtxt(file, delimiter=",", dtype=np.float64)
            if table.shape == (1797, 65):
                return table
    from sklearn.datasets import load_digits as sk_digits

    bunch = sk_digits()
    return np.concatenate([bunch.data, bunch.target[:, None]], axis=1)


def load_digits() -> Raw:
    """scikit-learn's 8x8 digits (ships with it: no download), values 0..16 scaled to 0..255,
    with a fixed stratified 20% held out as the test split."""
    table = _digits_table()
    x = np.round(table[:, :64] * (255.0 / 16.0)).astype(np.uint8).reshape(-1, 1, 8, 8)
    y = table[:, 64].astype(np.int64)
    train, test = stratified_split(y, round(DIGITS_TEST_FRACTION * len(y)), DIGITS_TEST_SEED)
    classes = tuple(str(c) for c in range(10))
    return Raw(x[train], y[train], x[test], y[test], classes)


def _load_raw(config: DataConfig, download: bool) -> Raw:
    name = config.dataset
    cache = cache_root(config.cache_dir)
    if name == "digits":
        return load_digits()
    if name in ("cifar10", "cifar100"):
        data_dir = Path(config.data_dir).expanduser() if config.data_dir else None
        return Raw(*load_cifar(name, data_dir, cache, download))
    path = Path(name).expanduser()
    try:
        is_dir, is_file = path.is_dir(), path.is_file()
    except OSError as exc:  # e.g. a name longer than the file system allows
        raise BlockQNNError(f"dataset {clip(name, quote=True)}: {exc.strerror}") from None
    if is_dir:
        return load_folder(path, cache)
    if is_file:
        if path.suffix.lower() != ".npz":
            raise BlockQNNError(
                f"dataset {clip(name)}: a file must be a .npz (or give a folder with train/ and "
                "test/)"
            )
        return load_npz_dataset(path)
    raise missing_dataset(name)


def _check_classes(name: str, raw: Raw) -> None:
    """Refuse training images of one class: every network would score 100% on them."""
    present = np.unique(raw.y_train)
    if len(present) < 2:
        only = f" ({clip(raw.classes[int(present[0])], quote=True)})" if len(present) else ""
        raise BlockQNNError(
            f"dataset {clip(name)} has one class{only}: every block would score 100%; "
            "a classifier needs images of at least 2 classes"
        )


def load_arrays(config: DataConfig, download: bool = True) -> DataArrays:
    """Load `config.dataset` and split it: the optional class-balanced subset of
    `train_samples` training images, then a stratified validation split of `val_size` from
    them (both seeded by `config.seed`). `download=False` refuses to fetch CIFAR archives."""
    raw = _load_raw(config, download)
    _check_classes(config.dataset, raw)
    x, y = raw.x_train, raw.y_train
    if config.train_samples:
        keep = balanced_subset(y, config.train_samples, [config.seed, 1])
        x, y = x[keep], y[keep]
    n_val = val_count(config.val_size, len(y))
    train, val = stratified_split(y, n_val, [config.seed, 2])
    x_train = x[train]
    mean, std = channel_stats(x_train)
    return DataArrays(
        name=config.dataset,
        x_train=x_train,
        y_train=y[train],
        x_val=x[val],
        y_val=y[val],
        x_test=raw.x_test,
        y_test=raw.y_test,
        classes=raw.classes,
        mean=mean,
        std=std,
    )
