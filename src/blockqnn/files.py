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


def current_umask() -> int:
    """This process's umask, read without changing it where Linux shows it (os.umask can only
    be read by setting it, which races with other threads creating files)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def temp_beside(path: Path, what: str) -> tuple[int, Path]:
    """Create `path`'s folder and an open temp file beside it; returns (fd, temp path).

    The temp file gets the mode any new file gets (0666 less the umask), not mkstemp's 0600,
    so that the file it is renamed to can be read by whom the umask allows (a service running
    as another user loading model.pt). `what` names the option or thing in the error."""
    if path.is_dir():
        raise BlockQNNError(f"{what} {path}: is a directory")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.chmod(tmp, 0o666 & ~current_umask())
    except OSError as exc:
        raise BlockQNNError(f"{what} {path}: cannot write: {exc.strerror}") from None
    return fd, Path(tmp)


def write_atomic(path: str | Path, data: str | bytes, what: str = "output") -> Path:
    """Write `data` to `path` through a temp file and a rename (mode: 0666 less the umask)."""
    target = Path(path)
    fd, tmp = temp_beside(target, what)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
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
