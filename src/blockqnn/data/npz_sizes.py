"""The sizes an `.npz` data set declares, checked before any array is read.

Owns: reading each array's `.npy` header inside the zip (shape and dtype: a few bytes) and
refusing, in one line, a file whose declared sizes cannot be true (larger than the bytes the
archive holds for it) or cannot fit in this machine's memory, and label ranges that would
make an absurd number of classes. `numpy.load` allocates whatever a header declares, so a
10-image file claiming a billion images would otherwise take the host down. Must not read
the arrays themselves: `blockqnn.data.local` does, after this check.
"""

from __future__ import annotations

import math
import os
import zipfile
from pathlib import Path

import numpy as np

from blockqnn.errors import BlockQNNError

MAX_CLASSES = 100_000  # the largest `network.num_classes` the settings allow
LOAD_COPIES = 2  # the arrays read plus one converted copy (labels to int64, NHWC to NCHW)


def available_memory() -> int:
    """Bytes of memory this process could still use (MemAvailable; all RAM elsewhere)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 62  # unknown: no memory limit beyond the file-size check


def _header(archive: zipfile.ZipFile, name: str, path: Path) -> tuple[tuple[int, ...], int]:
    """(shape, itemsize) of the array `name` as its header declares them."""
    member = name + ".npy"
    try:
        with archive.open(member) as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise BlockQNNError(f"{path}: {name} has no readable array header ({exc})") from None
    return tuple(int(n) for n in shape), int(dtype.itemsize)


def check_declared_sizes(path: Path, names: tuple[str, ...]) -> None:
    """Refuse `path` if an array among `names` declares more bytes than the archive holds
    for it, or if all of them together would not fit in memory (one line each)."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = {i.filename: i for i in archive.infolist()}
            total = 0
            for name in names:
                info = members.get(name + ".npy")
                if info is None:
                    continue  # a missing array is reported by the loader, in its words
                shape, itemsize = _header(archive, name, path)
                declared = math.prod(shape) * itemsize
                if declared > info.file_size:
                    raise BlockQNNError(
                        f"{path}: {name} declares shape {shape} ({declared:,} bytes) but the "
                        f"file holds {info.file_size:,} bytes for it"
                    )
                total += declared
    except (OSError, zipfile.BadZipFile) as exc:
        raise BlockQNNError(f"{path}: not a readable .npz file: {exc}") from None
    free = available_memory()
    if total * LOAD_COPIES > free:
        raise BlockQNNError(
            f"{path}: its arrays need about {total * LOAD_COPIES:,} bytes of memory to load, "
            f"more than the {free:,} available"
        )


def check_label_range(path: Path, split: str, low: int, high: int) -> None:
    """Refuse labels that would make a negative class or more than MAX_CLASSES classes."""
    if low < 0:
        raise BlockQNNError(f"{path}: y_{split} has label {low}, below 0")
    if high >= MAX_CLASSES:
        raise BlockQNNError(
            f"{path}: y_{split} has label {high}: at most {MAX_CLASSES:,} classes are supported"
        )
