"""Show a search's progress: trials by status, the strategy's state, speed and the best so far.

Example: blockqnn status runs/digits --json

The JSON object's `info` is the strategy's info at its latest ask (Q-learning: {"epsilon":
0.9}; other strategies report other keys, or none). Reads the run's store only (safe while
the search runs); never changes it.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from typing import Any

from blockqnn.cli.args import INT, PATH


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=PATH, metavar="DIR", help="the run directory")
    parser.add_argument("--top", type=INT, default=5, help="best candidates to list")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def status(run_dir: str, top: int = 5) -> dict[str, Any]:
    """The run's state as a JSON-safe dict (the `--json` output), from the report's summary."""
    from blockqnn.report.data import read_run
    from blockqnn.report.faster import faster_summary

    run = read_run(run_dir, top)
    config, counts = run.config, run.counts
    return {
        "run_dir": run_dir,
        "active": run.active,
        "dataset": config.data.dataset,
        "space": config.search.space,
        "agent": config.search.agent,
        "budget": config.search.budget,
        "trained": counts["trained"],
        "complete": counts["complete"],
        "reused": counts["reused"],
        "failed": counts["failed"],
        "running": counts["running"],
        "queued": counts["queued"],
        "interrupted": counts["interrupted"],
        "info": run.info,
        "elapsed_seconds": round(run.elapsed, 3),
        "evaluations_per_hour": round(run.evaluations_per_hour or 0.0, 2),
        "top": [trial_json(t, run.space) for t in run.top],
        # early termination and the pre-screen (`blockqnn.report.faster`); null when off
        "faster": faster_summary(run.evaluated),
        # the latest failed evaluations with their errors, newest last
        "recent_failures": [
            {"id": t.id, "candidate": t.candidate, "error": t.error} for t in run.failed[-5:]
        ],
    }


def run(args: argparse.Namespace) -> int:
    from blockqnn.settings.bounds import MAX_TOP, check, integers

    check("--top", args.top, integers(0, MAX_TOP))
    info = status(args.run_dir, args.top)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    from rich.console import Console

    from blockqnn.report.data import pending_text

    console = Console(file=sys.stdout, width=None if sys.stdout.isatty() else 200)
    state = "running" if info["active"] else "stopped"
    done = "finished" if info["trained"] >= info["budget"] and not info["running"] else state
    pending = {k: info[k] for k in ("running", "queued", "interrupted")}
    console.print(
        f"{info['run_dir']}: {done}, {info['trained']}/{info['budget']} trained "
        f"({info['failed']} failed), {info['reused']} reused, "
        f"{pending_text(pending, info['active'])}",
        markup=False,
    )
    if not info["active"] and sum(pending.values()):
        console.print(
            f"blockqnn search --resume {shlex.quote(info['run_dir'])} runs the running, "
            "queued and interrupted trials again",
            markup=False,
        )
    strategy = ", ".join([f"agent {info['agent']}", *_info_items(info["info"])])
    console.print(
        f"dataset {info['dataset']}, space {info['space']}, {strategy}, "
        f"elapsed {_duration(info['elapsed_seconds'])}, "
        f"{info['evaluations_per_hour']:.1f} evaluations/hour",
        markup=False,
    )
    if info["faster"] is not None:
        from blockqnn.report.faster import faster_text

        console.print("faster search: " + faster_text(info["faster"]), markup=False)
    if info["top"]:
        console.print(_top_table(info))
        pick = info["top"][0]
        if "final_accuracy" in pick:
            console.print(
                f"pick (best reward): trial {pick['id']}, final accuracy "
                f"{pick['final_accuracy']:.4f}",
                markup=False,
            )
    for failure in info["recent_failures"]:
        console.print(f"failed trial {failure['id']}: {failure['error']}", markup=False)
    return 0


def _top_table(info: dict[str, Any]) -> Any:
    """The best trials as a rich table, with FLOPs and latency columns where measured."""
    from rich.table import Table

    nsc = info["space"] == "nsc"
    cost = any(t["flops"] for t in info["top"])  # table-scored spaces measure no FLOPs
    timed = any("latency_ms" in t for t in info["top"])  # runs with a latency measured
    final = any("final_accuracy" in t for t in info["top"])  # proxy-rewarded runs
    what = "block (NSC)" if nsc else "candidate"
    table = Table(title="best blocks" if nsc else "best candidates")
    extra = [*(["MFLOPs"] if cost else []), *(["latency ms"] if timed else [])]
    finals = ["final accuracy"] if final else []
    for name in ("trial", "reward", "accuracy", *finals, *extra, what):
        table.add_column(name, justify="left" if name == what else "right")
    for t in info["top"]:
        flops = [f"{(t['flops'] or 0) / 1e6:.2f}"] if cost else []
        latency = [_ms(t.get("latency_ms"))] if timed else []
        table.add_row(
            str(t["id"]),
            f"{t['reward']:.4f}",
            f"{t['accuracy']:.4f}",
            *([_fraction(t.get("final_accuracy"))] if final else []),
            *flops,
            *latency,
            t["candidate"],
        )
    return table


def trial_json(t: Any, space: str = "nsc") -> dict[str, Any]:
    """One trial of a top list, as `status --json` and `search --json` print it. `nsc`
    repeats `candidate` in runs of the nsc space, for scripts written before other spaces."""
    from blockqnn.final.pick import trial_latency
    from blockqnn.report.trials import final_accuracy

    out = {"id": t.id, "candidate": t.candidate}
    if space == "nsc":
        out["nsc"] = t.candidate
    out = {
        **out,
        "hash": t.hash,
        "reward": t.reward,
        "accuracy": t.accuracy,
        "flops": t.flops,
        "params": t.params,
    }
    latency = trial_latency(t)
    if latency is not None:  # only runs that measure it (`[reward] latency_device`)
        out["latency_ms"] = latency
    final = final_accuracy(t)
    if final is not None:  # rewarded by a proxy (`[data] fidelity`), judged by this
        out["final_accuracy"] = final
    return out


def _ms(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}"


def _fraction(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}"


def _info_items(info: dict[str, Any]) -> list[str]:
    """The strategy's info as 'key value' texts, e.g. ['epsilon 0.9']."""
    return [f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in info.items()]


def _duration(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s"
