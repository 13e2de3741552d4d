"""Benchmark: the commands that read a run (`status`, `trials --csv`, `report`) against its size.

A long search stores a row for every proposal: each proposal of a candidate seen before is a
`reused` trial (a copy of its original's result), so a run of a few thousand trained
candidates can hold hundreds of thousands of rows. This builds runs of each `--sizes` rows
in a temporary folder, `--trained` trained trials (through the store's write API, as the
search loop records them) and the rest reused trials (written in one transaction with the
store's own row writes, `store.rows.copy_result`, which seals each row as `add_reused`
does), Q-learning's epsilon stages in their infos. Then each reader runs as a `blockqnn`
process, output to /dev/null: wall seconds and peak RSS (`os.wait4`), one run each. `scan`
is the floor: a process that reads every trial row with Python's sqlite3 and nothing else.
`--compare SRC` runs the readers a second time from another checkout's `src` (e.g. a git
worktree of an earlier commit) on the same runs: the ratio of its figures to this one's.

    python benchmarks/readers.py                                   # 10k, 100k, 400k rows
    python benchmarks/readers.py --sizes 10000,100000 --compare /tmp/old/src --json
    python benchmarks/readers.py --sizes 200,400 --trained 50     # a check, seconds
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the checkout

from benchmarks.common import dumps, int_list
from blockqnn.cli.args import integer
from blockqnn.evaluate.result import EvalResult
from blockqnn.settings.config import Config, merge
from blockqnn.space.base import make_space
from blockqnn.store.db import DB_NAME, QUEUED, Store, TrialRecord
from blockqnn.store.rows import copy_result

ROOT = Path(__file__).resolve().parents[1]
READERS = {
    "scan": ["-c", "import sqlite3, sys\nfor _ in sqlite3.connect(sys.argv[1]).execute("
             "'SELECT * FROM trials'): pass"],
    "status": ["-m", "blockqnn", "status"],
    "trials": ["-m", "blockqnn", "trials", "--csv"],
    "report": ["-m", "blockqnn", "report", "--out", "{tmp}/report.html"],
}  # fmt: skip
EPSILONS = (1.0, 0.9, 0.7, 0.5, 0.3, 0.1)  # the stages' epsilons: the first half at 1.0


def _epsilon(position: float) -> float:
    """Q-learning's epsilon at `position` (0..1) of the run: 1.0 for the first half."""
    stage = 0 if position < 0.5 else 1 + int((position - 0.5) * 2 * (len(EPSILONS) - 1))
    return EPSILONS[min(stage, len(EPSILONS) - 1)]


def build_trained(run: Path, trained: int, seed: int) -> list[TrialRecord]:
    """A run of `trained` complete trials through `Store`'s API (synthetic results)."""
    config = merge(Config(), {"search": {"budget": trained}})
    space, rng = make_space(config), random.Random(seed)
    with Store.create(run, config) as store:
        store.acquire()
        store.begin_session()
        for i in range(trained):
            block = space.to_candidate(space.sample(rng))
            trial_id = store.add_trial(block, {"epsilon": 1.0}, ask_seq=2 * i + 1)
            accuracy = rng.uniform(0.5, 0.95)
            result = EvalResult(
                "ok", accuracy, accuracy, flops=rng.randint(10**6, 10**8), params=10**5,
                density=rng.uniform(1, 2), epochs=12, train_seconds=rng.uniform(20, 60),
                device="cpu", metrics={"flops_ref": 1.0e6},
            )  # fmt: skip
            store.finish(trial_id, result, accuracy, "w0", 2 * i + 2)
        store.end_session("complete")
        return store.trials()


def add_reused(run: Path, sources: list[TrialRecord], rows: int, seed: int) -> None:
    """Grow the run to `rows` trials with reused copies of `sources`, in ask order after
    them, in one transaction (`Store.add_reused`'s row writes, one transaction each there)."""
    rng = random.Random(seed)
    conn = sqlite3.connect(run / DB_NAME, isolation_level=None)
    try:
        first = conn.execute("SELECT MAX(id) FROM trials").fetchone()[0] + 1
        conn.execute("BEGIN IMMEDIATE")
        now = time.time()
        for trial_id in range(first, rows + 1):
            source = rng.choice(sources)
            info = f'{{"epsilon": {_epsilon(trial_id / rows)}}}'
            conn.execute(
                "INSERT INTO trials (id, hash, candidate, status, info, ask_seq, reuse_of, "
                "created, finished) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (trial_id, source.hash, source.candidate, QUEUED, info, 2 * trial_id - 1,
                 source.id, now, now),
            )  # fmt: skip
            copy_result(conn, trial_id, source, now, 2 * trial_id)
        conn.execute("COMMIT")
    finally:
        conn.close()


