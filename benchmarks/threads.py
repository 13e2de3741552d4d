"""Benchmark: training speed of each `--threads` setting, on an idle and on a shared machine.

What it answers (issue 12): which default keeps a search fast when another job holds a core.
For each setting (`auto`, `all`, `physical`, `minus-one` and 1 thread) it trains the
search-time network of the digits demo (`examples/digits.toml`: F = 8, N = 1, batch 64) with
`blockqnn.train.loop.fit` and reports training images/s, twice: on the machine as it is
("idle"), and with `--busy` CPU-burning processes that this script starts itself ("busy").
Each setting is resolved to a thread count (`blockqnn.train.threads.resolve`) while the condition
holds, so `auto` sees the competing process. The last column is the rate over the default
setting's (`blockqnn.train.DEFAULT_THREADS`) in the same condition: above 1 means that setting
would have been the faster default there.

Settings are interleaved within each repeat; the figure is the median over `--repeats`, with
the minimum and maximum. Run it on a machine with nothing else running, or the "idle" rows
are not idle:

    python benchmarks/threads.py                              # digits, 3 epochs x 3 repeats
    python benchmarks/threads.py --busy 2 --repeats 5 --json
    python benchmarks/threads.py --busy-kind torch    # beside another PyTorch job
    python benchmarks/threads.py --epochs 1 --train-samples 128 --repeats 1   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the checkout

from blockqnn.cli.args import integer
from blockqnn.data import load_arrays
from blockqnn.errors import BlockQNNError
from blockqnn.settings.config import Config, merge
from blockqnn.settings.threads import DEFAULT as DEFAULT_THREADS
from blockqnn.space.nsc.builder import build_network
from blockqnn.train import threads
from blockqnn.train.devices import resolve_device
from blockqnn.train.loop import fit
from blockqnn.train.recipe import Recipe

SETTINGS = ("auto", "all", "physical", "minus-one", "1")
BLOCK = "1,1,3,0,0; 2,1,3,1,0; 3,5,0,2,0; 4,7,0,0,0"  # a small multi-branch block
SETTLE_S = 1.0  # after starting the burners: let them show up in /proc/stat


def _burn() -> None:  # pragma: no cover - runs in the competing process until killed
    x = 0
    while True:
        x = (x * 1103515245 + 12345) & 0xFFFFFFFF


def _burn_torch(threads: int = 0) -> None:  # pragma: no cover - another PyTorch job
    torch.set_num_threads(threads or os.cpu_count() or 1)
    a = torch.randn(384, 384)
    while True:
        a = torch.tanh(a @ a)


def _rate(data: Any, recipe: Any, config: Config, epochs: int) -> float:
    torch.manual_seed(0)
    net = config.network
    model = build_network(
        BLOCK,
        filters=net.filters,
        blocks_per_stage=net.blocks_per_stage,
        num_classes=data.num_classes,
        input_shape=data.input_shape,
    )
    result = fit(model, data, recipe, epochs=epochs, eval_split=None)
    assert result.ok, result.error
    return result.images_per_second


def measure(args: argparse.Namespace, busy: int) -> list[dict[str, Any]]:
    """Every setting's rate with `busy` competing processes running."""
    ctx = multiprocessing.get_context("spawn")
    target, targs = {
        "python": (_burn, ()),
        "torch": (_burn_torch, ()),
        "torch1": (_burn_torch, (1,)),
    }[args.busy_kind]
    burners = [ctx.Process(target=target, args=targs, daemon=True) for _ in range(busy)]
    for p in burners:
        p.start()
    try:
        if busy:
            time.sleep(SETTLE_S)
        counts = {s: threads.resolve(s, environ={}) for s in SETTINGS}
        config = merge(
            Config(),
            {
                "data": {"dataset": args.dataset, "train_samples": args.train_samples},
                "network": {"filters": 8, "blocks_per_stage": 1},
                "train": {"batch_size": args.batch_size, "lr_step_epochs": 5},
            },
        )
        arrays = load_arrays(config.data)
        data = arrays.to_device(resolve_device("cpu"))
        recipe = replace(
            Recipe.from_config(config.train, arrays.name, arrays.input_shape), compile=False
        )
        rates: dict[str, list[float]] = {s: [] for s in SETTINGS}
        for _ in range(args.repeats):
            for s in SETTINGS:
                # the trainer sets torch's threads from the setting in force before every
                # fit (threads.configure_threads): choose the count there, as --threads would
                threads.choose(str(counts[s]), override=True)
                if not rates[s]:  # the first fit at a thread count: untimed warm-up
                    _rate(data, recipe, config, 1)
                rates[s].append(_rate(data, recipe, config, args.epochs))
    finally:
        threads.reset()
        for p in burners:
            p.kill()
            p.join()
    default = statistics.median(rates[DEFAULT_THREADS])
    rows = []
    for s in SETTINGS:
        median = statistics.median(rates[s])
        rows.append(
            {
                "condition": f"{busy} busy ({args.busy_kind})" if busy else "idle",
                "setting": s,
                "threads": counts[s],
                "images_per_s": median,
                "min": min(rates[s]),
                "max": max(rates[s]),
                "vs_default": median / default if default > 0 else 0.0,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--dataset", default="digits", help="any blockqnn dataset (digits)")
    parser.add_argument(
        "--train-samples", type=integer(0), default=0, help="training images; 0 = all"
    )
    parser.add_argument("--batch-size", type=integer(1), default=64)
    parser.add_argument("--epochs", type=integer(1), default=3, help="timed epochs per measurement")
    parser.add_argument("--repeats", type=integer(1), default=3, help="interleaved repeats")
    parser.add_argument(
        "--busy", type=integer(0), default=1, help="competing CPU-burning processes"
    )
    parser.add_argument(
        "--busy-kind",
        choices=("python", "torch", "torch1"),
        default="python",
        help="what competes: a Python loop, a PyTorch job on every core, or on one thread",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    try:
        rows = measure(args, 0) + measure(args, args.busy)
    except BlockQNNError as exc:  # a data set or setting blockqnn refuses: one line
        print(f"threads: {exc}", file=sys.stderr)
        return 2
    report = {
        "rows": rows,
        "default": DEFAULT_THREADS,
        "cores": threads.visible_cores(),
        "physical_cores": threads.physical_cores(),
        "cpu": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "dataset": args.dataset,
        "epochs": args.epochs,
        "repeats": args.repeats,
        "batch_size": args.batch_size,
    }
    if args.json:
        json.dump(report, sys.stdout)
        sys.stdout.write("\n")
        return 0
    print(
        f"threads benchmark: {args.dataset}, F=8 N=1, batch {args.batch_size}, "
        f"{args.epochs} epochs x {args.repeats} repeats (median [min, max]); "
        f"{report['cores']} cores ({report['physical_cores']} physical); "
        f"default {DEFAULT_THREADS!r}"
    )
    print(f"{'condition':<16} {'setting':<10} {'threads':>7} {'images/s':>9} {'min':>8} "
          f"{'max':>8} {'vs default':>10}")  # fmt: skip
    for r in rows:
        print(
            f"{r['condition']:<16} {r['setting']:<10} {r['threads']:>7} "
            f"{r['images_per_s']:>9.0f} {r['min']:>8.0f} {r['max']:>8.0f} "
            f"{r['vs_default']:>10.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
