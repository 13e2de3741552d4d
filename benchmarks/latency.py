"""Latency: what measuring costs, whether FLOPs predict latency, and the latency reward.

Three parts, each printed as a table (`--json`: one object):

(a) cost and repeatability: the same block's deployment-size network measured `--repeats`
    times from scratch (build, warm-up, timed passes; no cache): the wall time of one
    measurement (what a candidate costs in a search) and the coefficient of variation of
    the medians it reports (how repeatable the figure is).
(b) FLOPs against latency: `--blocks` random blocks of the NSC space (uniform walks, the
    random strategy's), their analytic FLOPs and their measured CPU latency at the
    deployment size; Spearman's rank correlation (scipy where installed, else NumPy ranks:
    ties get their mean rank in both) of FLOPs, and of parameters, with latency.
(c) the latency reward against the paper reward: two real digits searches (the demo's
    settings: Q-learning, the same seed and budget), one with
    `--reward mnasnet`, one with the paper reward; both record the latency (the paper run
    with `latency_device = "cpu"`). Prints each run's best block by reward with its latency
    and accuracy, and the medians over its top 5. The MnasNet target is the latency of the
    reference network (one 3x3 conv block, the paper reward's FLOPs reference) unless
    `--target-ms` is given.

    python benchmarks/latency.py --parts a,b,c                 # all three, the defaults
    python benchmarks/latency.py --parts b --blocks 5          # a check at a tiny size

Defaults: batch 1, 1 thread, 5 warm-up and 20 timed passes, the CIFAR deployment network
(3x32x32 input, F = 32, N = 2); (c) searches digits (F = 8, N = 1) and measures its
networks at that size with 1x8x8 input. Run it on an otherwise idle machine: other jobs move
every timing.
"""

from __future__ import annotations

import argparse
import importlib
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the checkout

from benchmarks.common import dumps
from blockqnn.cli.args import integer
from blockqnn.errors import BlockQNNError
from blockqnn.evaluate.latency import LatencyError, LatencySettings, measure, spread
from blockqnn.final.pick import trial_latency
from blockqnn.settings.config import Config, NetworkConfig, merge
from blockqnn.space.nsc.block import Block
from blockqnn.space.nsc.cost import REFERENCE_BLOCK, network_cost
from blockqnn.space.nsc.space import NSCSpace
from blockqnn.store.db import Store

BLOCK_A = "1,1,3,0,0; 2,1,5,0,0; 3,5,0,1,2; 4,2,3,0,0; 5,6,0,3,4"  # multi-branch, 5 layers


def _ranks(values: list[float]) -> np.ndarray:
    """Ranks from 1, ties sharing their mean rank (ours; scipy.stats.rankdata does this)."""
    a = np.asarray(values, dtype=float)
    order = a.argsort(kind="stable")
    ranks = np.empty(len(a))
    ranks[order] = np.arange(1, len(a) + 1)
    for value in np.unique(a):
        tied = a == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(x: list[float], y: list[float]) -> float:
    try:  # scipy comes with scikit-learn; imported by name: it ships no type stubs
        stats = importlib.import_module("scipy.stats")
        return float(stats.spearmanr(x, y).statistic)
    except ImportError:
        return float(np.corrcoef(_ranks(x), _ranks(y))[0, 1])


def part_a(network: NetworkConfig, settings: LatencySettings, repeats: int) -> dict[str, Any]:
    block = Block.parse(BLOCK_A)
    walls, medians = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = measure(block, network, settings)
        walls.append((time.perf_counter() - t0) * 1000)
        medians.append(result.median_ms)
    median, iqr, cv = spread(medians)
    return {
        "block": BLOCK_A,
        "repeats": repeats,
        "measurement_ms_median": statistics.median(walls),
        "measurement_ms_min": min(walls),
        "measurement_ms_max": max(walls),
        "latency_ms_median": median,
        "latency_ms_iqr": iqr,
        "latency_cv_over_repeats": cv,
    }


def part_b(
    network: NetworkConfig, settings: LatencySettings, blocks: int, seed: int
) -> dict[str, Any]:
    space = NSCSpace()
    rng = random.Random(seed)
    seen: dict[str, Block] = {}
    while len(seen) < blocks:
        block = space.to_candidate(space.sample(rng))
        seen.setdefault(block.hash, block)
    rows = []
    for block in seen.values():
        cost = network_cost(block, network)
        rows.append((cost.flops, cost.params, measure(block, network, settings).median_ms))
    flops, params, ms = (list(col) for col in zip(*rows, strict=True))
    return {
        "blocks": blocks,
        "spearman_flops_latency": spearman(flops, ms) if blocks > 1 else float("nan"),
        "spearman_params_latency": spearman(params, ms) if blocks > 1 else float("nan"),
        "latency_ms_min": min(ms),
        "latency_ms_median": statistics.median(ms),
        "latency_ms_max": max(ms),
    }


def _search(run: Path, config: Config) -> dict[str, Any]:
    from blockqnn.search import run_search

    t0 = time.perf_counter()
    run_search(run, config)
    seconds = time.perf_counter() - t0
    with Store.open(run, readonly=True) as store:
        top = store.top(5)
    best = top[0]
    return {
        "reward": config.reward.name,
        "seconds": seconds,
        "best_block": best.candidate,
        "best_latency_ms": trial_latency(best),
        "best_accuracy": best.accuracy,
        "top5_median_latency_ms": statistics.median(trial_latency(t) or 0.0 for t in top),
        "top5_median_accuracy": statistics.median(t.accuracy or 0.0 for t in top),
    }


