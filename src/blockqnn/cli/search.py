"""Search a space: Q-learning (or another strategy) proposals, rewards, a resumable run.

Examples:
  blockqnn search --dataset digits --budget 24 --run-dir runs/digits --config examples/digits.toml
  blockqnn search --resume runs/digits
  blockqnn search --space nb201 --table nats-tss-200epoch-accuracy.csv.gz --dataset cifar10 \\
      --budget 100 --agent evolution --run-dir runs/nb201
  blockqnn search --dataset cifar10 --budget 1000 --run-dir runs/c10 --workers 2 \\
      --gpus-per-trial 0.5
  blockqnn search --dataset cifar10 --budget 1000 --run-dir runs/c10 --executor ray \\
      --workers 8 --gpus-per-trial 0.5

The settings come from the TOML `--config` (every section optional), then the flags. The run
directory keeps the resolved config, every trial and the agent: `--resume DIR` continues a
stopped or killed search (only where it runs - executor, workers, GPUs, address, threads,
the evaluation cache - may change).
Ctrl-C stops cleanly (exit 130) and leaves a resumable run; so does SIGTERM (exit 143), what
cluster schedulers send before they kill a job: the trials in flight are recorded
interrupted, the workers stopped, the session closed, and the resume command printed.
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from blockqnn.cli.args import FLOAT, INT, PATH
from blockqnn.cli.search_display import SearchDisplay
from blockqnn.cli.status import trial_json
from blockqnn.errors import BlockQNNError

# flag -> (config section, key); flags left unset keep the config file's value.
_OVERRIDES = {
    "dataset": ("data", "dataset"),
    "train_samples": ("data", "train_samples"),
    "table": ("data", "table"),
    "fidelity": ("data", "fidelity"),
    "budget": ("search", "budget"),
    "space": ("search", "space"),
    "agent": ("search", "agent"),
    "reward": ("reward", "name"),
    "latency_device": ("reward", "latency_device"),
    "latency_target_ms": ("reward", "latency_target_ms"),
    "latency_on": ("reward", "latency_on"),
    "preset": ("agent", "preset"),
    "seed": ("search", "seed"),
    "executor": ("search", "executor"),
    "workers": ("search", "workers"),
    "gpus_per_trial": ("search", "gpus_per_trial"),
    "cpus_per_trial": ("search", "cpus_per_trial"),
    "address": ("search", "address"),
    "epochs": ("train", "epochs"),
    "batch_size": ("train", "batch_size"),
    "threads": ("train", "threads"),
    "filters": ("network", "filters"),
    "cache": ("search", "cache"),
    "stop_after": ("search", "stop_after"),
    "stop_quantile": ("search", "stop_quantile"),
    "prescreen": ("search", "prescreen"),
    "prescreen_score": ("search", "prescreen_score"),
    "blocks_per_stage": ("network", "blocks_per_stage"),
}
# where the search runs, not what it searches: a resume may change them too
_RESUME_FREE = {"threads"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--run-dir", type=PATH, metavar="DIR", help="directory of a new run")
    where.add_argument("--resume", type=PATH, metavar="DIR", help="continue the run in DIR")
    parser.add_argument("--config", type=PATH, metavar="FILE", help="TOML file with the settings")
    from blockqnn.settings.registry import EXECUTORS, REWARDS, SPACES, STRATEGIES
    from blockqnn.settings.threads import HELP as THREADS_HELP

    parser.add_argument(
        "--dataset",
        type=PATH,
        help="digits, cifar10, cifar100, a folder or an .npz; nb201: the table's column "
        "(cifar10, cifar100, imagenet16-120)",
    )
    parser.add_argument("--budget", type=INT, help="distinct candidates to train (or look up)")
    parser.add_argument("--space", help=f"search space: {', '.join(SPACES.names())}")
    parser.add_argument(
        "--table", type=PATH, metavar="FILE", help="nb201: the accuracy table (CSV[.gz])"
    )
    parser.add_argument(
        "--fidelity", type=INT, help="nb201: reward the table accuracy after 12 or 200 epochs"
    )
    parser.add_argument("--agent", help=f"search strategy: {', '.join(STRATEGIES.names())}")
    parser.add_argument("--reward", help=f"reward: {', '.join(REWARDS.names())}")
    parser.add_argument(
        "--preset", help="agent constants: blockqnn (ours, measured) or paper (the paper's)"
    )
    parser.add_argument("--seed", type=INT, help="seed of the agent")
    parser.add_argument("--executor", help=f"where evaluations run: {', '.join(EXECUTORS.names())}")
    parser.add_argument(
        "--workers",
        type=INT,
        help="evaluations at once; local: worker processes on this machine (1: in process)",
    )
    parser.add_argument(
        "--gpus-per-trial",
        type=FLOAT,
        help="GPUs per evaluation; 0.5 packs two on a GPU (local: 1/k, at most 1)",
    )
    parser.add_argument("--cpus-per-trial", type=FLOAT, help="CPUs per evaluation (ray)")
    parser.add_argument("--address", help="join the Ray cluster at HOST:PORT (ray start)")
    parser.add_argument("--epochs", type=INT, help="early-stop epochs per candidate")
    parser.add_argument("--train-samples", type=INT, help="training images used; 0 = all")
    parser.add_argument("--batch-size", type=INT, help="images per step (paper: 256)")
    parser.add_argument("--filters", type=INT, help="first-stage width F while searching")
    parser.add_argument(
        "--blocks-per-stage", type=INT, help="blocks per stage N while searching (paper: 2)"
    )
    parser.add_argument("--threads", help=THREADS_HELP)
    parser.add_argument("--device", help="cpu, cuda, cuda:N (default: the best available)")
    parser.add_argument("--top", type=INT, default=5, help="blocks in the final table")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    _add_latency_arguments(parser)
    _add_growth_arguments(parser)
    _add_faster_arguments(parser)


def _add_faster_arguments(parser: argparse.ArgumentParser) -> None:
    """Early termination and the zero-cost pre-screen (both off by default)."""
    parser.add_argument(
        "--stop-after", type=INT, help="early termination: epochs before a weak one stops (0 off)"
    )
    parser.add_argument("--stop-quantile", type=FLOAT, help="early termination: the quantile")
    parser.add_argument("--prescreen", type=INT, help="proposals per trained block (1 = off)")
    parser.add_argument("--prescreen-score", help="params, synflow or jacob_cov")


def _add_latency_arguments(parser: argparse.ArgumentParser) -> None:
    """Measured latency, recorded or rewarded (see `blockqnn.evaluate.latency`)."""
    from blockqnn.settings.choices import LATENCY_PLACES, LATENCY_RUNTIMES, either

    parser.add_argument(
        "--latency-device",
        metavar="RUNTIME",
        help=f"measure each block's inference latency: {either(LATENCY_RUNTIMES)}",
    )
    parser.add_argument(
        "--latency-target-ms",
        type=FLOAT,
        metavar="MS",
        help="target (mnasnet) or reference (additive) latency, ms",
    )
    parser.add_argument("--latency-on", choices=LATENCY_PLACES, help="where latency is measured")


def _add_growth_arguments(parser: argparse.ArgumentParser) -> None:
    """Warm start and the evaluation cache: what earlier runs give this one."""
    parser.add_argument(
        "--warm-start",
        nargs="+",
        type=PATH,
        metavar="RUN",
        default=[],
        help="tell the completed trials of earlier runs (same evaluation settings) first",
    )
    parser.add_argument(
        "--warm-start-any",
        action="store_true",
        help="warm-start from runs evaluated with other settings too",
    )
    cache = parser.add_mutually_exclusive_group()
    cache.add_argument(
        "--cache",
        type=PATH,
        metavar="DIR",
        help="folder of the evaluation cache shared by runs (default: ~/.cache/blockqnn)",
    )
    cache.add_argument(
        "--no-cache", action="store_true", help="train every candidate; no cache read or written"
    )


def _overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    if args.no_cache:
        out["search"] = {"cache": "off"}
    for flag, (section, key) in _OVERRIDES.items():
        value = getattr(args, flag)
        if value is not None:
            out.setdefault(section, {})[key] = value
    return out


@contextmanager
def _sigterm_stops() -> Iterator[None]:
    """While the search runs, SIGTERM raises `Terminated` (Ctrl-C's path: a clean stop). A
    second SIGTERM during that stop ends the process at once, as SIGTERM normally does."""
    from blockqnn.search import Terminated

    if threading.current_thread() is not threading.main_thread():  # signals: main only
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise Terminated

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(args: argparse.Namespace) -> int:
    """Start or resume a search and print its result, or how to continue it."""
    from blockqnn.search import SearchStalled, Terminated, run_search
    from blockqnn.settings.bounds import MAX_TOP, check, integers

    check("--top", args.top, integers(0, MAX_TOP))  # before the search, not after it
    run_dir, config, overrides = _resolve(args)
    _require_ray(_executor(run_dir, config, overrides))
    out = sys.stderr if args.json else sys.stdout
    display = SearchDisplay(out, run_dir)
    try:
        with _sigterm_stops():
            summary = run_search(
                run_dir,
                config,
                resume_overrides=overrides.get("search") if args.resume else None,
                device=args.device,
                on_event=display.event,
                warm_start=args.warm_start,
                warm_start_any=args.warm_start_any,
            )
    except (Terminated, KeyboardInterrupt) as exc:
        display.close()
        how = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        print(f"blockqnn search: {how}; {_how_to_continue(args, run_dir)}", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    except SearchStalled as exc:
        display.close()
        best = f"the best blocks: blockqnn status {shlex.quote(str(run_dir))}"
        print(f"blockqnn search: stopped: {exc}; {best}", file=sys.stderr)
        return 1
    display.close()
    try:
        return _finish(args, summary, run_dir, out)
    except KeyboardInterrupt:  # while the result is printed: the search itself is complete
        print(
            f"blockqnn search: interrupted; the search had finished: blockqnn status "
            f"{shlex.quote(str(run_dir))}",
            file=sys.stderr,
        )
        return 130


def _how_to_continue(args: argparse.Namespace, run_dir: str) -> str:
    """The command that continues a stopped search: none when it stopped before its run was
    stored, and an extension's --budget, which a stop may have come before it was saved."""
    from pathlib import Path

    from blockqnn.store.db import DB_NAME

    if not (Path(run_dir) / DB_NAME).exists():
        return "nothing was stored; run the same command again to start it"
    extend = f" --budget {args.budget}" if args.resume and args.budget is not None else ""
    return f"continue with: blockqnn search --resume {shlex.quote(str(run_dir))}{extend}"


def _resolve(args: argparse.Namespace) -> tuple[str, Any, dict[str, dict[str, Any]]]:
    """(run dir, config or None on a resume, the flags' overrides), the flags checked."""
    from blockqnn.search import check_resume_overrides
    from blockqnn.settings.config import Config, merge
    from blockqnn.train import threads

    overrides = _overrides(args)
    if args.threads is not None:  # this session's threads, also on a resume
        threads.choose(args.threads, override=True)
    if args.resume:
        if args.config is not None:
            raise BlockQNNError("--resume uses the run's stored config; drop --config")
        overrides = {"search": check_resume_overrides(overrides, free=_RESUME_FREE)}
        return args.resume, None, overrides
    if not args.run_dir:
        raise BlockQNNError("--run-dir DIR is required (or --resume DIR)")
    if args.config is not None:  # the flags as keys of the file: see Config.from_toml
        return args.run_dir, Config.from_toml(args.config, overrides), overrides
    return args.run_dir, merge(Config(), overrides), overrides


def _finish(args: argparse.Namespace, summary: Any, run_dir: str, out: Any) -> int:
    """Print the finished search's result (JSON, or the table and what to run next)."""
    from blockqnn.store.db import Store

    with Store.open(run_dir, readonly=True) as store:  # the --top best, not the summary's 10
        top, space = store.top(args.top), store.config().search.space
    if args.json:
        rows = [trial_json(t, space) for t in top]
        print(json.dumps(_summary_json(summary, run_dir, rows), indent=2))
    elif summary.top:
        _print_top(top, summary, out)
        for line in growth_lines(summary):
            print(line, file=out)
        for line in learning_summary(run_dir):
            print(line, file=out)
        for line in next_commands(run_dir):
            print(line, file=out)
    if not summary.top:  # every evaluation failed: a failed run, though a recorded one
        print(
            f"blockqnn search: every one of the {summary.failed} evaluations failed; "
            f"see the errors with: blockqnn status {run_dir}",
            file=sys.stderr,
        )
        return 1
    return 0


def _executor(run_dir: str, config: Any, overrides: dict[str, dict[str, Any]]) -> str | None:
    """The executor this session will use: the config's, or on a resume the flag's, else the
    stored run's (None when the run cannot be read: the search then says why)."""
    if config is not None:
        return str(config.search.executor)
    if overrides["search"].get("executor"):
        return str(overrides["search"]["executor"])
    from blockqnn.store.db import Store

    try:
        with Store.open(run_dir, readonly=True) as store:
            return str(store.config().search.executor)
    except (BlockQNNError, OSError):
        return None


def _require_ray(executor: str | None) -> None:
    """The ray executor without ray installed: one line naming the extra, before the run
    directory is made (the executor would otherwise fail with a traceback at its start)."""
    if executor != "ray":
        return
    try:
        import ray  # noqa: F401
    except ImportError:
        raise BlockQNNError(
            "--executor ray needs the ray package, which is not installed: "
            "pip install 'blockqnn[ray]'"
        ) from None


def growth_lines(summary: Any) -> list[str]:
    """What the evaluation cache and the warm start contributed, if anything."""
    lines = []
    if summary.warm:
        lines.append(f"warm start: {summary.warm} trials of earlier runs told before the first ask")
    if summary.cached:
        lines.append(
            f"evaluation cache: {summary.cached} of {summary.trained} trained results came "
            f"from the cache, {summary.saved_seconds:.1f} s of training saved"
        )
    return lines


def _summary_json(summary: Any, run_dir: str, top: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "run_dir": run_dir,
        "trained": summary.trained,
        "reused": summary.reused,
        "failed": summary.failed,
        "cached": summary.cached,
        "saved_seconds": summary.saved_seconds,
        "warm": summary.warm,
        "top": top,
    }


def _print_top(top: list[Any], summary: Any, out: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    from blockqnn.report.data import count

    console = Console(file=out, width=None if out.isatty() else 200)
    console.print(
        f"{count(summary.trained, 'block')} trained ({summary.failed} failed), "
        f"{summary.reused} reused"
    )
    if not top:  # --top 0
        return
    table = Table(title="best blocks")
    for name in ("trial", "reward", "accuracy", "MFLOPs", "params", "candidate"):
        table.add_column(name, justify="left" if name == "candidate" else "right")
    for t in top:
        table.add_row(
            str(t.id),
            f"{t.reward:.4f}",
            f"{t.accuracy:.4f}",
            f"{(t.flops or 0) / 1e6:.2f}",
            f"{t.params or 0:,}",
            t.candidate,
        )
    console.print(table)


def _program() -> str:
    """How to call blockqnn from this shell: `blockqnn` when it is on the PATH, else the path
    this process was started with (`.venv/bin/blockqnn` before the venv is activated)."""
    import os
    import shutil

    if shutil.which("blockqnn"):
        return "blockqnn"
    argv0 = sys.argv[0] if sys.argv else ""
    if os.path.basename(argv0) == "blockqnn":
        return shlex.quote(os.path.relpath(argv0) if os.path.isabs(argv0) else argv0)
    return f"{shlex.quote(sys.executable)} -m blockqnn"


NEXT_ALIGN = 72  # the widest command the next-step comments are aligned after


def next_commands(run_dir: str) -> list[str]:
    """What to run next, with this run's directory filled in (quoted for the shell)."""
    import os

    from blockqnn.store.db import Store

    with Store.open(run_dir, readonly=True) as store:
        config = store.config()
    prog, run = _program(), shlex.quote(run_dir)
    commands = [
        (f"{prog} status {run}", "trials, best blocks, sessions"),
        (f"{prog} report {run}", f"an HTML page: {run_dir}/report.html"),
        (f"{prog} trials {run} --csv", "every trial, for pandas or a spreadsheet"),
    ]
    if config.search.space == "nsc":  # train builds networks of NSC blocks only
        net = config.network
        # inside the run: `ls -d runs/demo-* | tail -n 1` (the quick start) still finds the run
        final = os.path.join(run_dir, "final")
        size = f"--filters {max(32, net.filters)} --blocks-per-stage {max(2, net.blocks_per_stage)}"
        model, onnx = shlex.quote(f"{final}/model.pt"), shlex.quote(f"{final}/model.onnx")
        commands += [
            (
                f"{prog} train {run} --out {shlex.quote(final)} {size}",
                "the best block at a final size",
            ),
            (f"{prog} export {model} --format onnx --out {onnx}", "then a file to deploy"),
        ]
    # comments aligned after the short commands; a long one (a deep run dir) is not padded to
    width = max([len(c) for c, _ in commands if len(c) <= NEXT_ALIGN] or [0])
    lines = ["next:", *(f"  {c.ljust(width)}  # {why}" for c, why in commands)]
    if prog.endswith("bin/blockqnn"):  # a virtual environment not activated in this shell
        activate = shlex.quote(prog[: -len("blockqnn")] + "activate")
        lines.append(f"  (`. {activate}` puts blockqnn on this shell's PATH)")
    return lines


MIN_STAGE_TRAINED = 8  # fewer trained blocks in a stage say little about its mean


def learning_summary(run_dir: str) -> list[str]:
    """Whether the strategy learned: the mean reward of its first epsilon stage (random
    proposals) against its last, over trained trials; nothing for strategies without an
    epsilon. Says so when the last stage is too small to tell."""
    from blockqnn.report.data import count, stage_means
    from blockqnn.store.db import Store

    with Store.open(run_dir, readonly=True) as store, store.reading() as reading:
        stages = [s for s in stage_means(reading.trials()) if s.mean is not None]  # streamed
        budget = store.config().search.budget
    if len(stages) < 2:
        return []
    first, last = stages[0], stages[-1]
    assert first.mean is not None and last.mean is not None
    trend = "rose" if last.mean > first.mean else "did not rise"
    lines = [
        f"learning: mean reward {first.mean:.4f} at epsilon {first.epsilon:g} "
        f"({count(first.trained, 'block')}) -> {last.mean:.4f} at epsilon {last.epsilon:g} "
        f"({count(last.trained, 'block')}): it {trend}"
    ]
    if last.trained < MIN_STAGE_TRAINED:
        lines.append(
            f"  the last stage holds only {count(last.trained, 'trained block')}, too few to show "
            f"learning reliably; a budget of {max(2 * budget, 128)} or more gives a clearer "
            "picture (blockqnn report draws the whole curve)"
        )
    return lines
