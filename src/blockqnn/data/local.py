"""Datasets the user brings: an image folder or a .npz file.

Owns: reading and validating both into uint8 (N, C, H, W) arrays and int64 labels.

Folder: `PATH/train/<class>/*` and `PATH/test/<class>/*`. Classes are the train subfolders in
sorted order; test/ must hold the same classes, and no class folder of either split may be
empty (checked before anything trains: an empty test split found after 300 epochs costs the
run). Hidden files and files whose extension Pillow does not know are skipped; every other
file must decode. All images must have one size, at most `MAX_SIDE` a side (read from the
header: a decompression bomb is refused before it is decoded). Colour: an RGB file whose
three channels are equal is grayscale. The folder takes the majority's colour: 3 channels if
most images have colour (a grayscale one is replicated, what Pillow's convert("RGB") does,
losing nothing), else 1 channel, and the few colour images are converted to grayscale with
Pillow's luma weights and a warning naming one of them (a stray RGB file should not turn a
grayscale set into 3 channels; the warning comes with the decoding, not from the cache).
Alpha is dropped. Decoding (~7 s for 60k 32x32 JPEGs on one core) happens once: the arrays
are cached under the cache dir, keyed by the folder's absolute path, with a fingerprint of
every file's name, size and mtime, so a changed folder is decoded again.

.npz: arrays `x_train, y_train, x_test, y_test`, optionally `classes` (names). Images uint8,
NCHW or NHWC (NHWC when the last axis is 1 or 3 and the second is not) or (N, H, W) gray.
Must not split or augment.
"""

from __future__ import annotations

import hashlib
import os
import struct
import warnings
import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

from blockqnn.data.cache import load_npz, save_npz
from blockqnn.data.npz_sizes import check_declared_sizes, check_label_range
from blockqnn.errors import BlockQNNError
from blockqnn.settings.bounds import INPUT_SIDE

_GRAY_MODES = frozenset({"1", "L", "LA", "La"})
# Pillow's convert("L") clips these at 255 instead of scaling, so they are scaled here.
_WIDE_GRAY_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
CACHE_FORMAT = 3  # bump when the decoding changes; old cache files are then rebuilt
# The folder's name in its cache file's name is for people; the path's hash keeps it unique.
# Cut, so that a long name (up to the 255 bytes a name may have) leaves room for the rest.
NAME_BYTES = 64
MAX_SIDE = int(INPUT_SIDE.high)  # a larger image could never be a network's input
# What Pillow's plugins raise for a malformed file besides OSError (the decompression-bomb
# error and NotImplementedError for an unsupported variant included); each names the file.
_BAD_FILE_ERRORS = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    NotImplementedError,
    struct.error,
    IndexError,
    KeyError,
    TypeError,
    ZeroDivisionError,
    MemoryError,
)


class Raw(NamedTuple):
    x_train: np.ndarray  # uint8 (N, C, H, W)
    y_train: np.ndarray  # int64 (N,)
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...]


# ---------------------------------------------------------------- image folders


def _image_extensions() -> frozenset[str]:
    from PIL import Image

    return frozenset(ext.lower() for ext in Image.registered_extensions())


def _list_folder(root: Path) -> tuple[tuple[str, ...], dict[str, list[tuple[str, int]]], str]:
    """(classes, split -> [(file, label)], fingerprint) of a folder dataset."""
    for split in ("train", "test"):
        if not (root / split).is_dir():
            raise BlockQNNError(
                f"folder {root} has no {split}/ subfolder (expected {split}/<class>/<images>)"
            )
    classes = tuple(
        sorted(
            e.name for e in os.scandir(root / "train") if e.is_dir() and not e.name.startswith(".")
        )
    )
    if not classes:
        raise BlockQNNError(
            f"folder {root / 'train'} has no class subfolders (expected train/<class>/<images>)"
        )
    label = {c: i for i, c in enumerate(classes)}
    extensions = _image_extensions()
    digest = hashlib.sha256(f"format {CACHE_FORMAT}\n".encode())
    files: dict[str, list[tuple[str, int]]] = {}  # str paths: 60k Path objects cost 0.8 s
    for split in ("train", "test"):
        names = sorted(
            e.name for e in os.scandir(root / split) if e.is_dir() and not e.name.startswith(".")
        )
        unknown = [n for n in names if n not in label]
        if unknown:
            raise BlockQNNError(
                f"folder {root / split / unknown[0]}: class not in {root / 'train'}"
            )
        if not names:
            raise BlockQNNError(
                f"folder {root / split} has no class subfolders (expected {split}/<class>/<images>)"
            )
        missing = [c for c in classes if c not in names]
        if missing:
            raise BlockQNNError(
                f"folder {root / split} has no class {missing[0]} (train/ has it): every class "
                f"needs {split} images"
                + (f"; {len(missing) - 1} more missing" if len(missing) > 1 else "")
            )
        files[split] = []
        for name in names:
            entries = sorted(
                (
                    e
                    for e in os.scandir(root / split / name)
                    if not e.name.startswith(".") and e.is_file()
                ),
                key=lambda e: e.name,
            )
            images = [e for e in entries if os.path.splitext(e.name)[1].lower() in extensions]
            if not images:  # in test/ too: its accuracy is what a final training reports
                raise BlockQNNError(f"folder {root / split / name} has no images")
            for e in images:
                st = e.stat()
                line = f"{split}/{name}/{e.name}\0{st.st_size}\0{st.st_mtime_ns}\n"
                digest.update(os.fsencode(line))  # a non-UTF-8 name is surrogate-escaped
                files[split].append((e.path, label[name]))
    return classes, files, digest.hexdigest()


