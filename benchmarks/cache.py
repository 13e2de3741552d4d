"""Benchmark: the evaluation cache on a second, identical search.

Runs the same `blockqnn search` twice (a digits search by default) in fresh run dirs, with
a fresh cache folder of its own, and reports for the second run: the share of its trained
trials whose result came from the cache (the hit rate), the training time those results
took when they were trained (saved), and both runs' wall times (process start to exit).

    python benchmarks/cache.py --budget 64 --epochs 3 --filters 8          # minutes
    python benchmarks/cache.py --budget 2 --epochs 1 --filters 4 --train-samples 200  # check
    python benchmarks/cache.py --json                                      # one JSON object
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from benchmarks.common import dumps  # noqa: E402
from blockqnn.cli.args import integer  # noqa: E402
from blockqnn.evaluate.result import EvalResult  # noqa: E402
from blockqnn.store.db import Store  # noqa: E402  (this checkout's, without installing)
from blockqnn.store.schema import CACHE_WORKER  # noqa: E402


def _search(run: Path, cache: Path, args: argparse.Namespace) -> float:
    command = [
        sys.executable, "-m", "blockqnn", "search", "--dataset", args.dataset,
        "--budget", str(args.budget), "--epochs", str(args.epochs),
        "--filters", str(args.filters), "--seed", str(args.seed),
        "--run-dir", str(run), "--cache", str(cache), "--json",
    ]  # fmt: skip
    if args.train_samples:
        command += ["--train-samples", str(args.train_samples)]
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def measure(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        first = _search(folder / "first", folder / "cache", args)
        second = _search(folder / "second", folder / "cache", args)
        with Store.open(folder / "second", readonly=True) as store:
            trained = [t for t in store.trials() if t.trained]
        hits = [t for t in trained if t.worker.startswith(CACHE_WORKER)]
        saved = sum(EvalResult.from_dict(t.result).seconds for t in hits if t.result)
    return {
        "dataset": args.dataset,
        "budget": args.budget,
        "trained": len(trained),
        "cache_hits": len(hits),
        "hit_rate": len(hits) / len(trained) if trained else 0.0,
        "saved_training_seconds": saved,
        "first_wall_seconds": first,
        "second_wall_seconds": second,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--budget", type=integer(1), default=64)
    parser.add_argument("--epochs", type=integer(1), default=3)
    parser.add_argument("--filters", type=integer(1), default=8)
    parser.add_argument("--train-samples", type=integer(0), default=0, help="0 = all")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    try:
        result = measure(args)
    except subprocess.CalledProcessError as exc:  # the search said why on stderr
        print(f"cache: a search exited with {exc.returncode}", file=sys.stderr)
        return 2
    if args.json:
        print(dumps(result))
        return 0
    r = result
    print(
        f"evaluation cache: {r['dataset']}, budget {r['budget']}; the second, identical search\n"
        f"  cache hits      {r['cache_hits']} of {r['trained']} trained trials "
        f"({r['hit_rate']:.0%})\n"
        f"  training saved  {r['saved_training_seconds']:.1f} s\n"
        f"  wall time       {r['first_wall_seconds']:.1f} s first, "
        f"{r['second_wall_seconds']:.1f} s second"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