def measure(reader: str, run: Path, src: Path) -> dict[str, Any]:
    """One reader's process on `run`, blockqnn imported from `src`: wall seconds and peak
    RSS (MB)."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    with tempfile.TemporaryDirectory() as tmp:
        args = [a.replace("{tmp}", tmp) for a in READERS[reader]]
        where = run / DB_NAME if reader == "scan" else run
        start = time.perf_counter()
        with open(os.devnull, "wb") as null:
            command = [sys.executable, *args, str(where)]
            proc = subprocess.Popen(command, stdout=null, stderr=subprocess.PIPE, env=env)
            assert proc.stderr is not None
            err = proc.stderr.read().decode(errors="replace")
            _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"{reader} exited with {code}: {err.strip()[-500:]}")
    return {"seconds": seconds, "peak_mb": usage.ru_maxrss / 1024}  # ru_maxrss: KiB on Linux


def build_runs(folder: Path, sizes: list[int], trained: int, seed: int) -> dict[int, Path]:
    """A run of each size, smallest first, each grown from a copy of the one before."""
    runs: dict[int, Path] = {}
    base = folder / "trained"
    sources = build_trained(base, trained, seed)
    previous = base
    for size in sorted(set(sizes)):
        run = folder / f"rows-{size}"
        shutil.copytree(previous, run, ignore=shutil.ignore_patterns("lock"))
        add_reused(run, sources, size, seed + size)
        runs[size] = previous = run
    return runs


def run_all(args: argparse.Namespace) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="blockqnn-readers-") as tmp:
        runs = build_runs(Path(tmp), args.sizes, args.trained, args.seed)
        for size, run in runs.items():
            for reader in args.readers:
                row = {"rows": size, "reader": reader, **measure(reader, run, ROOT / "src")}
                if args.compare is not None and reader != "scan":
                    other = measure(reader, run, args.compare)
                    row["compare_seconds"] = other["seconds"]
                    row["compare_peak_mb"] = other["peak_mb"]
                rows.append(row)
    return {"trained": args.trained, "sizes": sorted(set(args.sizes)), "rows": rows,
            "growth": growth(rows), "load_average": os.getloadavg()}  # fmt: skip


def growth(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per reader, its figures at the largest size over those at the smallest."""
    out: dict[str, dict[str, float]] = {}
    for reader in dict.fromkeys(r["reader"] for r in rows):
        mine = [r for r in rows if r["reader"] == reader]
        small, large = min(mine, key=lambda r: r["rows"]), max(mine, key=lambda r: r["rows"])
        out[reader] = {
            "rows": large["rows"] / small["rows"],
            "seconds": large["seconds"] / small["seconds"],
            "peak_mb": large["peak_mb"] / small["peak_mb"],
        }
        if "compare_seconds" in large:
            out[reader]["compare_seconds"] = large["compare_seconds"] / small["compare_seconds"]
            out[reader]["compare_peak_mb"] = large["compare_peak_mb"] / small["compare_peak_mb"]
    return out


def _table(report: dict[str, Any]) -> str:
    compare = any("compare_seconds" in r for r in report["rows"])
    head = f"{'rows':>9} {'reader':<7} {'seconds':>8} {'peak MB':>8}"
    if compare:
        head += f" {'compare s':>10} {'compare MB':>10} {'s ratio':>8} {'MB ratio':>8}"
    lines = [f"readers: {report['trained']} trained trials, the rest reused", head]
    for r in report["rows"]:
        line = f"{r['rows']:>9,} {r['reader']:<7} {r['seconds']:>8.2f} {r['peak_mb']:>8.0f}"
        if "compare_seconds" in r:
            line += (
                f" {r['compare_seconds']:>10.2f} {r['compare_peak_mb']:>10.0f}"
                f" {r['compare_seconds'] / r['seconds']:>8.1f}"
                f" {r['compare_peak_mb'] / r['peak_mb']:>8.1f}"
            )
        lines.append(line)
    for reader, g in report["growth"].items():
        line = (
            f"{reader}: {g['rows']:.0f}x the rows, {g['seconds']:.1f}x the seconds, "
            f"{g['peak_mb']:.2f}x the peak memory"
        )
        if "compare_seconds" in g:
            line += (
                f" (compared: {g['compare_seconds']:.1f}x the seconds, "
                f"{g['compare_peak_mb']:.2f}x the peak memory)"
            )
        lines.append(line)
    lines.append("load average: " + " ".join(f"{x:.2f}" for x in report["load_average"]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int_list(1), default=[10_000, 100_000, 400_000])
    parser.add_argument("--trained", type=integer(1), default=2000)
    parser.add_argument(
        "--readers",
        type=lambda text: [_reader(r) for r in text.split(",")],
        default=list(READERS),
        help=f"comma-separated, of {', '.join(READERS)}",
    )
    parser.add_argument("--compare", type=Path, help="another checkout's src folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if min(args.sizes) < args.trained:
        parser.error(f"--sizes: each must be at least --trained ({args.trained})")
    if args.compare is not None and not (args.compare / "blockqnn").is_dir():
        parser.error(f"--compare {args.compare}: holds no blockqnn package")
    report = run_all(args)
    print(dumps(report) if args.json else _table(report))
    return 0


def _reader(name: str) -> str:
    if name not in READERS:
        raise argparse.ArgumentTypeError(f"{name!r}: not one of {', '.join(READERS)}")
    return name


if __name__ == "__main__":
    raise SystemExit(main())
