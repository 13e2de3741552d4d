"""An `.npz` data set whose declared sizes are impossible is refused in one line before
anything is allocated (issue 24, item 4)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

from blockqnn.data import npz_sizes
from blockqnn.data.local import load_npz_dataset
from blockqnn.errors import BlockQNNError


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _lying_npy(shape: tuple[int, ...], payload: int) -> bytes:
    """An .npy member whose header declares `shape` (uint8) but holds `payload` bytes."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": "|u1", "fortran_order": False, "shape": shape}
    )
    return buffer.getvalue() + b"\0" * payload


def _archive(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name + ".npy", data)
    return path


def _valid(n: int = 10) -> dict[str, bytes]:
    x = np.zeros((n, 1, 4, 4), np.uint8)
    y = np.arange(n) % 2
    return {"x_train": _npy(x), "y_train": _npy(y), "x_test": _npy(x), "y_test": _npy(y)}


def test_labels_of_two_to_the_40_are_refused_before_classes_are_made(tmp_path: Path) -> None:
    members = _valid()
    members["y_train"] = _npy(np.full(10, 2**40, np.int64))
    with pytest.raises(BlockQNNError, match="has label 1099511627776: at most 100,000 classes"):
        load_npz_dataset(_archive(tmp_path / "labels.npz", members))


def test_a_shape_larger_than_the_file_is_refused_before_it_is_read(tmp_path: Path) -> None:
    members = _valid()
    members["x_train"] = _lying_npy((10**9, 3, 32, 32), 160)
    with pytest.raises(BlockQNNError, match=r"x_train declares shape \(1000000000, 3, 32, 32\)"):
        load_npz_dataset(_archive(tmp_path / "shape.npz", members))


def test_arrays_that_cannot_fit_in_memory_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _archive(tmp_path / "big.npz", _valid(100))
    monkeypatch.setattr(npz_sizes, "available_memory", lambda: 1000)
    with pytest.raises(BlockQNNError, match="bytes of memory to load, more than the 1,000"):
        load_npz_dataset(path)


def test_an_honest_file_still_loads(tmp_path: Path) -> None:
    raw = load_npz_dataset(_archive(tmp_path / "ok.npz", _valid()))
    assert raw.x_train.shape == (10, 1, 4, 4) and raw.classes == ("0", "1")
