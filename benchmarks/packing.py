"""Packing: evaluations per hour of the local executor with 1, 2, 4 ... workers on one device.

Each run is a real search (early-stop training, the random strategy with a fixed seed, so
every worker count trains the same blocks) through `run_search` with `--executor local
--workers K`; K = 1 is the in-process executor, K > 1 the process pool on the same device
(`--device cuda` puts every worker on GPU 0: packing one GPU). Runs are interleaved over the
worker counts and repeated, so a machine whose load changes affects every count alike.

    python benchmarks/packing.py                                  # CPU, digits, 1 vs 2 workers
    python benchmarks/packing.py --device cuda --dataset PATH --workers 1,2,4 --epochs 2 --json

Measures, per run: `steady` = evaluations finished after the first K (one per worker: the
first round includes each worker's first network, i.e. kernel selection and, on CUDA, graph
capture of a new shape) / the time from the K-th to the last, x 3600: what a long search
sustains; `end_to_end` = all evaluations / the whole call (worker start-up, data shipping
and the first round included). The ratio is each run's steady rate over the 1-worker run of
the same repeat: median [min, max] over `--repeats`. On the CPU, one worker uses every core
and K workers divide them (at least one thread each); on the CPU a further row runs one
worker limited to one thread, which separates the gain of running several networks at once
from that of giving each network fewer threads (small networks waste much of a second
thread on synchronisation, the more so on a machine that other jobs load).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the checkout

from benchmarks.common import int_list
from blockqnn.cli.args import integer
from blockqnn.errors import BlockQNNError
from blockqnn.search import SearchEvent, run_search
from blockqnn.settings.config import Config, merge
from blockqnn.store.schema import CACHE_WORKER


def _config(args: argparse.Namespace, workers: int, threads: int = 0) -> Config:
    train: dict[str, Any] = {"epochs": args.epochs, "batch_size": args.batch_size}
    if threads:  # the setting the trainer applies before every fit (train.threads)
        train["threads"] = str(threads)
    return merge(
        Config(),
        {
            # no evaluation cache: every run trains its blocks (the same blocks in each run)
            "search": {"budget": args.budget, "agent": "random", "seed": args.seed,
                       "workers": workers, "cache": "off"},
            "data": {"dataset": args.dataset, "train_samples": args.train_samples,
                     "cache_dir": args.cache_dir},
            "network": {"filters": args.filters, "blocks_per_stage": args.blocks_per_stage},
            "train": train,
        },
    )  # fmt: skip


def measure(args: argparse.Namespace, workers: int, threads: int = 0) -> dict[str, Any]:
    """One search with `workers` workers: its rates and what it ran on. `threads` > 0 (one
    in-process worker only) limits torch to that many threads for this run."""
    stamps: list[float] = []
    devices: set[str] = set()
    modes: set[str] = set()
    cached: list[bool] = []

    def on_event(e: SearchEvent) -> None:
        if e.kind in ("complete", "failed") and e.trial is not None:
            stamps.append(time.perf_counter())
            cached.append(e.trial.worker.startswith(CACHE_WORKER))
            result = e.trial.result or {}
            devices.add(str(result.get("device", "")))
            modes.add(str(result.get("mode", "")))

    device = "cuda:0" if args.device == "cuda" else args.device
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        summary = run_search(
            Path(tmp) / "run", _config(args, workers, threads), device=device, on_event=on_event
        )
        total = time.perf_counter() - t0
    k = min(workers, len(stamps) - 1)
    steady = (len(stamps) - k) / (stamps[-1] - stamps[k - 1]) * 3600 if k >= 1 else 0.0
    return {
        "workers": workers,
        "steady_per_hour": steady,
        "end_to_end_per_hour": len(stamps) / total * 3600,
        "seconds": total,
        "evaluations": len(stamps),
        "from_cache": sum(cached),  # results this run did not train: none with the cache off
        "failed": summary.failed,
        "devices": sorted(devices),
        "modes": sorted(modes),
    }


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (all workers on GPU 0)")
    parser.add_argument("--dataset", default="digits", help="digits, cifar10, a folder, .npz")
    parser.add_argument("--cache-dir", default="", help="decoded-array cache (default: ~)")
    parser.add_argument(
        "--workers", type=int_list(1), default="1,2", help="comma-separated worker counts"
    )
    parser.add_argument("--budget", type=integer(2), default=12, help="evaluations per run")
    parser.add_argument("--repeats", type=integer(1), default=3, help="interleaved repeats")
    parser.add_argument("--epochs", type=integer(1), default=2, help="early-stop epochs")
    parser.add_argument("--filters", type=integer(1), default=8, help="first-stage width F")
    parser.add_argument("--blocks-per-stage", type=integer(1), default=1, help="N")
    parser.add_argument("--batch-size", type=integer(1), default=256)
    parser.add_argument("--train-samples", type=integer(0), default=0, help="0 = all")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random strategy")
    parser.add_argument(
        "--one-thread-row",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also run 1 worker limited to 1 thread (default: on the CPU): separates the "
        "gain of more processes from that of fewer threads per network",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    counts: list[int] = args.workers
    if 1 not in counts:
        counts.insert(0, 1)  # the baseline, measured in the same run
    if args.budget < 2 * max(counts):
        parser.error(f"--budget {args.budget}: at least 2 x the largest worker count")

    import torch

    one_thread = args.device == "cpu" if args.one_thread_row is None else args.one_thread_row
    # label -> (workers, threads); "1" is the baseline: the in-process executor as users get it
    variants = {str(k): (k, 0) for k in counts}
    if one_thread:
        variants = {"1": (1, 0), "1 (1 thread)": (1, 1), **variants}
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label in variants}
    try:  # a setting or data set blockqnn refuses: one line, before any search where it can
        for k, threads in variants.values():
            _config(args, k, threads)
        for _ in range(args.repeats):
            for label, (k, threads) in variants.items():
                runs[label].append(measure(args, k, threads))
    except BlockQNNError as exc:
        print(f"packing: {exc}", file=sys.stderr)
        return 2
    rows = []
    for label in variants:
        steady = [r["steady_per_hour"] for r in runs[label]]
        pairs = zip(runs[label], runs["1"], strict=True)
        ratios = [r["steady_per_hour"] / b["steady_per_hour"] for r, b in pairs]
        k = variants[label][0]
        rows.append({
            "workers": label,
            "steady_per_hour": spread(steady),
            "end_to_end_per_hour": spread([r["end_to_end_per_hour"] for r in runs[label]]),
            "ratio_vs_1": spread(ratios),
            "failed": sum(r["failed"] for r in runs[label]),
            "processes": k,
            "devices": sorted({d for r in runs[label] for d in r["devices"]}),
            "modes": sorted({m for r in runs[label] for m in r["modes"]}),
        })  # fmt: skip
    report = {
        "benchmark": "packing",
        "rows": rows,
        "runs": runs,
        "n": args.repeats,
        "settings": {k: v for k, v in vars(args).items() if k != "json"},
        "device": args.device,
        "device_name": torch.cuda.get_device_name(0)
        if args.device.startswith("cuda") and torch.cuda.is_available()
        else platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    if args.json:
        json.dump(report, sys.stdout)
        sys.stdout.write("\n")
        return 0
    print(
        f"packing benchmark: {report['device_name']} ({args.device}), torch {torch.__version__}, "
        f"{args.dataset}, F={args.filters} N={args.blocks_per_stage}, {args.epochs} epochs, "
        f"{args.budget} evaluations x {args.repeats} repeats (median [min, max])"
    )
    print(f"{'workers':>13} {'steady evals/h':>24} {'end-to-end evals/h':>26} {'ratio vs 1':>20}"
          f"  device")  # fmt: skip
    for row in rows:
        s, e, r = row["steady_per_hour"], row["end_to_end_per_hour"], row["ratio_vs_1"]
        print(
            f"{row['workers']:>13} {s['median']:>8.0f} [{s['min']:>6.0f}, {s['max']:>6.0f}] "
            f"{e['median']:>9.0f} [{e['min']:>6.0f}, {e['max']:>6.0f}] "
            f"{r['median']:>7.2f} [{r['min']:.2f}, {r['max']:.2f}]  {', '.join(row['devices'])}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
