"""Show one block: its layers, hash, and the cost of its search-time network.

Examples:
  blockqnn show "1,1,3,0,0; 2,1,5,0,0; 3,5,0,1,2; 4,7,0,0,0" --svg block.svg
  blockqnn show "1,1,3,0,0; 2,1,5,0,0; 3,5,0,1,2; 4,7,0,0,0" --run runs/digits
The network priced is the default search-time one (F=32, N=2, 3x32x32 images, 10 classes),
or with --run RUN the run's (what `status` and `report` price); flags given change either.
With --latency cpu|cuda|onnxruntime, also the measured inference latency of that network.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from blockqnn.cli.args import INT, PATH
from blockqnn.errors import BlockQNNError, clip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from blockqnn.settings.bounds import DEFAULT_MAX_DEPTH
    from blockqnn.settings.choices import HEADS, LATENCY_RUNTIMES, either
    from blockqnn.settings.config import RewardConfig

    reward = RewardConfig()  # the latency defaults, as a search has them

    parser.add_argument("block", metavar="BLOCK", help="NSC text or a JSON list of 5-lists")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--svg", type=PATH, metavar="FILE", help="also draw the block graph to FILE"
    )
    parser.add_argument(
        "--max-depth", type=INT, default=DEFAULT_MAX_DEPTH, help="search-space depth limit"
    )
    parser.add_argument("--run", metavar="RUN", help="price the network of this search run")
    parser.add_argument("--filters", type=INT, help="first-stage width F (default 32)")
    parser.add_argument("--blocks-per-stage", type=INT, help="blocks per stage N (default 2)")
    parser.add_argument(
        "--input-shape",
        help="C,H,W of the input images (default 3,32,32)",
    )
    parser.add_argument("--num-classes", type=INT, help="(default 10)")
    parser.add_argument("--head", choices=HEADS, help="(default paper)")
    parser.add_argument(
        "--latency",
        metavar="RUNTIME",
        help=f"measure the network's inference latency: {either(LATENCY_RUNTIMES)}",
    )
    parser.add_argument(
        "--latency-batch",
        type=INT,
        default=reward.latency_batch,
        help=f"also time this batch size (default {reward.latency_batch})",
    )
    parser.add_argument(
        "--latency-threads",
        type=INT,
        default=reward.latency_threads,
        help=f"CPU threads (default {reward.latency_threads})",
    )
    parser.add_argument(
        "--latency-repeats",
        type=INT,
        default=reward.latency_repeats,
        help=f"timed passes ({reward.latency_repeats})",
    )


def _shape(text: str) -> tuple[int, int, int]:
    parts = text.split(",")
    if len(parts) != 3 or not all(p.strip().isascii() and p.strip().isdigit() for p in parts):
        raise BlockQNNError(f"--input-shape {clip(text, quote=True)}: expected C,H,W integers")
    if any(len(p.strip()) > 9 for p in parts):
        raise BlockQNNError(f"--input-shape {clip(text, quote=True)}: sizes out of range")
    c, h, w = (int(p) for p in parts)
    return c, h, w


def run(args: argparse.Namespace) -> int:
    """Describe one block: its layers, and the cost of the network it is priced in."""
    from blockqnn.space.nsc.block import Block
    from blockqnn.space.nsc.cost import network_cost

    block = Block.parse(args.block, max_depth=args.max_depth)
    config, priced = _network(args)
    cost = network_cost(block, config)
    latency = _latency(args, block, config) if args.latency is not None else None
    if args.svg:
        from blockqnn.files import SVG, check_replace, write_atomic
        from blockqnn.space.draw import block_svg

        check_replace(Path(args.svg), "--svg", "an SVG drawing", SVG)
        write_atomic(Path(args.svg), block_svg(block, title=block.hash[:12]), "--svg")
    if args.json:
        _print_json(args, block, config, priced, cost, latency)
    else:
        _print_text(args, block, config, priced, cost, latency)
    return 0


def _network(args: argparse.Namespace) -> tuple[Any, str]:
    """The network the block is priced in (the defaults', or the run's, with the flags
    given), and which settings those are, in words."""
    from dataclasses import replace

    from blockqnn.settings.config import NetworkConfig

    if args.run is not None:
        from blockqnn.store.db import Store

        with Store.open(args.run, readonly=True) as store:
            config = store.config().network
        priced = f"the network of run {args.run}"
    else:
        config, priced = NetworkConfig(), "the default search-time network (--run RUN: a run's)"
    given = {
        "filters": args.filters,
        "blocks_per_stage": args.blocks_per_stage,
        "input_shape": _shape(args.input_shape) if args.input_shape is not None else None,
        "num_classes": args.num_classes,
        "head": args.head,
    }
    changed = {k: v for k, v in given.items() if v is not None}
    if changed:
        config = replace(config, **changed)
        flags = ", ".join("--" + k.replace("_", "-") for k in changed)
        priced += f", with {flags} as given"
    return config, priced


def _print_json(
    args: argparse.Namespace, block: Any, config: Any, priced: str, cost: Any, latency: Any
) -> None:
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
        "priced": priced,
    }
    if args.svg:
        payload["svg"] = str(args.svg)
    if latency is not None:
        payload["latency"] = {"runtime": args.latency, **asdict(latency)}
    json.dump(payload, sys.stdout)
    sys.stdout.write("\n")


def _print_text(
    args: argparse.Namespace, block: Any, config: Any, priced: str, cost: Any, latency: Any
) -> None:
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
        f"{config.num_classes} classes, {config.head} head",
        markup=False,
    )
    console.print(f"priced    {priced}", markup=False, highlight=False, soft_wrap=True)
    console.print(f"params    {cost.params:,}")
    console.print(f"FLOPs     {cost.flops:,} per image (forward, multiply-add = 2)")
    console.print(f"density   {cost.density:.3f} (edges / nodes)")
    if latency is not None:
        console.print(f"latency   {_describe(latency, args.latency)}")
    if args.svg:
        console.print(f"diagram   {args.svg}")


def _latency(args: argparse.Namespace, block: Any, network: Any) -> Any:
    """Measured now (not cached: `show` is for looking, and the figure is fresh)."""
    from blockqnn.evaluate.latency import LatencyError, LatencySettings, check_runtime, measure
    from blockqnn.settings.bounds import SETTINGS, check

    check_runtime(args.latency)
    check("--latency-batch", args.latency_batch, SETTINGS["reward.latency_batch"])
    check("--latency-threads", args.latency_threads, SETTINGS["reward.latency_threads"])
    check("--latency-repeats", args.latency_repeats, SETTINGS["reward.latency_repeats"])
    settings = LatencySettings(
        args.latency, args.latency_batch, args.latency_threads, repeats=args.latency_repeats
    )
    try:
        return measure(block, network, settings)
    except LatencyError as exc:
        raise BlockQNNError(f"--latency {args.latency}: not measured: {exc}") from None


def _describe(latency: Any, runtime: str) -> str:
    """`1.234 ms median at batch 1 (IQR 0.010 ms, CV 1.2%), cpu, ...`."""
    text = (
        f"{latency.median_ms:.3f} ms median at batch 1 (IQR {latency.iqr_ms:.3f} ms, "
        f"CV {100 * latency.cv:.1f}%)"
    )
    if latency.batch > 1:
        text += f", {latency.batch_median_ms:.3f} ms at batch {latency.batch}"
    return f"{text}; {runtime} on {latency.device}"
