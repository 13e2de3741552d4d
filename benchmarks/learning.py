"""Benchmark: does Q-learning learn with real early-stop rewards? Q-learning vs random search.

Runs real searches (the `blockqnn search` loop, the early-stop trainer, the local executor)
on the digits demo's settings (`examples/digits.toml`) for several seeds, with Q-learning
and with random search, and compares, per seed:

- Q-learning's mean reward in its epsilon = 1 stage (random proposals) and in its last
  stage (mostly greedy), over trained trials (reused duplicates left out, as in the report);
- random search's mean reward over the same trained positions as that last stage.

Learning shows as last stage > first stage and last stage > random at the same positions.
Each search process trains with one thread, and `--workers` searches run at once.

    python benchmarks/learning.py                       # 5 seeds, budget 64, both strategies
    python benchmarks/learning.py --seeds 8 --budget 64 --json
    python benchmarks/learning.py --preset paper        # the paper's constants
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.strategies import ci95  # noqa: E402  (the strategies benchmark's interval)


def run_one(task: tuple[str, int, int, str, str]) -> dict[str, Any]:
    """One real search; the trained trials' rewards in order and their epsilons."""
    import torch

    from blockqnn.search import run_search
    from blockqnn.settings.config import Config, merge
    from blockqnn.store.db import TRAINED, Store

    torch.set_num_threads(1)
    agent, budget, seed, preset, where = task
    base = Config.from_toml(ROOT / "examples" / "digits.toml")
    # no evaluation cache: every search trains its own blocks (and the user's cache is untouched)
    search = {"agent": agent, "budget": budget, "seed": seed, "cache": "off"}
    overrides: dict[str, Any] = {"search": search}
    if preset:
        overrides["agent"] = {"preset": preset}
    config = merge(base, overrides)
    run_dir = Path(where) / f"{agent}-{seed}"
    start = time.perf_counter()
    run_search(run_dir, config, device="cpu")
    with Store.open(run_dir, readonly=True) as store:
        trained = [t for t in store.trials() if t.status in TRAINED]
    return {
        "agent": agent,
        "seed": seed,
        "rewards": [float(t.reward or 0.0) for t in trained],
        "epsilons": [t.info.get("epsilon") for t in trained],
        "seconds": time.perf_counter() - start,
        "run_dir": str(run_dir),
    }


def compare(q: dict[str, Any], r: dict[str, Any]) -> dict[str, Any]:
    eps = q["epsilons"]
    first = [x for x, e in zip(q["rewards"], eps, strict=True) if e == eps[0]]
    last_positions = [i for i, e in enumerate(eps) if e == eps[-1]]
    last = [q["rewards"][i] for i in last_positions]
    random_same = [r["rewards"][i] for i in last_positions if i < len(r["rewards"])]
    return {
        "seed": q["seed"],
        "first_epsilon": eps[0],
        "last_epsilon": eps[-1],
        "first_stage_mean": statistics.fmean(first),
        "last_stage_mean": statistics.fmean(last),
        "last_stage_n": len(last),
        "random_same_positions_mean": statistics.fmean(random_same),
        "qlearning_best": max(q["rewards"]),
        "random_best": max(r["rewards"]),
        "seconds": q["seconds"] + r["seconds"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budget", type=int, default=64)
    parser.add_argument("--preset", default="", help="[agent] preset of the Q-learning runs")
    parser.add_argument("--workers", type=int, default=2, help="searches at once")
    parser.add_argument("--keep", default="", help="keep the runs in this directory")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    where = args.keep or tempfile.mkdtemp(prefix="blockqnn-learning-")
    Path(where).mkdir(parents=True, exist_ok=True)
    tasks = [
        (agent, args.budget, seed, args.preset if agent == "qlearning" else "", where)
        for seed in range(args.seeds)
        for agent in ("qlearning", "random")
    ]
    start = time.perf_counter()
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(args.workers) as pool:
        results = pool.map(run_one, tasks, chunksize=1)
    by = {(r["agent"], r["seed"]): r for r in results}
    rows = [compare(by[("qlearning", s)], by[("random", s)]) for s in range(args.seeds)]
    summary = {
        key: {
            "mean": statistics.fmean(row[key] for row in rows),
            "ci95": ci95([row[key] for row in rows]),
        }
        for key in (
            "first_stage_mean",
            "last_stage_mean",
            "random_same_positions_mean",
            "qlearning_best",
            "random_best",
        )
    }
    report = {
        "config": "examples/digits.toml",
        "budget": args.budget,
        "seeds": args.seeds,
        "preset": args.preset or "default",
        "wall_seconds": time.perf_counter() - start,
        "per_seed": rows,
        "summary": summary,
        "runs": where,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(
        f"digits demo settings, budget {args.budget}, {args.seeds} seeds, "
        f"preset {report['preset']}, {report['wall_seconds']:.0f} s wall; runs in {where}"
    )
    print(
        f"{'seed':>4} {'eps=1 stage':>11} {'last stage':>10} {'random, same positions':>23} "
        f"{'q best':>7} {'random best':>11}"
    )
    for row in rows:
        print(
            f"{row['seed']:>4} {row['first_stage_mean']:>11.4f} {row['last_stage_mean']:>10.4f} "
            f"{row['random_same_positions_mean']:>23.4f} {row['qlearning_best']:>7.4f} "
            f"{row['random_best']:>11.4f}"
        )
    s = summary
    print(
        f"mean {s['first_stage_mean']['mean']:>11.4f} {s['last_stage_mean']['mean']:>10.4f} "
        f"{s['random_same_positions_mean']['mean']:>23.4f} {s['qlearning_best']['mean']:>7.4f} "
        f"{s['random_best']['mean']:>11.4f}"
    )
    print(
        f"ci95 {s['first_stage_mean']['ci95']:>11.4f} {s['last_stage_mean']['ci95']:>10.4f} "
        f"{s['random_same_positions_mean']['ci95']:>23.4f} {s['qlearning_best']['ci95']:>7.4f} "
        f"{s['random_best']['ci95']:>11.4f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
