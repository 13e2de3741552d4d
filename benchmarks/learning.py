"""Benchmark: strategies with real early-stop rewards: Q-learning, evolution and random search.

Runs real searches (the `blockqnn search` loop, the early-stop trainer, in process) for several
seeds and each strategy, then trains each search's pick (its best reward) longer with the
final recipe and tests it. Tasks:

- `--task cifar10` (default): reduced CIFAR-10 from the shared data's JPEG archive
  (`../shared/data/cifar10-jpg.tar.gz`, unpacked once into `.cache/cifar10-jpg`), e.g. 10,000
  training and 2,000 validation images, F = 8, N = 1, a few epochs per candidate: a task on
  which blocks differ (digits scores nearly every block 0.95-0.98).
- `--task digits`: the digits demo's settings (`examples/digits.toml`).

Per seed and strategy: the mean reward over the positions of Q-learning's epsilon stages
(the same positions for every strategy), the last-quarter mean, the best reward, and the
pick's test accuracy after `--final-epochs` of the final recipe (cosine schedule). Searches
run one at a time, in process, with `--threads` (default `auto`, load-aware). The earlier
version ran two searches at once, each after `torch.set_num_threads(1)`; but the search's
in-process executor applies `[train] threads` (`auto`) when it starts, so both searches,
started together on idle cores, took 2 threads each: 4 threads on 2 cores, stalling at every
operation (docs/benchmarks.md, threads). Set threads through the config, never torch.

    python benchmarks/learning.py --seeds 5 --budget 64 --epochs 4 --final-epochs 30
    python benchmarks/learning.py --seeds 1 --budget 6 --epochs 1 --train-samples 1000 \\
        --val-size 200 --final-epochs 1                      # a smoke run, a few minutes
    python benchmarks/learning.py --task digits --seeds 3    # the demo's settings
    python benchmarks/learning.py --from-rows runs/learning-cifar10/rows.jsonl  # a cut run
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import dumps  # noqa: E402
from benchmarks.strategies import DATA, ci95  # noqa: E402  (shared data and intervals)
from blockqnn.cli.args import integer  # noqa: E402

ARCHIVE = DATA / "cifar10-jpg.tar.gz"
UNPACKED = ROOT / ".cache" / "cifar10-jpg"  # git-ignored
STRATEGIES = ("qlearning", "evolution", "random")


def unpack(archive: Path = ARCHIVE, where: Path = UNPACKED) -> Path:
    """The archive's image folders (train/, test/), unpacked once."""
    done = where / ".unpacked"
    if not done.exists():
        where.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive) as tar:
            tar.extractall(where, filter="data")
        done.touch()
    return where


def reduced_cifar(args: argparse.Namespace) -> dict[str, Any]:
    """Config overrides of the reduced CIFAR-10 task: `--train-samples` training and
    `--val-size` validation images, F = 8, N = 1, `--epochs` early-stop epochs, `--threads`."""
    return {
        "data": {
            "dataset": str(unpack()),
            "train_samples": args.train_samples + args.val_size,
            "val_size": float(args.val_size),
        },
        "network": {"filters": 8, "blocks_per_stage": 1},
        "train": {
            "epochs": args.epochs,
            "batch_size": 128,
            "lr_step_epochs": max(args.epochs, 1),
            # [train] threads, not torch.set_num_threads: the search applies it when it starts
            "threads": args.threads,
        },
    }


def make_config(args: argparse.Namespace, agent: str, seed: int) -> Any:
    from blockqnn.settings.config import Config, merge

    if args.task == "digits":  # the demo's settings, at this benchmark's threads
        digits = Config.from_toml(ROOT / "examples" / "digits.toml")
        base = merge(digits, {"train": {"threads": args.threads}})
    else:
        base = merge(Config(), reduced_cifar(args))
    search = {"agent": agent, "budget": args.budget, "seed": seed, "cache": "off"}
    overrides: dict[str, Any] = {"search": search}
    if args.preset and agent == "qlearning":
        overrides["agent"] = {"preset": args.preset}
    return merge(base, overrides)


def run_one(args: argparse.Namespace, agent: str, seed: int, where: Path) -> dict[str, Any]:
    """One real search and its pick trained longer: the trained rewards in order, their
    epsilons (Q-learning) and the pick's test accuracy."""
    from blockqnn.final.train import train_final
    from blockqnn.search import run_search
    from blockqnn.settings.final import FinalSettings
    from blockqnn.space.nsc.block import Block
    from blockqnn.store.db import TRAINED, Store

    config = make_config(args, agent, seed)
    run_dir = where / f"{agent}-{seed}"
    start = time.perf_counter()
    run_search(run_dir, config, device="cpu")
    search_seconds = time.perf_counter() - start
    with Store.open(run_dir, readonly=True) as store:
        trained = [t for t in store.trials() if t.status in TRAINED]
    pick = max(trained, key=lambda t: float(t.reward or 0.0))
    settings = FinalSettings(epochs=args.final_epochs, lr=0.05, schedule="cosine", seed=seed)
    final = train_final(
        Block.parse(pick.candidate), config.data, config.network, settings, run_dir / "final"
    )
    return {
        "agent": agent,
        "seed": seed,
        "rewards": [float(t.reward or 0.0) for t in trained],
        "epsilons": [t.info.get("epsilon") for t in trained],
        "pick": pick.candidate,
        "pick_test_accuracy": final.test_accuracy,
        "search_seconds": search_seconds,
        "final_seconds": final.train_seconds,
    }


