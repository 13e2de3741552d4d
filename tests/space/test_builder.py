"""Builder: every valid block builds and trains a step; cost matches the reference counter."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.strategies import blocks
from torch.utils.flop_counter import FlopCounterMode

from blockqnn import Block, BlockQNNError, build_network
from blockqnn.settings.config import NetworkConfig
from blockqnn.space.nsc.cost import network_cost, reference_flops

EXAMPLE = "1,1,3,0,0; 2,1,5,0,0; 3,5,0,1,2; 4,7,0,0,0"


def _counted(net: torch.nn.Module, shape: tuple[int, int, int]) -> int:
    net.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(torch.zeros(1, *shape))
    return int(counter.get_total_flops())


@given(
    block=blocks(),
    shape=st.sampled_from([(1, 8, 8), (3, 12, 10), (3, 16, 16)]),
    head=st.sampled_from(["paper", "gap"]),
)
@settings(max_examples=30, deadline=None)
def test_random_blocks_build_run_and_match_cost(
    block: Block, shape: tuple[int, int, int], head: str
) -> None:
    torch.manual_seed(0)
    net = build_network(block, num_classes=7, input_shape=shape, filters=4, head=head, hidden=16)
    x = torch.randn(3, *shape)
    y = net(x)
    assert y.shape == (3, 7)
    y.square().mean().backward()
    assert all(p.grad is not None for p in net.parameters())
    config = NetworkConfig(num_classes=7, input_shape=shape, filters=4, head=head, hidden=16)
    cost = network_cost(block, config)
    assert cost.params == sum(p.numel() for p in net.parameters())
    assert cost.flops == _counted(net, shape)
    assert cost.density == block.density


@pytest.mark.parametrize(
    ("text", "params", "flops"),
    [
        # Golden numbers of the default search-time network (F=32, N=2, 3x32x32, paper head).
        (EXAMPLE, 1_259_178, 358_567_936),
        ("1,1,3,0,0", 439_082, 96_423_936),
        ("1,2,3,0,0; 2,6,0,0,1; 3,3,3,2,0; 4,5,0,1,3", 199_466, 20_926_464),
        ("1,4,0,0,0; 2,6,0,0,1; 3,5,0,2,0; 4,2,3,1,0", 276_138, 43_995_136),
    ],
)
def test_golden_costs(text: str, params: int, flops: int) -> None:
    cost = network_cost(Block.parse(text))
    assert (cost.params, cost.flops) == (params, flops)


def test_golden_costs_match_the_built_network() -> None:
    net = build_network(EXAMPLE)
    assert sum(p.numel() for p in net.parameters()) == 1_259_178
    assert _counted(net, (3, 32, 32)) == 358_567_936


def test_imagenet_template() -> None:
    block = Block.parse(EXAMPLE)
    net = build_network(
        block,
        input_shape=(3, 224, 224),
        template="imagenet",
        filters=8,
        blocks_per_stage=1,
        num_classes=1000,
        head="gap",
    )
    assert net(torch.zeros(1, 3, 224, 224)).shape == (1, 1000)
    config = NetworkConfig(
        input_shape=(3, 224, 224),
        template="imagenet",
        filters=8,
        blocks_per_stage=1,
        num_classes=1000,
        head="gap",
    )
    assert config.stem_size() == (56, 56)
    assert network_cost(block, config).flops == _counted(net, (3, 224, 224))


def test_width_doubles_per_stage_and_add_projections() -> None:
    # An add of the input (width F) with a concat (width 2F) projects the concat to F.
    block = Block.parse("1,1,3,0,0; 2,6,0,0,1; 3,5,0,0,2")
    net = build_network(block, filters=8)
    x = net.stem(torch.zeros(2, 3, 32, 32))
    shapes = []
    for module in net.stages:
        x = module(x)
        shapes.append(tuple(x.shape[1:]))
    assert shapes == [
        (8, 32, 32),
        (8, 32, 32),
        (8, 16, 16),
        (16, 16, 16),
        (16, 16, 16),
        (16, 8, 8),
        (32, 8, 8),
        (32, 8, 8),
    ]
    first = net.stages[0]
    assert isinstance(first.proj[2][1].conv, torch.nn.Conv2d)  # the concat operand
    assert isinstance(first.proj[2][0], torch.nn.Identity)  # the input already has width F


def test_reference_flops_is_single_conv_network() -> None:
    assert reference_flops() == network_cost(Block.parse("1,1,3,0,0")).flops


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"input_shape": (3, 4, 4)}, "too small"),
        ({"input_shape": (0, 32, 32)}, "channels"),
        ({"head": "mlp"}, "head"),
        ({"template": "vit"}, "template"),
        ({"filters": 0}, "filters"),
        ({"num_classes": 0}, "num_classes"),
    ],
)
def test_bad_network_settings(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(BlockQNNError, match=message):
        build_network(EXAMPLE, **kwargs)
