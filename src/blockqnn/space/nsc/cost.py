"""The network layout of a block and its cost, computed from the spec alone.

Owns: params / FLOPs / density, counted on the block's `BlockPlan` (the width of every layer
and where 1x1 projections go, `blockqnn.space.nsc.block`), which the builder reads too, so
the counted network and the built one cannot drift apart. Must not import torch or
need a GPU: the search uses this to price candidates before training them.

Counting convention (that of `torch.utils.flop_counter.FlopCounterMode` at batch 1): forward
FLOPs of convolutions and linear layers only, one multiply-add = 2 FLOPs, biases, BatchNorm,
activations and pooling not counted. Params are every trainable tensor element
(`sum(p.numel())`), BatchNorm's weight and bias included, running statistics excluded.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from blockqnn.settings.config import NetworkConfig
from blockqnn.space.nsc.block import Block, LayerType, plan_block


@dataclass(frozen=True)
class Cost:
    params: int
    flops: int  # forward FLOPs for one image, multiply-add = 2
    density: float  # edges / nodes of the block graph

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _conv(c_in: int, c_out: int, k: int, h: int, w: int) -> tuple[int, int]:
    """(params, flops) of a bias-free k x k conv followed by BatchNorm, output h x w."""
    return c_in * c_out * k * k + 2 * c_out, 2 * h * w * c_out * c_in * k * k


def block_cost(block: Block, c_in: int, c: int, h: int, w: int) -> tuple[int, int]:
    """(params, flops) of one block instance at spatial size h x w."""
    plan = plan_block(block, c_in, c)
    params = flops = 0

    def add(pf: tuple[int, int]) -> None:
        nonlocal params, flops
        params, flops = params + pf[0], flops + pf[1]

    for layer in block.layers:
        if layer.type is LayerType.CONV:
            add(_conv(plan.widths[layer.pred1], c, layer.kernel, h, w))
        for pos in plan.add_projections.get(layer.index, ()):
            add(_conv(plan.widths[layer.preds[pos]], c, 1, h, w))
    if plan.output_projection:
        add(_conv(plan.output_width, c, 1, h, w))
    return params, flops


def network_cost(block: Block, config: NetworkConfig | None = None) -> Cost:
    """Params and forward FLOPs of the network `build_network(block, config)` would build."""
    cfg = config or NetworkConfig()
    params = flops = 0
    h, w = cfg.input_shape[1:]
    for c_in, c_out, k, stride in cfg.stem:
        if stride == 2:
            h, w = (h + 1) // 2, (w + 1) // 2
        p, f = _conv(c_in, c_out, k, h, w)
        params, flops = params + p, flops + f
    c_prev = cfg.stem[-1][1]
    for stage, width in enumerate(cfg.stage_widths):
        if stage > 0:
            h, w = h // 2, w // 2
        for _ in range(cfg.blocks_per_stage):
            p, f = block_cost(block, c_prev, width, h, w)
            params, flops = params + p, flops + f
            c_prev = width
    if cfg.head == "paper":
        layers = [(c_prev, cfg.hidden), (cfg.hidden, cfg.num_classes)]
    else:
        layers = [(c_prev, cfg.num_classes)]
    for fan_in, fan_out in layers:
        params += fan_in * fan_out + fan_out
        flops += 2 * fan_in * fan_out
    return Cost(params=params, flops=flops, density=block.density)


REFERENCE_BLOCK = "1,1,3,0,0; 2,7,0,0,0"  # one 3x3 conv: the FLOPs reference of the reward


def reference_flops(config: NetworkConfig | None = None) -> int:
    """FLOPs of the network of a single 3x3 conv block: the normaliser in the reward."""
    return network_cost(Block.parse(REFERENCE_BLOCK), config).flops
