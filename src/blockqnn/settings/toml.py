"""Reading a config file: a TOML file read safely, and each value checked against the type
of the setting it sets.

Owns: `read_toml` (a regular UTF-8 file of at most `MAX_CONFIG_BYTES`, every failure a
one-line `BlockQNNError` naming the file), `coerce` (a TOML value against its default's type)
and `toml_text` (a value echoed back as the user wrote it). Must not know the sections or
their defaults: `blockqnn.settings.config` does.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

from blockqnn.errors import ECHO_LIMIT, BlockQNNError, clip

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

MAX_CONFIG_BYTES = 1 << 20  # a config file of every section is ~2 KB; refuse what cannot be one


def read_toml(path: str | Path) -> dict[str, Any]:
    """The tables of a TOML file. Anything that is not a readable regular file of at most
    `MAX_CONFIG_BYTES` is refused without reading it (a FIFO would block forever)."""
    if str(path) == "":
        raise BlockQNNError("config file: the name is empty; give a TOML file")
    p = Path(path)
    name = clip(str(p))
    try:
        # O_NONBLOCK: opening a FIFO for reading must not wait for a writer
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise BlockQNNError(f"config file {name} does not exist") from None
    except OSError as exc:
        raise BlockQNNError(f"config file {name}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            what = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file"
            raise BlockQNNError(f"config file {name}: {what}")
        if info.st_size > MAX_CONFIG_BYTES:
            raise BlockQNNError(
                f"config file {name}: {info.st_size:,} bytes, more than a config can be "
                f"({MAX_CONFIG_BYTES:,})"
            )
        with os.fdopen(fd, "rb") as f:
            fd = -1  # closed by the file object
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise BlockQNNError(f"config file {name}: {exc.strerror}") from None
    finally:
        if fd >= 0:
            os.close(fd)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BlockQNNError(f"config file {name}: not UTF-8 text") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BlockQNNError(f"config file {name}: invalid TOML: {clip(str(exc))}") from None
    except ValueError as exc:  # an integer of over 4,300 digits
        raise BlockQNNError(f"config file {name}: invalid TOML: {clip(str(exc))}") from None
    except RecursionError:  # arrays or tables nested thousands deep
        raise BlockQNNError(f"config file {name}: invalid TOML: nested too deeply") from None


def toml_text(value: Any) -> str:
    """A config value as it is written in TOML (`true`, `"text"`, `[1, 2]`), cut like `clip`:
    the user wrote TOML, not Python (`True`, `'text'`)."""

    def text(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return json.dumps(v, ensure_ascii=False)
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(text(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{k} = {text(x)}" for k, x in v.items()) + "}"
        return clip(v, limit=10 * ECHO_LIMIT)

    try:
        return clip(text(value))
    except RecursionError:  # arrays nested thousands deep
        return f"<a {type(value).__name__}>"


def coerce(value: Any, default: Any, where: str) -> Any:
    """Check a TOML value against the default's type; ints are accepted for floats."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise BlockQNNError(f"{where} = {toml_text(value)}: expected true or false")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise BlockQNNError(f"{where} = {toml_text(value)}: expected an integer")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise BlockQNNError(f"{where} = {toml_text(value)}: expected a number")
        try:
            return float(value)
        except OverflowError:  # an integer beyond any float
            raise BlockQNNError(f"{where} = {toml_text(value)}: must be a finite number") from None
    if where == "train.threads" and isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # `threads = 2`: a number of threads
    if isinstance(default, str):
        if not isinstance(value, str):
            raise BlockQNNError(f"{where} = {toml_text(value)}: expected a string")
        return value
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)) or len(value) != len(default):
            raise BlockQNNError(
                f"{where} = {toml_text(value)}: expected a list of {len(default)} values"
            )
        return tuple(coerce(v, d, where) for v, d in zip(value, default, strict=True))
    return value
