"""Fuzz every command and flag of the `blockqnn` command line with hostile values, in process.

Each input is a command's working arguments plus one to three flags (or positionals) set to
values drawn from classes that broke earlier versions: `--`, empty strings, digits of other
scripts, huge and non-finite numbers, paths over 4,096 bytes or with a component over 255,
symlink loops, and output targets that are device nodes, folders, FIFOs or symlinks to them.
The flags are read from the parser itself, so a new flag is fuzzed without changing this file.

Counted: tracebacks (an exception escaping `blockqnn.cli.main`, or "Traceback" on stderr),
hangs (an input running over --timeout seconds), and non-regular files replaced (every
special file of the sandbox is checked after every input and made again if changed).
Searches use the synthetic evaluator and dashboards return at once, so most inputs take
milliseconds; training and evaluation inputs that pass every check do train (tiny sizes).

Usage: python tools/fuzz_cli.py [-n 3000] [--seed 0] [--timeout 120] [--show 5]
Exit status 1 when a traceback, a hang or a replaced file was found.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import random
import signal
import stat
import sys
import tempfile
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

NUMBERS = ["--", "", "-1", "0", "1", "2", "1e999", "nan", "inf", "-inf", "0x10", " 5", "5 "]
NUMBERS += ["1_000", "١٦", "１６", "٠.٥", "9" * 40, "9" * 5000, "-0", "+3", "3.5", "1e-320"]
TEXTS = ["--", "", "-", "x", "١٦", "\u202e", "é" * 300, "a,b", "[[", "cpu", "cuda:99", "auto"]
PATH_KINDS = ["long", "component", "loop", "missing", "device", "dir", "fifo", "link-device",
              "link-dir", "link-fifo", "file", "run", "model", "--", "", "under-file"]  # fmt: skip
PATH_WORDS = ["dir", "file", "out", "svg", "config", "table", "cache", "warm", "resume"]
PATH_WORDS += ["checkpoint", "run", "dataset", "baseline"]
SPECIAL = ("device", "dir", "fifo", "link-device", "link-dir", "link-fifo", "loop")


@dataclass
class Tally:
    inputs: int = 0
    exit_codes: dict[int, int] = field(default_factory=dict)
    tracebacks: list[tuple[list[str], str]] = field(default_factory=list)
    hangs: list[list[str]] = field(default_factory=list)
    replaced: list[tuple[list[str], str]] = field(default_factory=list)


class Hang(BaseException):
    """Raised by the alarm in an input that runs too long (a BaseException: not caught as
    an ordinary error by the code under test)."""


class Sandbox:
    """A temp folder holding the special files, a finished run and a model file."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.devices = os.geteuid() == 0
        (root / "afile").write_text("x")
        self.make_specials()
        self.run = str(root / "run")
        self.model = str(root / "model.pt")

    def make_specials(self) -> None:
        for kind in SPECIAL:
            self._make(kind)

    def _make(self, kind: str) -> None:
        p = self.root / kind
        if kind == "device":
            if self.devices:
                os.mknod(p, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # a null device, here only
            else:
                os.mkfifo(p)
        elif kind == "dir":
            p.mkdir()
        elif kind == "fifo":
            os.mkfifo(p)
        elif kind == "loop":
            p.symlink_to(self.root / "loop")
        else:
            p.symlink_to(self.root / kind.removeprefix("link-"))

    def fingerprints(self) -> dict[str, tuple[int, int, int]]:
        out = {}
        for kind in SPECIAL:
            try:
                st = os.lstat(self.root / kind)
            except OSError:
                out[kind] = (0, 0, 0)
                continue
            out[kind] = (st.st_mode, st.st_ino, st.st_rdev)
        return out

    def restore(self, kind: str) -> None:
        p = self.root / kind
        if p.is_dir() and not p.is_symlink():
            for child in p.iterdir():
                if child.is_dir() and not child.is_symlink():
                    import shutil

                    shutil.rmtree(child)
                else:
                    child.unlink()
            if kind == "dir":
                return
            p.rmdir()
        else:
            p.unlink(missing_ok=True)
        self._make(kind)

    def path(self, kind: str) -> str:
        r = self.root
        return {
            "long": str(r / ("p/" * 2100 + "x")),
            "component": str(r / ("c" * 300)),
            "missing": str(r / "missing" / "x"),
            "file": str(r / "afile"),
            "under-file": str(r / "afile" / "x"),
            "run": self.run,
            "model": self.model,
            "--": "--",
            "": "",
        }.get(kind, str(r / kind))


def base_argv(command: str, box: Sandbox, i: int) -> list[str]:
    """Arguments under which `command` works, so that the fuzzed value is what is tested."""
    tiny = ["--dataset", "digits", "--train-samples", "50"]
    return {
        "show": ["1,1,3,0,0"],
        "evaluate": ["1,1,3,0,0", *tiny, "--epochs", "1", "--filters", "4"],
        "search": [
            "--run-dir",
            str(box.root / f"runs/{i}"),
            "--budget",
            "2",
            "--dataset",
            "digits",
        ],
        "status": [box.run],
        "trials": [box.run],
        "report": [box.run, "--out", str(box.root / f"reports/{i}.html")],
        "train": [
            "--block",
            "1,1,3,0,0",
            *tiny,
            "--out",
            str(box.root / f"train/{i}"),
            "--recipe",
            "fast",
            "--epochs",
            "1",
            "--filters",
            "4",
        ],
        "export": [box.model, "--format", "onnx", "--out", str(box.root / f"exports/{i}.onnx")],
        "dashboard": [box.run, "--port", "0"],
    }[command]


def _is_path(action: argparse.Action) -> bool:
    names = " ".join([*action.option_strings, str(action.metavar or ""), action.dest]).lower()
    return any(w in names for w in PATH_WORDS)


def _value(action: argparse.Action, box: Sandbox, rng: random.Random) -> list[str]:
    if action.nargs == 0:
        return []
    if _is_path(action) and rng.random() < 0.8:
        return [box.path(rng.choice(PATH_KINDS))]
    if action.choices and rng.random() < 0.3:
        return [str(rng.choice(list(action.choices)))]
    pool = NUMBERS if action.type not in (None, str) else NUMBERS + TEXTS
    return [rng.choice(pool)]


def make_input(
    command: str, parser: argparse.ArgumentParser, box: Sandbox, rng: random.Random, i: int
) -> list[str]:
    argv = base_argv(command, box, i)
    actions = [a for a in parser._actions if a.dest not in ("help",)]
    for _ in range(rng.randint(1, 3)):
        action = rng.choice(actions)
        values = _value(action, box, rng)
        if not action.option_strings:  # a positional: replace the working one
            if values and argv:
                argv[0 if not argv[0].startswith("--") else -1] = values[0]
            continue
        flag = rng.choice(action.option_strings)
        if values and rng.random() < 0.5:
            argv.append(f"{flag}={values[0]}")
        else:
            argv += [flag, *values]
    return [command, *argv]


def _alarm(signum: int, frame: FrameType | None) -> None:
    raise Hang


@contextlib.contextmanager
def patched() -> Iterator[None]:
    """Synthetic evaluations for searches; dashboards built (so their checks run) but not
    served."""
    import blockqnn.execute.base as ex
    import blockqnn.report.live as live
    from blockqnn.evaluate.synthetic import SyntheticEvaluator

    real_server = live.make_server

    def quick_server(*args: Any, **kwargs: Any) -> Any:
        server = real_server(*args, **kwargs)
        server.serve_forever = lambda *a, **k: None  # type: ignore[method-assign]
        return server

    saved = ex.default_evaluator, ex.load_data, live.make_server
    ex.default_evaluator = lambda c, d, dev: SyntheticEvaluator(c)  # type: ignore[assignment]
    ex.load_data = lambda c: None  # type: ignore[assignment]
    live.make_server = quick_server
    try:
        yield
    finally:
        ex.default_evaluator, ex.load_data, live.make_server = saved


def prepare(box: Sandbox) -> None:
    """The finished run and model file that status, report, train and export read."""
    from blockqnn.cli import main

    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
        code = main(["search", "--run-dir", box.run, "--budget", "3", "--dataset", "digits"])
        assert code == 0, quiet.getvalue()
        final = str(box.root / "final")
        argv = ["train", "--block", "1,1,3,0,0", "--dataset", "digits", "--out", final]
        argv += ["--recipe", "fast", "--epochs", "1", "--train-samples", "50", "--filters", "4"]
        assert main(argv) == 0, quiet.getvalue()
    os.replace(Path(final) / "model.pt", box.model)


def run_one(argv: list[str], timeout: int) -> tuple[int | None, str, str]:
    """(exit code, stderr, traceback text); exit code None for a hang."""
    from blockqnn.cli import main

    out, err = io.StringIO(), io.StringIO()
    signal.alarm(timeout)
    escaped = ""
    code: int | None
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
    except Hang:
        code = None
    except BaseException:  # what escapes main is a bug: shown as a traceback would be
        code = 1
        escaped = traceback.format_exc()
    finally:
        signal.alarm(0)
    return code, err.getvalue(), escaped


def fuzz(n: int, seed: int, timeout: int, box: Sandbox) -> Tally:
    from blockqnn.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    parsers: dict[str, argparse.ArgumentParser] = dict(sub.choices)
    commands = sorted(parsers)
    rng = random.Random(seed)
    tally = Tally()
    signal.signal(signal.SIGALRM, _alarm)
    for i in range(n):
        command = commands[i % len(commands)]
        argv = make_input(command, parsers[command], box, rng, i)
        before = box.fingerprints()
        code, err, escaped = run_one(argv, timeout)
        tally.inputs += 1
        if code is None:
            tally.hangs.append(argv)
        else:
            tally.exit_codes[code] = tally.exit_codes.get(code, 0) + 1
        if escaped or "Traceback" in err:
            tally.tracebacks.append((argv, escaped or err))
        after = box.fingerprints()
        for kind in SPECIAL:
            if after[kind] != before[kind]:
                tally.replaced.append((argv, kind))
                box.restore(kind)
    return tally


def _short(argv: list[str]) -> str:
    return " ".join(a if len(a) < 60 else a[:40] + f"...({len(a)} chars)" for a in argv)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=3000, help="inputs to try")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=int, default=120, help="seconds before a hang")
    parser.add_argument("--show", type=int, default=5, help="failures to print in full")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="blockqnn-fuzz-") as tmp:
        os.environ["XDG_CACHE_HOME"] = str(Path(tmp) / "cache")  # no shared evaluation cache
        cwd = os.getcwd()
        os.chdir(tmp)
        try:
            box = Sandbox(Path(tmp))
            with patched():
                prepare(box)
                tally = fuzz(args.n, args.seed, args.timeout, box)
        finally:
            os.chdir(cwd)
    print(f"inputs: {tally.inputs}; exit codes: {dict(sorted(tally.exit_codes.items()))}")
    print(f"tracebacks: {len(tally.tracebacks)}; hangs: {len(tally.hangs)}; "
          f"non-regular files replaced: {len(tally.replaced)}")  # fmt: skip
    for argv, text in tally.tracebacks[: args.show]:
        print(f"--- traceback: blockqnn {_short(argv)}\n{text.strip()[-1500:]}")
    for argv in tally.hangs[: args.show]:
        print(f"--- hang: blockqnn {_short(argv)}")
    for argv, kind in tally.replaced[: args.show]:
        print(f"--- replaced {kind}: blockqnn {_short(argv)}")
    return 1 if tally.tracebacks or tally.hangs or tally.replaced else 0


if __name__ == "__main__":
    sys.exit(main())
