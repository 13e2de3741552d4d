"""Benchmark: the faster search. Plain early stop vs early termination vs the free
pre-screen vs both, in one run, on the same seeds.

For each of S seeds and each setting, one real search of B trained blocks (the `blockqnn
search` loop, the early-stop trainer, the local executor, one process after another), then:

- the total training seconds of the search (the trained trials' `train_seconds`, summed)
  and its ratio to the plain early stop's in the same run;
- the pick (the best trained block by reward) trained again for `--final-epochs` on the
  search-time network and measured on the test split (the longer fixed training);
- from the plain runs, the rank correlation (Spearman, n, 95% interval by Fisher z) with the
  full early-stop reward of the accuracy after `--stop-after` epochs (the plain runs also
  validate there: it costs evaluation seconds, not training seconds) and of each zero-cost
  score (params, synflow, jacob_cov; computed afterwards on the same blocks);
- the pre-screen's overhead: its seconds per proposal against one evaluation's seconds.

The pre-screen saves training only by training fewer blocks: each trained block is the best
of `--prescreen` proposals, so its settings ("prescreen", "both") train `--screened-budget`
blocks (default half of `--budget`) and the question is whether their pick is as good.

Each finished search leaves `bench.json` in its run folder (`--keep`); `--from-runs` builds
the table from such a folder without searching, e.g. from a run cut short.

    python benchmarks/faster.py                         # digits: 5 seeds x 64 blocks
    python benchmarks/faster.py --seeds 1 --budget 8 --epochs 2 --stop-after 1
    python benchmarks/faster.py --task cifar10 --train-samples 3000 --val-size 1000 \
        --epochs 3 --stop-after 1 --threads 1 --keep runs/faster-cifar10
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from benchmarks.common import dumps  # noqa: E402
from benchmarks.learning import reduced_cifar  # noqa: E402  (the same reduced CIFAR-10)
from benchmarks.strategies import ci95  # noqa: E402  (the strategies benchmark's interval)
from blockqnn.cli.args import integer  # noqa: E402
from blockqnn.errors import BlockQNNError  # noqa: E402
from blockqnn.evaluate.result import EvalResult  # noqa: E402

SETTINGS = ("plain", "terminate", "prescreen", "both")
SCORES = ("params", "synflow", "jacob_cov")


def base_config(args: argparse.Namespace) -> Any:
    from blockqnn.settings.config import Config, merge

    if args.task == "cifar10":
        return merge(Config(), reduced_cifar(args))
    base = Config.from_toml(ROOT / "examples" / "digits.toml")
    data: dict[str, Any] = {"train_samples": args.train_samples}
    if args.dataset:
        data["dataset"] = args.dataset
    train = {"epochs": args.epochs, "threads": args.threads}
    return merge(base, {"data": data, "train": train})


def search_config(args: argparse.Namespace, setting: str, seed: int) -> Any:
    from blockqnn.settings.config import merge

    search: dict[str, Any] = {"budget": args.budget, "seed": seed, "cache": "off"}
    if setting in ("plain", "terminate", "both"):  # plain: validates at k, never stops
        search.update(stop_after=args.stop_after, stop_quantile=args.quantile)
    if setting in ("prescreen", "both"):
        search.update(
            prescreen=args.prescreen, prescreen_score=args.score, budget=screened_budget(args)
        )
    return merge(base_config(args), {"search": search})


def run_setting(args: argparse.Namespace, setting: str, seed: int, where: Path) -> dict[str, Any]:
    """One search; its trained trials and its training seconds."""
    from blockqnn.search import run_search, terminate

    run_dir = where / f"{setting}-{seed}"
    never = setting == "plain"
    saved_min = terminate.MIN_COMPLETED
    terminate.MIN_COMPLETED = 10**9 if never else saved_min  # plain: no threshold, ever
    start = time.perf_counter()
    try:
        run_search(run_dir, search_config(args, setting, seed), device="cpu")
    finally:
        terminate.MIN_COMPLETED = saved_min
    wall = time.perf_counter() - start
    (run_dir / "bench.json").write_text(
        json.dumps({"setting": setting, "seed": seed, "wall": wall})
    )
    return load_run(run_dir)


def screened_budget(args: argparse.Namespace) -> int:
    return int(args.screened_budget or max(1, args.budget // 2))


def load_run(run_dir: Path) -> dict[str, Any]:
    """A finished search of this benchmark: its setting, seed, trained trials and wall time."""
    from blockqnn.store.db import TRAINED, Store

    run: dict[str, Any] = json.loads((run_dir / "bench.json").read_text())
    with Store.open(run_dir, readonly=True) as store:
        run["trials"] = [t for t in store.trials() if t.status in TRAINED and t.result]
    return run


def finished_runs(where: Path, seeds_below: int | None = None) -> list[dict[str, Any]]:
    """The finished searches kept in `where`, only seeds every setting finished (and, given
    `seeds_below`, only seeds 0 .. seeds_below - 1)."""
    runs = [load_run(p.parent) for p in sorted(where.glob("*/bench.json"))]
    if seeds_below is not None:
        runs = [r for r in runs if r["seed"] < seeds_below]
    seeds = {r["seed"] for r in runs}
    full = {s for s in seeds if {r["setting"] for r in runs if r["seed"] == s} >= set(SETTINGS)}
    return [r for r in runs if r["seed"] in full]


def final_accuracy(args: argparse.Namespace, candidate: str, data: Any) -> float:
    """The pick's test accuracy after the longer fixed training (search-time network)."""
    from dataclasses import replace

    import torch

    from blockqnn.space.nsc.block import Block
    from blockqnn.space.nsc.builder import Network
    from blockqnn.train.loop import fit
    from blockqnn.train.recipe import Recipe

    config = base_config(args)
    train = replace(config.train, epochs=args.final_epochs)
    network = replace(config.network, num_classes=data.num_classes, input_shape=data.input_shape)
    recipe = Recipe.from_config(train, data.name, data.input_shape)
    torch.manual_seed(recipe.seed)
    model = Network(Block.parse(candidate), network)
    fitted = fit(model, data, recipe, epochs=args.final_epochs, eval_split="test")
    return float(fitted.accuracy or 0.0)


