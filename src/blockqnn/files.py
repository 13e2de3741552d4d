"""Writing output files atomically, with one-line errors for places that cannot be written,
and the one check of a path the user gave.

Owns: the temp-file-and-rename pattern every output uses (diagrams, reports, model files,
exports), so a reader or a kill never sees half a file; the refusal to replace an existing
target that is not a regular file (a device, a folder, a FIFO, or a symlink to one: renaming
over `/dev/null` breaks the machine) or, where the caller asks (`check_replace`), a file of
another kind; the words for why a write failed ("disk full", "permission denied");
`check_path`, the length, loop and existence checks of a user's path; `lock_file`, one
writer at a time (`lock_folder` too); and `user_cache_dir`, where caches live by default.
An unwritable or unusable path is bad input (exit 2), never a traceback. Must not know what
is written.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, TextIO

from blockqnn.errors import BlockQNNError, clip

PATH_MAX = 4096  # bytes of a whole path (Linux's PATH_MAX)
NAME_MAX = 255  # bytes of one path component (every common Linux file system)

# errno -> the words a user understands; anything else keeps the system's own text
_REASONS = {
    errno.ENOSPC: "disk full",
    errno.EDQUOT: "disk quota exceeded (disk full for this user)",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "read-only file system",
    errno.ENAMETOOLONG: "file name too long",
    errno.ELOOP: "symlink loop",
    errno.ENOTDIR: "a part of the path is not a folder",
}


def os_reason(exc: OSError) -> str:
    """Why an OS call failed, in the words a user reads: "disk full", "permission denied"..."""
    if exc.errno in _REASONS:
        return _REASONS[exc.errno]
    return exc.strerror or type(exc).__name__


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISREG, "a file"),
    ):
        if test(mode):
            return name
    return "of an unknown kind"


def check_path(path: str | os.PathLike[str], what: str, must_exist: bool = False) -> Path:
    """`path` checked once, where it is read from the user: not empty, at most PATH_MAX bytes,
    no component over NAME_MAX, no symlink loop, existing when `must_exist`. Returns it as a
    Path; BlockQNNError (one line) otherwise."""
    text = os.fspath(path)
    shown = clip(text)
    if not text:
        raise BlockQNNError(f"{what}: the name is empty")
    if "\0" in text:
        raise BlockQNNError(f"{what} {shown}: a path cannot hold a NUL character")
    raw = os.fsencode(text)
    if len(raw) > PATH_MAX:
        raise BlockQNNError(f"{what} {shown}: path of {len(raw)} bytes (at most {PATH_MAX})")
    longest = max(len(part) for part in raw.split(b"/"))
    if longest > NAME_MAX:
        raise BlockQNNError(
            f"{what} {shown}: a path component of {longest} bytes (at most {NAME_MAX})"
        )
    try:
        os.stat(text)
    except FileNotFoundError:
        if must_exist:
            raise BlockQNNError(f"{what} {shown}: no such file or directory") from None
    except OSError as exc:
        if exc.errno == errno.ENOTDIR and not must_exist:
            pass  # reported as a write error when it is written
        else:
            raise BlockQNNError(f"{what} {shown}: {os_reason(exc)}") from None
    return Path(text)


def check_output(path: Path, what: str) -> None:
    """Refuse a target that exists and is not a regular file (followed through symlinks):
    an atomic rename would replace a device, a FIFO or a link to one with a plain file."""
    check_path(path, what)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise BlockQNNError(f"{what} {clip(str(path))}: cannot write: {os_reason(exc)}") from None
    if not stat.S_ISREG(mode):
        raise BlockQNNError(
            f"{what} {clip(str(path))}: is {_kind(mode)}, not a regular file; not replacing it"
        )


def check_replace(path: Path, what: str, kind: str, is_kind: Callable[[Path], bool]) -> None:
    """`check_output`, and an existing file is replaced only where it is empty or `is_kind`
    (an earlier report, diagram or export of this command): any other file, such as a run's
    store or the model being exported, is refused with nothing written."""
    check_output(path, what)
    try:
        if path.stat().st_size == 0 or is_kind(path):
            return
    except FileNotFoundError:
        return
    except OSError as exc:
        raise BlockQNNError(f"{what} {clip(str(path))}: cannot read: {os_reason(exc)}") from None
    raise BlockQNNError(
        f"{what} {clip(str(path))}: exists and is not {kind}; not replacing it (remove it or "
        "choose another path)"
    )


def starts_with(*prefixes: bytes) -> Callable[[Path], bool]:
    """A test that a file's first bytes (leading white space and case aside) are one of
    `prefixes`: how `check_replace` knows an HTML page or an SVG drawing."""

    def test(path: Path) -> bool:
        with path.open("rb") as f:
            head = f.read(256).lstrip().lower()
        return head.startswith(prefixes)

    return test


HTML = starts_with(b"<!doctype html", b"<html")
SVG = starts_with(b"<?xml", b"<svg")


def lock_file(path: Path, unwritable: str, busy: str, patience_s: float = 0.0) -> TextIO:
    """An exclusive lock on `path` (created), held by the returned handle until it is
    closed: one writer at a time (`lock_folder` too). Another holder for `patience_s` is
    `BlockQNNError(busy)`; a file that cannot be opened is `unwritable (name: reason)`."""
    try:
        handle = open(path, "a+")  # noqa: SIM115 - held until close()
    except OSError as exc:
        raise BlockQNNError(f"{unwritable} ({path.name}: {os_reason(exc)})") from None
    try:
        _flock(handle.fileno(), busy, patience_s)
    except BlockQNNError:
        handle.close()
        raise
    return handle


@contextlib.contextmanager
def lock_folder(path: Path, busy: str) -> Iterator[None]:
    """An exclusive lock on the folder `path` itself while the block runs, so it leaves no
    file behind; another holder is `BlockQNNError(busy)`."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise BlockQNNError(f"{clip(str(path))}: cannot open: {os_reason(exc)}") from None
    try:
        _flock(fd, busy, 0.0)
        yield
    finally:
        os.close(fd)


