"""The on-disk cache of decoded dataset arrays.

Owns: where the cache lives, and reading and writing `.npz` files safely: writes go to a
temporary file in the same folder and are renamed into place (`os.replace`), so a crash never
leaves a half-written file under the final name; a file that cannot be read back completely
(truncated, bad CRC, missing or mistyped arrays) is reported as absent, so its caller decodes
again and overwrites it. Must not decode datasets or know their formats.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np

from blockqnn.files import user_cache_dir

CACHE_ENV = "BLOCKQNN_CACHE"  # overrides the default cache folder when config.cache_dir is ""


def cache_root(cache_dir: str = "") -> Path:
    """`cache_dir`, else $BLOCKQNN_CACHE, else the user cache folder ($XDG_CACHE_HOME/blockqnn,
    else ~/.cache/blockqnn), as the evaluation cache's (not created here)."""
    chosen = cache_dir or os.environ.get(CACHE_ENV, "")
    return Path(chosen).expanduser() if chosen else user_cache_dir()


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> bool:
    """Write `arrays` to `path` atomically (uncompressed: loading is then a plain read).

    Returns False, with a warning, when the folder is not writable: the cache is only an
    optimisation, so a read-only cache costs time on the next run, not this run.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        warnings.warn(f"blockqnn: cannot write the data cache {path}: {exc}", stacklevel=3)
        return False
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)  # type: ignore[arg-type]
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        warnings.warn(f"blockqnn: cannot write the data cache {path}: {exc}", stacklevel=3)
        return False
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return True


def load_npz(path: Path, dtypes: dict[str, str]) -> dict[str, np.ndarray] | None:
    """Every array named in `dtypes` (name -> numpy dtype kind, e.g. "u", "i", "U"), fully read;
    None when the file is missing or is not a complete, valid cache file."""
    if not path.is_file():
        return None
    try:
        with (
            path.open("rb") as fh,
            np.load(fh, allow_pickle=False) as f,
        ):  # fh: closed on errors too
            out = {name: f[name] for name in dtypes}  # reading checks each member's CRC
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):
        return None
    for name, kind in dtypes.items():
        if out[name].dtype.kind != kind:
            return None
    return out
