"""Show one block: its layers, hash, and the cost of its search-time network.

Example: blockqnn show "1,1,3,0,0; 2,1,5,0,0; 3,5,0,1,2; 4,7,0,0,0" --svg block.svg
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from blockqnn.errors import BlockQNNError, clip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from blockqnn.choices import HEADS
    from blockqnn.nsc import DEFAULT_MAX_DEPTH

    parser.add_argument("block", metavar="BLOCK", help="NSC text or a JSON list of 5-lists")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--svg", metavar="FILE", help="also draw the block graph to FILE")
    parser.add_argument(
        "--max-depth", type=int, default=DEFAULT_MAX_DEPTH, help="search-space depth limit"
    )
    parser.add_argument("--filters", type=int, default=32, help="first-stage width F")
    parser.add_argument("--blocks-per-stage", type=int, default=2, help="blocks per stage N")
    parser.add_argument(
        "--input-shape",
        default="3,32,32",
        help="C,H,W of the input images (default 3,32,32)",
    )
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument("--head", choices=HEADS, default="paper")


def _shape(text: str) -> tuple[int, int, int]:
    parts = text.split(",")
    if len(parts) != 3 or not all(p.strip().isascii() and p.strip().isdigit() for p in parts):
        raise BlockQNNError(f"--input-shape {clip(text, quote=True)}: expected C,H,W integers")
    if any(len(p.strip()) > 9 for p in parts):
        raise BlockQNNError(f"--input-shape {clip(text, quote=True)}: sizes out of range")
    c, h, w = (int(p) for p in parts)
    return c, h, w


def run(args: argparse.Namespace) -> int:
    """Describe one block. Long on purpose: the command's checks and its outputs (text,
    JSON, SVG) in the order the user meets them."""
    from blockqnn.cost import NetworkConfig, network_cost
    from blockqnn.nsc import Block

    block = Block.parse(args.block, max_depth=args.max_depth)
    config = NetworkConfig(
        num_classes=args.num_classes,
        input_shape=_shape(args.input_shape),
        filters=args.filters,
        blocks_per_stage=args.blocks_per_stage,
        head=args.head,
    )
    cost = network_cost(block, config)
    if args.svg:
        from blockqnn.files import write_atomic
        from blockqnn.viz import block_svg

        write_atomic(Path(args.svg), block_svg(block, title=block.hash[:12]), "--svg")
    if args.json:
        payload = {
            "nsc": str(block),
            "hash": block.hash,
            "canonical": str(block.canonical()),
            "layers": block.to_json(),
            "outputs": list(block.outputs),
            "params": cost.params,
            "flops": cost.flops,
            "density": cost.density,
            "network": config.to_dict(),
        }
        if args.svg:
            payload["svg"] = str(args.svg)
        json.dump(payload, sys.stdout)
        sys.stdout.write("\n")
        return 0

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"block {block.hash[:12]}", title_justify="left")
    for col in ("index", "type", "kernel", "pred1", "pred2", "layer"):
        table.add_column(col, justify="right" if col != "layer" and col != "type" else "left")
    for layer in block.layers:
        table.add_row(
            str(layer.index),
            str(int(layer.type)),
            str(layer.kernel),
            str(layer.pred1),
            str(layer.pred2),
            layer.describe(),
        )
    table.add_row(str(len(block) + 1), "7", "0", "0", "0", "terminal")
    console = Console()
    console.print(table)
    console.print(f"nsc       {block}")
    console.print(f"canonical {block.canonical()}")
    console.print(f"hash      {block.hash}")
    console.print(f"outputs   {', '.join(str(i) for i in block.outputs)} (concatenated)")
    shape = "x".join(str(v) for v in config.input_shape)
    console.print(
        f"network   F={config.filters}, N={config.blocks_per_stage}, input {shape}, "
        f"{config.num_classes} classes, {config.head} head"
    )
    console.print(f"params    {cost.params:,}")
    console.print(f"FLOPs     {cost.flops:,} per image (forward, multiply-add = 2)")
    console.print(f"density   {cost.density:.3f} (edges / nodes)")
    if args.svg:
        console.print(f"diagram   {args.svg}")
    return 0