def _flock(fd: int, busy: str, patience_s: float) -> None:
    """Take an exclusive flock on `fd`, retrying for `patience_s`; `BlockQNNError(busy)` if
    another holder keeps it. No-op where there is no fcntl (not POSIX)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no cross-process lock
        return
    deadline = time.monotonic() + patience_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError:
            if time.monotonic() >= deadline:
                raise BlockQNNError(busy) from None
            time.sleep(0.005)


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

    The target is checked first (`check_output`). The temp file gets the mode any new file
    gets (0666 less the umask), not mkstemp's 0600, so that the file it is renamed to can be
    read by whom the umask allows (a service running as another user loading model.pt).
    `what` names the option or thing in the error."""
    check_output(path, what)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise BlockQNNError(f"{what} {clip(str(path))}: cannot write: {os_reason(exc)}") from None
    try:
        os.chmod(tmp, 0o666 & ~current_umask())
    except OSError as exc:
        os.close(fd)
        Path(tmp).unlink(missing_ok=True)
        raise BlockQNNError(f"{what} {clip(str(path))}: cannot write: {os_reason(exc)}") from None
    return fd, Path(tmp)


def write_with(path: str | Path, write: Callable[[BinaryIO], None], what: str = "output") -> Path:
    """Write `path` through a temp file beside it, fsync and a rename; `write` fills the open
    file. Any error (a full disk mid-write included) removes the temp file; an OSError is
    one line naming the cause ("disk full", "permission denied"), the old file untouched."""
    # through a symlink: the file it names is replaced and the link kept (a rename onto the
    # link would replace the link with a plain file and leave its target as it was)
    target = Path(os.path.realpath(path)) if Path(path).is_symlink() else Path(path)
    fd, tmp = temp_beside(target, what)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise BlockQNNError(
            f"{what} {clip(str(target))}: cannot write: {os_reason(exc)}"
            + (" (nothing was changed; free some space and run it again)" if _full(exc) else "")
        ) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def _full(exc: OSError) -> bool:
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)


def write_atomic(path: str | Path, data: str | bytes, what: str = "output") -> Path:
    """Write `data` to `path` through a temp file and a rename (mode: 0666 less the umask)."""
    raw = data.encode() if isinstance(data, str) else data
    return write_with(path, lambda f: _write_all(f, raw), what)


def _write_all(f: BinaryIO, raw: bytes) -> None:
    f.write(raw)


def make_dir(path: Path, what: str) -> None:
    """`mkdir -p`, with an unusable place (a device, a FIFO, a file) reported as bad input."""
    check_path(path, what)
    try:
        mode = os.stat(path).st_mode
    except OSError:
        pass  # missing (created below) or unusable (mkdir says why)
    else:
        if not stat.S_ISDIR(mode):
            raise BlockQNNError(f"{what} {clip(str(path))}: is {_kind(mode)}, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BlockQNNError(f"{what} {clip(str(path))}: cannot create: {os_reason(exc)}") from None


def user_cache_dir() -> Path:
    """The user cache folder (XDG): $XDG_CACHE_HOME/blockqnn, else ~/.cache/blockqnn. The
    evaluation, latency and decoded-data caches all default to it."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".cache"
    return root / "blockqnn"