def stage_positions(epsilons: list[Any]) -> list[tuple[Any, list[int]]]:
    """Q-learning's epsilon stages as (epsilon, positions among the trained trials)."""
    stages: list[tuple[Any, list[int]]] = []
    for i, eps in enumerate(epsilons):
        if not stages or stages[-1][0] != eps:
            stages.append((eps, []))
        stages[-1][1].append(i)
    return stages


def describe(run: dict[str, Any], stages: list[tuple[Any, list[int]]]) -> dict[str, Any]:
    rewards = run["rewards"]
    k = max(1, len(rewards) // 4)
    return {
        "agent": run["agent"],
        "seed": run["seed"],
        "stage_means": [
            statistics.fmean([rewards[i] for i in where if i < len(rewards)] or [float("nan")])
            for _, where in stages
        ],
        "last_quarter_mean": statistics.fmean(rewards[-k:]),
        "best_reward": max(rewards),
        "pick_test_accuracy": run["pick_test_accuracy"],
        "seconds": run["search_seconds"] + run["final_seconds"],
    }


def search_rows(args: argparse.Namespace, names: list[str], where: Path) -> list[dict[str, Any]]:
    """Every seed's searches, described; each finished seed appended to `where/rows.jsonl`."""
    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for seed in range(args.seeds):
        runs = {name: run_one(args, name, seed, where) for name in names}
        first = runs.get("qlearning", runs[names[0]])
        stages = stage_positions(first["epsilons"])
        done = [describe(runs[name], stages) for name in names]
        rows += done
        with (where / "rows.jsonl").open("a") as out:  # complete seeds survive a cut run
            out.writelines(json.dumps(row) + "\n" for row in done)
        print(f"seed {seed} done, {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return rows


def summarise(rows: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    """Mean and 95% interval over seeds of each figure; Q-learning's seeds above random's."""
    summary: dict[str, Any] = {
        name: {
            key: {
                "mean": statistics.fmean(r[key] for r in rows if r["agent"] == name),
                "ci95": ci95([r[key] for r in rows if r["agent"] == name]),
            }
            for key in ("last_quarter_mean", "best_reward", "pick_test_accuracy")
        }
        for name in names
    }
    if {"qlearning", "random"} <= set(names):
        by_seed = {(r["agent"], r["seed"]): r["last_quarter_mean"] for r in rows}
        seeds = sorted({r["seed"] for r in rows})
        above = sum(by_seed[("qlearning", s)] > by_seed[("random", s)] for s in seeds)
        summary["qlearning_last_quarter_above_random"] = {"seeds": above, "of": len(seeds)}
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", choices=("cifar10", "digits"), default="cifar10")
    parser.add_argument("--seeds", type=integer(1), default=5)
    parser.add_argument("--budget", type=integer(1), default=64)
    parser.add_argument("--epochs", type=integer(1), default=4, help="cifar10: early-stop epochs")
    parser.add_argument("--train-samples", type=int, default=10_000, help="cifar10")
    parser.add_argument("--val-size", type=int, default=2_000, help="cifar10")
    parser.add_argument("--final-epochs", type=integer(1), default=30, help="the pick's training")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--threads", default="auto", help="[train] threads of every search")
    parser.add_argument("--preset", default="", help="[agent] preset of the Q-learning runs")
    parser.add_argument("--keep", default="", help="keep the runs in this directory")
    parser.add_argument("--from-rows", default="", help="summarise a run's rows.jsonl instead")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    names = args.strategies.split(",")
    start = time.perf_counter()
    if args.from_rows:
        lines = Path(args.from_rows).read_text().splitlines()
        rows = [json.loads(line) for line in lines if line.strip()]
        where = Path(args.from_rows).parent
    elif args.task == "cifar10" and not ARCHIVE.is_file():
        print(f"learning: {ARCHIVE} not found", file=sys.stderr)
        return 2
    else:
        where = Path(args.keep or tempfile.mkdtemp(prefix="blockqnn-learning-"))
        where.mkdir(parents=True, exist_ok=True)
        rows = search_rows(args, names, where)
    summary = summarise(rows, names)
    report = {
        "task": args.task,
        "settings": {k: v for k, v in vars(args).items() if k not in ("json", "keep")},
        "wall_seconds": time.perf_counter() - start,
        "per_seed": rows,
        "summary": summary,
        "runs": str(where),
    }
    if args.json:
        print(dumps(report))
        return 0
    print(
        f"{args.task}, budget {args.budget}, {len(rows) // len(names)} seeds, "
        f"{report['wall_seconds']:.0f} s wall; runs in {where}"
    )
    print(f"{'strategy':>10} {'seed':>4} {'last quarter':>12} {'best':>7} {'pick test':>9}  stages")
    for r in rows:
        stage_text = " ".join(f"{m:.3f}" for m in r["stage_means"])
        print(
            f"{r['agent']:>10} {r['seed']:>4} {r['last_quarter_mean']:>12.4f} "
            f"{r['best_reward']:>7.4f} {r['pick_test_accuracy']:>9.4f}  {stage_text}"
        )
    for name in names:
        s = summary[name]
        print(
            f"{name:>10} mean {s['last_quarter_mean']['mean']:>12.4f} "
            f"+- {s['last_quarter_mean']['ci95']:.4f}  best {s['best_reward']['mean']:.4f}  "
            f"pick test {s['pick_test_accuracy']['mean']:.4f} "
            f"+- {s['pick_test_accuracy']['ci95']:.4f}"
        )
    if "qlearning_last_quarter_above_random" in summary:
        above = summary["qlearning_last_quarter_above_random"]
        print(
            f"Q-learning's last quarter above random's in {above['seeds']} of {above['of']} seeds"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
