"""The `[network]` section: how a block is stacked into a whole network.

Owns: `NetworkConfig`, its defaults and validation, and the stem and stage widths the cost
model and the builder share. Must not import torch, count costs or build anything
(`blockqnn.space.nsc.cost` and `builder` do).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from blockqnn.errors import BlockQNNError, clip
from blockqnn.settings.bounds import INPUT_CHANNELS, INPUT_SIDE, check, check_settings
from blockqnn.settings.choices import HEADS, TEMPLATES


@dataclass(frozen=True)
class NetworkConfig:
    """How a block is stacked into a whole network.

    CIFAR template (paper): 3x3 conv stem; `blocks_per_stage` blocks at `filters` channels,
    2x2 max-pool stride 2 and width x2, the same at 2F, again at 4F; head.
    ImageNet template (choice; the paper does not give it exactly): two stride-2 3x3 convs
    bring 224x224 to 56x56, then four stages at F, 2F, 4F, 8F with 2x2 max-pools between.
    """

    num_classes: int = 10
    input_shape: tuple[int, int, int] = (3, 32, 32)  # (channels, height, width)
    filters: int = 32  # F: channels of the first stage; BlockQNN-S search-time value
    blocks_per_stage: int = 2  # N: the search-time value; final networks use more (e.g. 4)
    head: str = "paper"  # "paper": FC(1024)-ReLU-dropout-FC; "gap": global pool + FC
    template: str = "cifar"
    hidden: int = 1024  # width of the paper head's hidden FC layer
    dropout: float = 0.4  # dropout of the paper head

    def __post_init__(self) -> None:
        shape = self.input_shape
        if not isinstance(shape, (tuple, list)) or len(shape) != 3:
            raise BlockQNNError(f"network.input_shape = {clip(shape)}: expected (C, H, W)")
        check("network.input_shape channels", shape[0], INPUT_CHANNELS)
        check("network.input_shape height", shape[1], INPUT_SIDE)
        check("network.input_shape width", shape[2], INPUT_SIDE)
        object.__setattr__(self, "input_shape", tuple(int(v) for v in shape))
        _, h, w = self.input_shape
        if self.template not in TEMPLATES:
            raise BlockQNNError(
                f"network.template = {clip(self.template, quote=True)}: choose one of {TEMPLATES}"
            )
        min_side = 8 if self.template == "cifar" else 32
        if min(h, w) < min_side:
            raise BlockQNNError(
                f"input_shape: {h}x{w} images are too small for the {self.template} template "
                f"(at least {min_side}x{min_side})"
            )
        if self.head not in HEADS:
            raise BlockQNNError(
                f"network.head = {clip(self.head, quote=True)}: choose one of {HEADS}"
            )
        check_settings("network", self)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["input_shape"] = list(self.input_shape)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NetworkConfig:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise BlockQNNError(
                f"unknown network setting {clip(unknown[0], quote=True)} "
                f"(valid: {', '.join(sorted(known))})"
            )
        values = dict(data)
        if "input_shape" in values:
            shape = values["input_shape"]
            if not isinstance(shape, (list, tuple)):
                raise BlockQNNError(f"network.input_shape = {clip(shape)}: expected (C, H, W)")
            values["input_shape"] = tuple(shape)
        return cls(**values)

    @property
    def stem(self) -> list[tuple[int, int, int, int]]:
        """Stem convolutions as (in_channels, out_channels, kernel, stride)."""
        c = self.input_shape[0]
        if self.template == "cifar":
            return [(c, self.filters, 3, 1)]
        return [(c, self.filters, 3, 2), (self.filters, self.filters, 3, 2)]

    @property
    def stage_widths(self) -> list[int]:
        n_stages = 3 if self.template == "cifar" else 4
        return [self.filters * 2**i for i in range(n_stages)]

    def stem_size(self) -> tuple[int, int]:
        _, h, w = self.input_shape
        for _, _, _, stride in self.stem:
            if stride == 2:  # 3x3, padding 1, stride 2
                h, w = (h + 1) // 2, (w + 1) // 2
        return h, w
