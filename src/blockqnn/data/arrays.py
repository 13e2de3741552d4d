"""The loaded dataset: host arrays (`DataArrays`) and their copy on a device (`DeviceData`).

Owns: the two containers and the move to a device. Images stay uint8 everywhere (4x smaller
than float32; CIFAR-10 is 150 MB) and are converted to floats per batch by `normalize`.
Must not read files or decide splits (see `blockqnn.data.load_arrays`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True, eq=False)  # eq=False: comparing numpy arrays elementwise is ambiguous
class DataArrays:
    """A dataset split three ways, on the host, as numpy arrays. Picklable (it is sent to
    Ray workers); build one with `blockqnn.data.load_arrays`.

    The reward only ever sees `x_val`; `x_test` is the official test split, for final reports.
    """

    name: str  # the dataset as configured: "digits", "cifar10", a folder or a .npz path
    x_train: np.ndarray  # uint8 (N, C, H, W): the training split minus validation
    y_train: np.ndarray  # int64 (N,)
    x_val: np.ndarray  # uint8, held out from the official training split
    y_val: np.ndarray
    x_test: np.ndarray  # uint8, the official test split
    y_test: np.ndarray
    classes: tuple[str, ...]  # class names; label i is classes[i]
    mean: tuple[float, ...]  # per channel, of x_train scaled to [0, 1]
    std: tuple[float, ...]  # per channel, of x_train scaled to [0, 1] (1 for a constant one)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        _, c, h, w = self.x_train.shape
        return (int(c), int(h), int(w))

    def to_device(self, device: str | torch.device) -> DeviceData:
        """The same splits as tensors on `device`. On the CPU, writable arrays are shared, not
        copied (read-only ones, e.g. from Ray's object store, are copied once)."""
        import torch

        dev = torch.device(device)

        def move(a: np.ndarray) -> torch.Tensor:
            a = np.ascontiguousarray(a)
            if not a.flags.writeable:
                a = a.copy()  # torch cannot safely share read-only memory
            return torch.from_numpy(a).to(dev)

        c = self.input_shape[0]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return DeviceData(
                name=self.name,
                classes=self.classes,
                x_train=move(self.x_train),
                y_train=move(self.y_train),
                x_val=move(self.x_val),
                y_val=move(self.y_val),
                x_test=move(self.x_test),
                y_test=move(self.y_test),
                mean=torch.tensor(self.mean, dtype=torch.float32, device=dev).view(1, c, 1, 1),
                std=torch.tensor(self.std, dtype=torch.float32, device=dev).view(1, c, 1, 1),
            )


@dataclass(frozen=True, eq=False)
class DeviceData:
    """A `DataArrays` on one device: uint8 images (N, C, H, W), int64 labels."""

    name: str
    classes: tuple[str, ...]
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    mean: torch.Tensor  # (1, C, 1, 1) float32, in [0, 1] units
    std: torch.Tensor  # (1, C, 1, 1) float32

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        _, c, h, w = self.x_train.shape
        return (int(c), int(h), int(w))

    @property
    def device(self) -> torch.device:
        return self.x_train.device

    def normalize(self, x_uint8: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """(x / 255 - mean) / std as `dtype` (default float32), computed in float32 so bf16
        output is rounded once. Keeps x's memory format (e.g. channels_last)."""
        import torch

        scale = 1.0 / (255.0 * self.std)  # (1, C, 1, 1): tiny, recomputing is cheaper than caching
        shift = -self.mean / self.std
        out = x_uint8.to(torch.float32).mul_(scale).add_(shift)  # in place: one float buffer
        return out if dtype is None or dtype == torch.float32 else out.to(dtype)
