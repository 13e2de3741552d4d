"""Every command on a really full disk: a small tmpfs (needs root; `mount -t tmpfs`), filled
with a filler file, then freed. Prints one row per case: exit code, the error line, and
whether a resume after freeing the space completed. Not run in CI (it mounts a file system);
the tests simulate these failures with patched writes instead.

Usage: python tools/full_disk.py [--size-mb 8]
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

PY = sys.executable


@contextlib.contextmanager
def tmpfs(size_mb: int) -> Iterator[Path]:
    where = Path(tempfile.mkdtemp(prefix="blockqnn-full-"))
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(where)], check=True
    )
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=False)
        where.rmdir()


def fill(where: Path) -> Path:
    """Fill the file system until a write fails; returns the filler file."""
    filler = where / "filler"
    # suppress outside open: closing the file flushes its buffer, which fails on a full disk
    with contextlib.suppress(OSError), open(filler, "wb") as f:
        while True:
            f.write(b"\0" * 65536)
            f.flush()
    with contextlib.suppress(OSError), open(where / "filler2", "wb") as f:  # the last bytes
        while True:
            f.write(b"\0")
            f.flush()
    return filler


def blockqnn(*args: str) -> tuple[int, str]:
    proc = subprocess.run(
        [PY, "-m", "blockqnn", *args], capture_output=True, text=True, timeout=600
    )
    return proc.returncode, proc.stderr.strip()


def free(where: Path) -> None:
    for name in ("filler", "filler2"):
        (where / name).unlink(missing_ok=True)


def report(case: str, code: int, err: str) -> bool:
    errors = [line for line in err.splitlines() if "error:" in line]  # train also logs
    ok = code == 2 and len(errors) == 1 and "Traceback" not in err and "full" in errors[0]
    ok = ok and "damaged" not in err
    print(f"{'ok ' if ok else 'BAD'} {case}: exit {code}: {err.splitlines()[-1][-300:]!r}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mb", type=int, default=8)
    size = parser.parse_args().size_mb
    search = ["--dataset", "digits", "--epochs", "1", "--train-samples", "100", "--no-cache"]
    good = True
    with tmpfs(size) as where:
        run, final = where / "run", where / "final"
        code, err = blockqnn("search", "--run-dir", str(run), "--budget", "2", *search)
        assert code == 0, err
        code, err = blockqnn(
            "train",
            str(run),
            "--out",
            str(final),
            "--recipe",
            "fast",
            "--epochs",
            "1",
            "--train-samples",
            "100",
            "--filters",
            "4",
        )
        assert code == 0, err
        fill(where)
        good &= report(
            "search --run-dir (new run)",
            *blockqnn("search", "--run-dir", str(where / "new"), "--budget", "2", *search),
        )
        good &= report(
            "search --resume (session start)",
            *blockqnn("search", "--resume", str(run), "--budget", "4"),
        )
        good &= report("show --svg", *blockqnn("show", "1,1,3,0,0", "--svg", str(where / "b.svg")))
        good &= report(
            "report --out", *blockqnn("report", str(run), "--out", str(where / "r.html"))
        )
        for fmt in ("torchscript", "onnx"):
            good &= report(
                f"export --format {fmt}",
                *blockqnn(
                    "export", str(final / "model.pt"), "--format", fmt, "--out", str(where / "m.x")
                ),
            )
        good &= report(
            "train (a checkpoint)",
            *blockqnn(
                "train",
                "--block",
                "1,1,3,0,0",
                "--dataset",
                "digits",
                "--out",
                str(where / "t"),
                "--recipe",
                "fast",
                "--epochs",
                "2",
                "--train-samples",
                "100",
                "--filters",
                "4",
            ),
        )
        leftovers = [p.name for p in where.rglob("*.tmp")]
        print(f"{'ok ' if not leftovers else 'BAD'} temporary files left: {leftovers}")
        good &= not leftovers
        free(where)
        code, err = blockqnn("search", "--resume", str(run), "--budget", "4")
        mark = "ok " if code == 0 else "BAD"
        print(f"{mark} resume after freeing space: exit {code} {err[-200:]!r}")
        good &= code == 0
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