def zero_cost_correlations(args: argparse.Namespace, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each zero-cost score of the plain runs' complete blocks vs their reward, and the
    accuracy at epoch k vs the reward."""
    from blockqnn.data import load_arrays
    from blockqnn.evaluate.zero_cost import ZeroCostScorer
    from blockqnn.report.faster import correlation
    from blockqnn.settings.config import merge
    from blockqnn.space.nsc.block import Block

    config = base_config(args)
    arrays = load_arrays(config.data)
    complete = [t for r in runs for t in r["trials"] if t.status == "complete"]
    rewards = [float(t.reward or 0.0) for t in complete]
    partial = [float(t.result["metrics"]["partial_accuracy"]) for t in complete]
    out: dict[str, Any] = {"partial": correlation(partial, rewards)}
    for name in SCORES:
        scorer = ZeroCostScorer(merge(config, {"search": {"prescreen_score": name}}), arrays)
        scores = [scorer(Block.parse(t.candidate))[0] for t in complete]
        ok = [(s, r) for s, r in zip(scores, rewards, strict=True) if s != float("-inf")]
        out[name] = correlation([s for s, _ in ok], [r for _, r in ok])
    return out


def summarise(args: argparse.Namespace, runs: list[dict[str, Any]]) -> dict[str, Any]:
    from blockqnn.data import load_arrays

    device_data = load_arrays(base_config(args).data).to_device("cpu")
    rows: dict[str, dict[str, Any]] = {}
    for setting in SETTINGS:
        mine = [r for r in runs if r["setting"] == setting]
        seconds = [sum(float(t.result["train_seconds"]) for t in r["trials"]) for r in mine]
        picks = [max(r["trials"], key=lambda t: t.reward or 0.0).candidate for r in mine]
        tests = [final_accuracy(args, p, device_data) for p in picks]
        stopped = sum("stopped_at" in t.result["metrics"] for r in mine for t in r["trials"])
        rows[setting] = {
            "train_seconds": statistics.fmean(seconds),
            "train_seconds_ci95": ci95(seconds),
            "test_accuracy": statistics.fmean(tests),
            "test_accuracy_ci95": ci95(tests),
            "stopped": stopped,
            "blocks": statistics.fmean(len(r["trials"]) for r in mine),
            "seeds": len(mine),
            "wall_seconds": sum(r["wall"] for r in mine),
        }
    plain = rows["plain"]
    for row in rows.values():
        row["seconds_ratio"] = row["train_seconds"] / plain["train_seconds"]
    return rows


def prescreen_overhead(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Seconds per proposal scored vs one evaluation's seconds (build + train + validate)."""
    screens = [
        t.info["prescreen"] for r in runs if r["setting"] == "prescreen" for t in r["trials"]
    ]
    evals = [
        EvalResult.from_dict(t.result).seconds  # build + train + validate
        for r in runs
        if r["setting"] == "prescreen"
        for t in r["trials"]
    ]
    proposals = sum(int(s["screened"]) for s in screens)
    per = sum(float(s["seconds"]) for s in screens) / max(proposals, 1)
    evaluation = statistics.fmean(evals) if evals else float("nan")
    ratio = per / evaluation
    return {"seconds_per_proposal": per, "evaluation_seconds": evaluation, "ratio": ratio}


def _interval(c: dict[str, Any] | None) -> str:
    if c is None:
        return "-"
    if c["low"] is None:
        return f"{c['rho']:+.2f} (n {c['n']})"
    return f"{c['rho']:+.2f} [{c['low']:+.2f}, {c['high']:+.2f}] (n {c['n']})"


def print_table(result: dict[str, Any]) -> None:
    print(
        f"{'setting':<10} {'seeds':>5} {'blocks':>6} {'train s':>12} {'ratio':>6} "
        f"{'stopped':>7} {'pick test acc':>18}"
    )
    for setting, row in result["settings"].items():
        print(
            f"{setting:<10} {row['seeds']:>5} {row['blocks']:>6.0f} "
            f"{row['train_seconds']:>7.1f} ±{row['train_seconds_ci95']:>4.1f} "
            f"{row['seconds_ratio']:>6.2f} {row['stopped']:>7} "
            f"{row['test_accuracy']:>10.4f} ±{row['test_accuracy_ci95']:.4f}"
        )
    print("Spearman with the full early-stop reward (plain runs):")
    for name, c in result["correlations"].items():
        print(f"  {name:<10} {_interval(c)}")
    o = result["prescreen_overhead"]
    print(
        f"pre-screen ({result['args']['score']}): {o['seconds_per_proposal'] * 1000:.1f} ms per "
        f"proposal vs {o['evaluation_seconds']:.2f} s per evaluation ({o['ratio']:.2%})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--seeds", type=integer(1), default=None, help="5; with --from-runs: all kept ones"
    )
    parser.add_argument("--budget", type=integer(1), default=64)
    parser.add_argument("--epochs", type=integer(1), default=3, help="early-stop epochs")
    parser.add_argument("--stop-after", type=integer(1), default=1)
    parser.add_argument("--quantile", type=float, default=0.5)
    parser.add_argument("--prescreen", type=integer(2), default=4)
    parser.add_argument("--score", default="params", choices=SCORES)
    parser.add_argument("--final-epochs", type=integer(1), default=10)
    parser.add_argument("--screened-budget", type=integer(0), default=0, help="default: budget / 2")
    parser.add_argument("--task", choices=("digits", "cifar10"), default="digits")
    parser.add_argument("--dataset", default="", help="digits task: another image folder")
    parser.add_argument("--train-samples", type=int, default=0, help="cifar10: 3000")
    parser.add_argument("--val-size", type=int, default=1000, help="cifar10")
    parser.add_argument("--threads", default="auto", help="[train] threads of every search")
    parser.add_argument("--keep", default="", help="keep the runs in this directory")
    parser.add_argument("--from-runs", default="", help="summarise the runs kept here")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.task == "cifar10" and not args.train_samples:
        args.train_samples = 3000
    if args.from_runs:
        runs = finished_runs(Path(args.from_runs), args.seeds)
        if not runs:
            print(f"faster: no seed finished every setting in {args.from_runs}", file=sys.stderr)
            return 2
        args.seeds = len({r["seed"] for r in runs})
    else:
        args.seeds = args.seeds or 5
        try:  # every setting's config, before any search: a bad value is one line
            for setting in SETTINGS:
                search_config(args, setting, 0)
        except BlockQNNError as exc:
            print(f"faster: {exc}", file=sys.stderr)
            return 2
        where = Path(args.keep or tempfile.mkdtemp(prefix="blockqnn-faster-"))
        where.mkdir(parents=True, exist_ok=True)
        runs = [
            run_setting(args, setting, seed, where)
            for seed in range(args.seeds)
            for setting in SETTINGS
        ]
    result = {
        "args": vars(args),
        "settings": summarise(args, runs),
        "correlations": zero_cost_correlations(args, [r for r in runs if r["setting"] == "plain"]),
        "prescreen_overhead": prescreen_overhead(runs),
    }
    if args.json:
        print(dumps(result))
    else:
        print_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
