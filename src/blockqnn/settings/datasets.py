"""The data set names `[data] dataset` accepts beside paths, and the words for a name that is
none of them.

Owns: the built-in data sets' names and the one-line error for a name that is neither built
in nor an existing file or folder. Must import nothing heavy: `blockqnn evaluate` refuses a
bad name with it before torch or numpy is imported, and the loader says the same words.
"""

from __future__ import annotations

from pathlib import Path

from blockqnn.errors import BlockQNNError, clip

BUILTIN_DATASETS = ("digits", "cifar10", "cifar100")  # names that win over a path of that name


def missing_dataset(name: str) -> BlockQNNError:
    """The error for `name` when it is no built-in data set and no existing file or folder:
    a missing .npz, a missing folder (a name that looks like a path), or an unknown name."""
    if Path(name).suffix.lower() == ".npz":
        return BlockQNNError(f"dataset file {clip(name)} does not exist")
    if "/" in name or "\\" in name or name.startswith("."):
        return BlockQNNError(f"dataset folder {clip(name)} does not exist")
    return BlockQNNError(
        f"unknown dataset {clip(name, quote=True)} (valid: {', '.join(BUILTIN_DATASETS)}, "
        "a folder with train/ and test/, or a .npz file)"
    )
