"""Writing output files atomically, with one-line errors for places that cannot be written.

Owns: the temp-file-and-rename pattern every output uses (diagrams, reports, model files,
exports), so a reader or a kill never sees half a file and an unwritable path is bad input
(exit 2), not a traceback. Must not know what is written.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from blockqnn.errors import BlockQNNError


def temp_beside(path: Path, what: str) -> tuple[int, Path]:
    """Create `path`'s folder and an open temp file beside it; returns (fd, temp path).

    `what` names the option or thing in the error, e.g. "--out"."""
    if path.is_dir():
        raise BlockQNNError(f"{what} {path}: is a directory")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise BlockQNNError(f"{what} {path}: cannot write: {exc.strerror}") from None
    return fd, Path(tmp)


def write_atomic(path: str | Path, data: str | bytes, what: str = "output") -> Path:
    """Write `data` to `path` through a temp file and a rename; readable by all (0644)."""
    target = Path(path)
    fd, tmp = temp_beside(target, what)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; outputs are meant to be shared
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def make_dir(path: Path, what: str) -> None:
    """`mkdir -p`, with an unusable place reported as bad input."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BlockQNNError(f"{what} {path}: cannot create: {exc.strerror}") from None
