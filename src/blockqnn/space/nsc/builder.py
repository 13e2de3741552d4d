"""Block -> `torch.nn.Module`, and the stacking of blocks into a whole network.

Owns: the layer modules (pre-activation conv, stride-1 pooling, add, concat), `BlockModule`
and `build_network`. Widths and projections come from `blockqnn.space.nsc.block.plan_block`,
so the cost model counts exactly what is built here. Must not know about training.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import nn

from blockqnn.settings.config import NetworkConfig
from blockqnn.space.nsc.block import Block, LayerType, plan_block


class PreActConv(nn.Module):
    """ReLU -> k x k conv (stride 1, same padding, no bias) -> BatchNorm, as in the paper."""

    def __init__(self, c_in: int, c_out: int, kernel: int) -> None:
        super().__init__()
        self.relu = nn.ReLU()
        self.conv = nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(self.relu(x)))


def _pool(ltype: LayerType, kernel: int) -> nn.Module:
    if kernel == 1:  # a 1x1 stride-1 pool is the identity; skip the kernel launch
        return nn.Identity()
    if ltype is LayerType.MAX_POOL:
        return nn.MaxPool2d(kernel, stride=1, padding=kernel // 2)
    # count_include_pad=False: border pixels average their real neighbours, not zeros
    return nn.AvgPool2d(kernel, stride=1, padding=kernel // 2, count_include_pad=False)


class BlockModule(nn.Module):
    """One block instance: runs the layers in index order, concatenates the unconsumed ones
    and projects them to the stage width with a 1x1 pre-activation conv."""

    def __init__(self, block: Block, c_in: int, c: int) -> None:
        super().__init__()
        plan = plan_block(block, c_in, c)
        self.kinds: list[int] = []
        self.preds: list[tuple[int, ...]] = []
        self.ops = nn.ModuleList()
        self.proj = nn.ModuleList()  # per layer: a pair of add-operand projections (or identities)
        for layer in block.layers:
            t = layer.type
            self.kinds.append(int(t))
            self.preds.append(layer.preds)
            if t is LayerType.CONV:
                self.ops.append(PreActConv(plan.widths[layer.pred1], c, layer.kernel))
            elif t in (LayerType.MAX_POOL, LayerType.AVG_POOL):
                self.ops.append(_pool(t, layer.kernel))
            else:
                self.ops.append(nn.Identity())
            proj = nn.ModuleList([nn.Identity(), nn.Identity()])
            for pos in plan.add_projections.get(layer.index, ()):
                proj[pos] = PreActConv(plan.widths[layer.preds[pos]], c, 1)
            self.proj.append(proj)
        self.outputs = list(block.outputs)
        self.out_proj: nn.Module = (
            PreActConv(plan.output_width, c, 1) if plan.output_projection else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, c_in, H, W) -> (B, c, H, W)
        nodes = [x]
        for kind, preds, op, proj in zip(self.kinds, self.preds, self.ops, self.proj, strict=True):
            if kind == LayerType.ADD:
                pair = cast(nn.ModuleList, proj)
                nodes.append(pair[0](nodes[preds[0]]) + pair[1](nodes[preds[1]]))
            elif kind == LayerType.CONCAT:
                nodes.append(torch.cat([nodes[preds[0]], nodes[preds[1]]], dim=1))
            else:
                nodes.append(op(nodes[preds[0]]))
        outs = [nodes[i] for i in self.outputs]
        y = outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)
        return self.out_proj(y)


class Network(nn.Module):
    """Stem -> stages of blocks (2x2 max-pool and width x2 between stages) -> head."""

    def __init__(self, block: Block, config: NetworkConfig) -> None:
        super().__init__()
        self.block = block
        self.config = config
        stem: list[nn.Module] = []
        for i, (c_in, c_out, k, stride) in enumerate(config.stem):
            if i > 0:
                stem.append(nn.ReLU())
            stem.append(nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2, bias=False))
            stem.append(nn.BatchNorm2d(c_out))
        self.stem = nn.Sequential(*stem)
        stages: list[nn.Module] = []
        c_prev = config.stem[-1][1]
        for i, width in enumerate(config.stage_widths):
            if i > 0:
                stages.append(nn.MaxPool2d(2, stride=2))
            for _ in range(config.blocks_per_stage):
                stages.append(BlockModule(block, c_prev, width))
                c_prev = width
        self.stages = nn.Sequential(*stages)
        # Blocks end in BatchNorm (pre-activation), so the head starts with a ReLU.
        head: list[nn.Module] = [nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        if config.head == "paper":
            head += [
                nn.Linear(c_prev, config.hidden),
                nn.ReLU(),
                nn.Dropout(config.dropout),
                nn.Linear(config.hidden, config.num_classes),
            ]
        else:
            head.append(nn.Linear(c_prev, config.num_classes))
        self.head = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, classes)
        return self.head(self.stages(self.stem(x)))


def build_network(
    block: Block | str,
    num_classes: int = 10,
    input_shape: tuple[int, int, int] = (3, 32, 32),
    filters: int = 32,
    blocks_per_stage: int = 2,
    head: str = "paper",
    template: str = "cifar",
    **kwargs: Any,
) -> Network:
    """Stack `block` into a network (see `NetworkConfig` for the layout).

    >>> net = build_network("1,1,3,0,0; 2,7,0,0,0", input_shape=(1, 8, 8), filters=8)
    >>> net(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])
    """
    if isinstance(block, str):
        block = Block.parse(block)
    config = NetworkConfig(
        num_classes=num_classes,
        input_shape=tuple(input_shape),  # type: ignore[arg-type]
        filters=filters,
        blocks_per_stage=blocks_per_stage,
        head=head,
        template=template,
        **kwargs,
    )
    return Network(block, config)
