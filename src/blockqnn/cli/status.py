"""Show a search's progress: trials by status, epsilon, speed and the best blocks so far.

Example: blockqnn status runs/digits --json

Reads the run's store only (safe while the search runs); never changes it.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="DIR", help="the run directory")
    parser.add_argument("--top", type=int, default=5, help="best blocks to list")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def status(run_dir: str, top: int = 5) -> dict[str, Any]:
    """The run's state as a JSON-safe dict (the `--json` output)."""
    from blockqnn.store import Store

    with Store.open(run_dir, readonly=True) as store:
        config = store.config()
        counts = store.counts()
        trials = store.trials()
        elapsed = store.elapsed()
        best = store.top(top)
        active = store.active()
    return {
        "run_dir": run_dir,
        "active": active,
        "dataset": config.data.dataset,
        "agent": config.search.agent,
        "budget": config.search.budget,
        "trained": counts["trained"],
        "complete": counts["complete"],
        "reused": counts["reused"],
        "failed": counts["failed"],
        "running": counts["running"],
        "queued": counts["queued"],
        "interrupted": counts["interrupted"],
        "epsilon": trials[-1].epsilon if trials else 1.0,
        "elapsed_seconds": round(elapsed, 3),
        "evaluations_per_hour": (
            round(counts["trained"] * 3600 / elapsed, 2) if elapsed > 0 else 0.0
        ),
        "top": [trial_json(t) for t in best],
        # the latest failed evaluations with their errors, newest last
        "recent_failures": [
            {"id": t.id, "nsc": t.nsc, "error": t.error}
            for t in [t for t in trials if t.status == "failed"][-5:]
        ],
    }


def run(args: argparse.Namespace) -> int:
    if args.top < 0:
        from blockqnn.errors import BlockQNNError

        raise BlockQNNError(f"--top {args.top}: must be >= 0")
    info = status(args.run_dir, args.top)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console(file=sys.stdout, width=None if sys.stdout.isatty() else 200)
    state = "running" if info["active"] else "stopped"
    done = "finished" if info["trained"] >= info["budget"] and not info["running"] else state
    console.print(
        f"{info['run_dir']}: {done}, {info['trained']}/{info['budget']} trained "
        f"({info['failed']} failed), {info['reused']} reused, {info['running']} running, "
        f"{info['queued'] + info['interrupted']} waiting"
    )
    console.print(
        f"dataset {info['dataset']}, agent {info['agent']}, epsilon {info['epsilon']:.2f}, "
        f"elapsed {_duration(info['elapsed_seconds'])}, "
        f"{info['evaluations_per_hour']:.1f} evaluations/hour"
    )
    if info["top"]:
        table = Table(title="best blocks")
        for name in ("trial", "reward", "accuracy", "MFLOPs", "block (NSC)"):
            table.add_column(name, justify="left" if name == "block (NSC)" else "right")
        for t in info["top"]:
            table.add_row(
                str(t["id"]),
                f"{t['reward']:.4f}",
                f"{t['accuracy']:.4f}",
                f"{(t['flops'] or 0) / 1e6:.2f}",
                t["nsc"],
            )
        console.print(table)
    for failure in info["recent_failures"]:
        console.print(f"failed trial {failure['id']}: {failure['error']}", markup=False)
    return 0


def trial_json(t: Any) -> dict[str, Any]:
    """One trial of a top list, as `status --json` and `search --json` print it."""
    return {
        "id": t.id,
        "nsc": t.nsc,
        "hash": t.hash,
        "reward": t.reward,
        "accuracy": t.accuracy,
        "flops": t.flops,
        "params": t.params,
    }


def _duration(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s"