def part_c(args: argparse.Namespace, cache: Path) -> dict[str, Any]:
    base = merge(
        Config(),
        {
            # no evaluation cache: each search trains and times every block it proposes
            "search": {"budget": args.budget, "seed": args.seed, "cache": "off"},
            "data": {"dataset": "digits", "cache_dir": str(cache)},
            "network": {"filters": 8, "blocks_per_stage": 1},
            "train": {"epochs": 3, "batch_size": 64},
            "reward": {
                "latency_device": "cpu",
                "latency_threads": args.threads,
                "latency_repeats": args.timed,
                "latency_warmup": args.warmup,
            },
        },
    )
    target = args.target_ms
    if target <= 0:
        digits = NetworkConfig(input_shape=(1, 8, 8), filters=8, blocks_per_stage=1)
        settings = LatencySettings("cpu", 1, args.threads, args.warmup, args.timed)
        target = measure(Block.parse(REFERENCE_BLOCK), digits, settings).median_ms
    out: dict[str, Any] = {"target_ms": target, "budget": args.budget}
    with tempfile.TemporaryDirectory() as tmp:
        latency_cfg = merge(base, {"reward": {"name": "mnasnet", "latency_target_ms": target}})
        out["mnasnet"] = _search(Path(tmp) / "mnasnet", latency_cfg)
        out["paper"] = _search(Path(tmp) / "paper", base)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="a,b,c", help="which parts: a, b, c")
    parser.add_argument(
        "--repeats", type=integer(1), default=10, help="(a) measurements of one block"
    )
    parser.add_argument("--blocks", type=integer(2), default=200, help="(b) random blocks")
    parser.add_argument("--budget", type=integer(1), default=32, help="(c) blocks per search")
    parser.add_argument("--target-ms", type=float, default=0.0, help="(c) MnasNet target")
    parser.add_argument("--filters", type=integer(1), default=32, help="(a, b) deployment F")
    parser.add_argument(
        "--blocks-per-stage", type=integer(1), default=2, help="(a, b) deployment N"
    )
    parser.add_argument(
        "--runtime", choices=("cpu", "cuda", "onnxruntime"), default="cpu", help="(a, b)"
    )
    parser.add_argument("--threads", type=integer(1), default=1)
    parser.add_argument("--warmup", type=integer(0), default=5)
    parser.add_argument("--timed", type=integer(1), default=20, help="timed passes per measurement")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))
    if not parts or not parts <= {"a", "b", "c"}:
        parser.error(f"--parts {args.parts}: a comma-separated choice of a, b, c")
    network = NetworkConfig(filters=args.filters, blocks_per_stage=args.blocks_per_stage)
    settings = LatencySettings(args.runtime, 1, args.threads, args.warmup, args.timed)
    out: dict[str, Any] = {
        "machine": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "network": network.to_dict(),
        "settings": vars(args),
    }
    try:  # a runtime this machine lacks (cuda, onnxruntime) or cannot run: one line
        if "a" in parts:
            out["a"] = part_a(network, settings, args.repeats)
        if "b" in parts:
            out["b"] = part_b(network, settings, args.blocks, args.seed)
        if "c" in parts:
            with tempfile.TemporaryDirectory() as cache:  # decoded digits, this run's own
                out["c"] = part_c(args, Path(cache))
    except (BlockQNNError, LatencyError) as exc:
        print(f"latency: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(dumps(out))
        return 0
    f, n = args.filters, args.blocks_per_stage
    print(f"{args.runtime}, {args.threads} thread(s), F = {f}, N = {n}, batch 1")
    if "a" in out:
        a = out["a"]
        print(
            f"(a) one measurement ({args.warmup} warm-up + {args.timed} timed passes, build "
            f"included): {a['measurement_ms_median']:.1f} ms median "
            f"[{a['measurement_ms_min']:.1f}, {a['measurement_ms_max']:.1f}] over "
            f"{a['repeats']}; latency {a['latency_ms_median']:.3f} ms, CV of the medians "
            f"{100 * a['latency_cv_over_repeats']:.1f}%"
        )
    if "b" in out:
        b = out["b"]
        print(
            f"(b) {b['blocks']} random blocks: Spearman FLOPs-latency "
            f"{b['spearman_flops_latency']:.3f}, params-latency "
            f"{b['spearman_params_latency']:.3f}; latency {b['latency_ms_min']:.3f} / "
            f"{b['latency_ms_median']:.3f} / {b['latency_ms_max']:.3f} ms (min / median / max)"
        )
    if "c" in out:
        c = out["c"]
        print(f"(c) digits, {c['budget']} blocks each, MnasNet target {c['target_ms']:.3f} ms")
        print("    reward   best latency ms  best accuracy  top-5 median ms  top-5 accuracy  s")
        for name in ("mnasnet", "paper"):
            r = c[name]
            print(
                f"    {name:8s} {r['best_latency_ms'] or 0:15.3f}  {r['best_accuracy']:13.4f}  "
                f"{r['top5_median_latency_ms']:15.3f}  {r['top5_median_accuracy']:14.4f}  "
                f"{r['seconds']:.0f}"
            )
            print(f"             best block: {r['best_block']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