def folder_fingerprint(root: Path) -> str:
    """What a folder data set holds, as its cache keys it: each image's name, size and
    modification time (checks the folder's layout as the loader does)."""
    return _list_folder(root.resolve())[2]


def _decode_image(path: str) -> np.ndarray:
    """One image as uint8 (H, W) for grayscale or (H, W, 3) for colour."""
    from PIL import Image

    with warnings.catch_warnings():  # a bomb warned about here is refused just below
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        opened = Image.open(path)
    with opened as img:
        w, h = img.size  # from the header: refused before a huge image is decoded
        if max(w, h) > MAX_SIDE:
            raise ValueError(f"{w}x{h} pixels, more than the {MAX_SIDE} a side may have")
        img.load()
        if img.mode in _WIDE_GRAY_MODES:
            return _wide_gray_to_uint8(np.asarray(img), img.mode)
        if img.mode in _GRAY_MODES:
            return np.asarray(img if img.mode == "L" else img.convert("L"))
        rgb = np.asarray(img if img.mode == "RGB" else img.convert("RGB"))
    if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
        return np.ascontiguousarray(rgb[..., 0])  # a gray image saved as RGB
    return rgb


def _wide_gray_to_uint8(a: np.ndarray, mode: str) -> np.ndarray:
    """16-bit (mode I;16*, or I holding 16-bit values as older Pillows open 16-bit PNGs) and
    float images in [0, 1] (mode F) scaled to 0-255, rounded; other ranges are refused, since
    scaling each image by its own range would make the pixels of a data set incomparable."""
    if mode == "F":
        if not (np.isfinite(a).all() and a.min() >= 0 and a.max() <= 1):
            raise ValueError("a float image (mode F) must hold values in [0, 1]")
        return np.rint(a * 255).astype(np.uint8)
    if a.min() < 0 or a.max() > 65535:
        raise ValueError(f"a {mode} image must hold 16-bit values (0 to 65535)")
    return ((a.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


def _to_gray(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) -> (H, W) with the ITU-R 601-2 weights Pillow's convert("L") uses."""
    r, g, b = (rgb[..., i].astype(np.uint32) for i in range(3))
    return ((r * 299 + g * 587 + b * 114 + 500) // 1000).astype(np.uint8)


def _majority_colour(
    root: Path, images: list[np.ndarray], paths: list[str]
) -> tuple[int, list[np.ndarray]]:
    """(channels, images): 3 if most images have colour; else 1, converting the colour ones
    to grayscale with a warning."""
    colour = [i for i, img in enumerate(images) if img.ndim == 3]
    if not colour:
        return 1, images
    if 2 * len(colour) > len(images):
        return 3, images
    warnings.warn(
        f"blockqnn: {len(colour)} of {len(images)} images in {root} have colour (e.g. "
        f"{paths[colour[0]]}); converted to grayscale, as most images are",
        stacklevel=4,
    )
    out = list(images)
    for i in colour:
        out[i] = _to_gray(images[i])
    return 1, out


def _decode_all(
    root: Path, files: list[tuple[str, int]], size: tuple[int, int] | None
) -> tuple[list[np.ndarray], tuple[int, int] | None]:
    from PIL import Image

    images: list[np.ndarray] = []
    for path, _ in files:
        try:
            img = _decode_image(path)
        except (*_BAD_FILE_ERRORS, Image.DecompressionBombError) as exc:
            lines = str(exc).strip().splitlines()
            why = lines[0] if lines else type(exc).__name__
            raise BlockQNNError(f"cannot read image {path}: {why}") from None
        hw = (img.shape[0], img.shape[1])
        if size is None:
            size = hw
        elif hw != size:
            raise BlockQNNError(
                f"image {path} is {hw[1]}x{hw[0]} pixels, "
                f"other images in {root} are {size[1]}x{size[0]}; "
                "resize them to one size"
            )
        images.append(img)
    return images, size


def _stack(images: list[np.ndarray], channels: int, size: tuple[int, int]) -> np.ndarray:
    out = np.empty((len(images), channels, *size), np.uint8)
    for i, img in enumerate(images):
        out[i] = img if img.ndim == 2 else img.transpose(2, 0, 1)  # gray broadcasts to 3 channels
    return out


def _short(name: str, limit: int = NAME_BYTES) -> str:
    """`name` cut to at most `limit` bytes on disk, at a character boundary."""
    while len(os.fsencode(name)) > limit:
        name = name[:-1]
    return name


def load_folder(root: Path, cache: Path) -> Raw:
    """The folder's images, decoded once and then read from the cache."""
    root = root.resolve()
    classes, files, fingerprint = _list_folder(root)
    key = hashlib.sha256(os.fsencode(str(root))).hexdigest()[:16]
    cache_file = cache / f"folder-{_short(root.name)}-{key}.npz"
    kinds = {
        "x_train": "u",
        "y_train": "i",
        "x_test": "u",
        "y_test": "i",
        "classes": "U",
        "fingerprint": "U",
    }
    cached = load_npz(cache_file, kinds)
    if cached is not None and str(cached["fingerprint"]) == fingerprint:
        return Raw(
            cached["x_train"],
            cached["y_train"],
            cached["x_test"],
            cached["y_test"],
            tuple(str(c) for c in cached["classes"]),
        )
    train, size = _decode_all(root, files["train"], None)
    test, size = _decode_all(root, files["test"], size)
    assert size is not None  # train has at least one image per class
    paths = [path for path, _ in (*files["train"], *files["test"])]
    channels, images = _majority_colour(root, [*train, *test], paths)
    train, test = images[: len(train)], images[len(train) :]
    raw = Raw(
        _stack(train, channels, size),
        np.array([lab for _, lab in files["train"]], np.int64),
        _stack(test, channels, size),
        np.array([lab for _, lab in files["test"]], np.int64),
        classes,
    )
    save_npz(
        cache_file,
        {**raw._asdict(), "classes": np.array(classes), "fingerprint": np.array(fingerprint)},
    )
    return raw


# ---------------------------------------------------------------- .npz files


def _nchw(x: np.ndarray, what: str) -> np.ndarray:
    if x.dtype != np.uint8:
        raise BlockQNNError(
            f"{what}: images must be uint8 (0..255), got {x.dtype}; "
            "convert with e.g. (x * 255).round().astype(np.uint8)"
        )
    if x.ndim == 3:  # (N, H, W): grayscale
        return x[:, None]
    if x.ndim != 4:
        raise BlockQNNError(
            f"{what}: images must be (N, C, H, W) or (N, H, W, C), got shape {x.shape}"
        )
    if x.shape[3] in (1, 3) and x.shape[1] not in (1, 3):
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    return x


def load_npz_dataset(path: Path) -> Raw:
    check_declared_sizes(path, ("x_train", "y_train", "x_test", "y_test", "classes"))
    try:
        with (
            path.open("rb") as fh,
            np.load(fh, allow_pickle=False) as f,
        ):  # fh: closed on errors too
            missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in f.files]
            if missing:
                raise BlockQNNError(
                    f"{path}: missing array(s) {', '.join(missing)} "
                    "(needs x_train, y_train, x_test, y_test)"
                )
            arrays = {k: f[k] for k in ("x_train", "y_train", "x_test", "y_test")}
            names = f["classes"] if "classes" in f.files else None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        if isinstance(exc, BlockQNNError):
            raise
        raise BlockQNNError(f"{path}: not a readable .npz file: {exc}") from None
    x_train = _nchw(arrays["x_train"], f"{path}: x_train")
    x_test = _nchw(arrays["x_test"], f"{path}: x_test")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise BlockQNNError(
            f"{path}: x_train images are {x_train.shape[1:]}, "
            f"but x_test images are {x_test.shape[1:]}"
        )
    labels = {}
    for split, x in (("train", x_train), ("test", x_test)):
        y = arrays[f"y_{split}"]
        if y.ndim != 1 or y.dtype.kind not in "iu":
            raise BlockQNNError(
                f"{path}: y_{split} must be a 1-D array of integer labels, got {y.dtype} {y.shape}"
            )
        if len(y) != len(x):
            raise BlockQNNError(
                f"{path}: x_{split} has {len(x)} images but y_{split} has {len(y)} labels"
            )
        if len(y):
            check_label_range(path, split, int(y.min()), int(y.max()))
        labels[split] = y.astype(np.int64)
    if len(labels["train"]) == 0:
        raise BlockQNNError(f"{path}: x_train is empty")
    if len(labels["test"]) == 0:  # refused now, not when a final training is tested
        raise BlockQNNError(f"{path}: x_test is empty")
    if names is not None:
        classes = tuple(str(n) for n in names.ravel())
    else:
        classes = tuple(str(i) for i in range(int(labels["train"].max()) + 1))
    for split, y in labels.items():
        if len(y) and (y.min() < 0 or y.max() >= len(classes)):
            bad = int(y[(y < 0) | (y >= len(classes))][0])
            raise BlockQNNError(
                f"{path}: y_{split} has label {bad}, out of range 0..{len(classes) - 1}"
            )
    return Raw(x_train, labels["train"], x_test, labels["test"], classes)
