"""CIFAR-10 and CIFAR-100 from the official python-pickle archives.

Owns: finding the archive (in `data_dir`, else the cache), downloading it from the official
URL with `urllib` when absent, verifying it against the official checksums (md5 as published
on the CIFAR page, and sha256), and decoding it into uint8 arrays, which are cached as one .npz
keyed by the archive's md5. A file that fails verification is never decoded: a download (or a
file in the cache) is removed, a file the user put in `data_dir` is left for them to replace.
Must not split or augment.

The pickles are read from the tar in memory (nothing is extracted to disk) with an unpickler
that only admits the numpy array constructors, so even a verified archive cannot run code.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import pickle
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from blockqnn.data.cache import load_npz, save_npz
from blockqnn.errors import BlockQNNError

URL_BASE = "https://www.cs.toronto.edu/~kriz/"  # the official site; archive names are appended
URL_ENV = "BLOCKQNN_CIFAR_URL_BASE"  # overrides URL_BASE (a mirror, or a test's local server)
TIMEOUT = 60.0  # seconds without progress before a download is abandoned


@dataclass(frozen=True)
class Archive:
    filename: str
    size: int  # bytes; checked before hashing so a truncated file fails fast and clearly
    md5: str  # as published on https://www.cs.toronto.edu/~kriz/cifar.html
    sha256: str  # as pinned by Keras and torchvision-style loaders
    folder: str  # top-level folder inside the tar
    train: tuple[str, ...]  # member names (inside `folder`) of the training pickles
    test: tuple[str, ...]
    meta: str
    label_key: str
    names_key: str


ARCHIVES: dict[str, Archive] = {
    "cifar10": Archive(
        filename="cifar-10-python.tar.gz",
        size=170_498_071,
        md5="c58f30108f718f92721af3b95e74349a",
        sha256="6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
        folder="cifar-10-batches-py",
        train=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test=("test_batch",),
        meta="batches.meta",
        label_key="labels",
        names_key="label_names",
    ),
    "cifar100": Archive(
        filename="cifar-100-python.tar.gz",
        size=169_001_437,
        md5="eb9058c3a382ffc7106e4002c42a8d85",
        sha256="85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7",
        folder="cifar-100-python",
        train=("train",),
        test=("test",),
        meta="meta",
        label_key="fine_labels",  # the 100-class labels; "coarse_labels" are the 20 superclasses
        names_key="fine_label_names",
    ),
}


class Decoded(NamedTuple):
    x_train: np.ndarray  # uint8 (N, 3, 32, 32)
    y_train: np.ndarray  # int64 (N,)
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...]


def url_base() -> str:
    base = os.environ.get(URL_ENV, "") or URL_BASE
    return base if base.endswith("/") else base + "/"


def load_cifar(name: str, data_dir: Path | None, cache: Path, download: bool) -> Decoded:
    """The decoded official splits of `name` ("cifar10" or "cifar100")."""
    spec = ARCHIVES[name]
    cached_path = cache / f"{name}-{spec.md5[:12]}.npz"
    cached = load_npz(
        cached_path, {"x_train": "u", "y_train": "i", "x_test": "u", "y_test": "i", "classes": "U"}
    )
    if cached is not None:
        return Decoded(
            cached["x_train"],
            cached["y_train"],
            cached["x_test"],
            cached["y_test"],
            tuple(str(c) for c in cached["classes"]),
        )
    archive = _find_or_download(spec, data_dir, cache, download)
    decoded = read_archive(archive, spec)
    save_npz(
        cached_path,
        {
            "x_train": decoded.x_train,
            "y_train": decoded.y_train,
            "x_test": decoded.x_test,
            "y_test": decoded.y_test,
            "classes": np.array(decoded.classes),
        },
    )
    return decoded


def _find_or_download(spec: Archive, data_dir: Path | None, cache: Path, download: bool) -> Path:
    if data_dir is not None:
        user_file = data_dir / spec.filename
        if user_file.is_file():
            problem = _verify_file(user_file, spec)
            if problem:
                raise BlockQNNError(
                    f"{user_file}: {problem}; it was not used, replace it with the official file"
                )
            return user_file
    target_dir = data_dir if data_dir is not None else cache
    target = target_dir / spec.filename
    if data_dir is None and target.is_file():
        problem = _verify_file(target, spec)
        if not problem:
            return target
        target.unlink()  # a bad file in our own cache: drop it and fetch a fresh copy
    if not download:
        raise BlockQNNError(
            f"{spec.filename} not found in {target_dir} and downloading is disabled"
        )
    return _download(spec, target)


def _verify_file(path: Path, spec: Archive) -> str:
    """ "" when `path` matches the official size and checksums, else what is wrong."""
    size = path.stat().st_size
    if size != spec.size:
        return f"size {size} bytes, expected {spec.size}"
    md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            md5.update(chunk)
            sha.update(chunk)
    return _checksum_problem(md5.hexdigest(), sha.hexdigest(), spec)


def _checksum_problem(md5: str, sha256: str, spec: Archive) -> str:
    if md5 != spec.md5:
        return f"checksum mismatch: md5 {md5}, expected {spec.md5}"
    if sha256 != spec.sha256:
        return f"checksum mismatch: sha256 {sha256}, expected {spec.sha256}"
    return ""


def _download(spec: Archive, target: Path) -> Path:
    """Stream the archive into a temporary file next to `target`, hashing as it arrives, and
    rename it into place only once verified."""
    url = url_base() + spec.filename
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(
            dir=target.parent, prefix=f".{spec.filename}.", suffix=".part"
        )
    except OSError as exc:
        raise BlockQNNError(f"cannot write {target}: {exc.strerror}") from None
    tmp = Path(tmp_name)
    md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            while chunk := response.read(1 << 20):
                md5.update(chunk)
                sha.update(chunk)
                out.write(chunk)
        size = tmp.stat().st_size
        problem = (
            f"size {size} bytes, expected {spec.size}"
            if size != spec.size
            else _checksum_problem(md5.hexdigest(), sha.hexdigest(), spec)
        )
        if problem:
            raise BlockQNNError(
                f"{spec.filename} downloaded from {url}: {problem}; the file was removed"
            )
        os.replace(tmp, target)
    except (urllib.error.URLError, OSError) as exc:  # URLError is an OSError; both read alike
        reason = getattr(exc, "reason", None) or exc.strerror or exc
        raise BlockQNNError(
            f"could not download {url}: {reason}; put {spec.filename} in the data dir instead"
        ) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return target


class _ArrayUnpickler(pickle.Unpickler):
    """Admits only what the CIFAR pickles hold: dicts, lists, strings and numpy arrays."""

    ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _unpickle(data: bytes) -> dict[str, Any]:
    # latin1: the official pickles were written by Python 2; this is numpy's advice for them
    obj = _ArrayUnpickler(io.BytesIO(data), encoding="latin1").load()
    if not isinstance(obj, dict):
        raise pickle.UnpicklingError("not a dict")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def read_archive(path: Path, spec: Archive) -> Decoded:
    """Decode the official tar.gz into arrays (one sequential pass through the archive)."""
    wanted = {f"{spec.folder}/{m}" for m in (*spec.train, *spec.test, spec.meta)}
    found: dict[str, dict[str, Any]] = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                if member.name in wanted and member.isfile():
                    f = tar.extractfile(member)
                    assert f is not None  # a regular file always has contents
                    found[member.name.rsplit("/", 1)[1]] = _unpickle(f.read())
        missing = [m for m in (*spec.train, *spec.test, spec.meta) if m not in found]
        if missing:
            raise BlockQNNError(
                f"{path}: not a {spec.filename} archive: {spec.folder}/{missing[0]} missing"
            )

        def join(members: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
            x = np.concatenate([np.asarray(found[m]["data"], dtype=np.uint8) for m in members])
            y = np.concatenate(
                [np.asarray(found[m][spec.label_key], dtype=np.int64) for m in members]
            )
            return x.reshape(-1, 3, 32, 32), y  # rows are 1024 red, 1024 green, 1024 blue

        x_train, y_train = join(spec.train)
        x_test, y_test = join(spec.test)
        classes = tuple(
            n.decode() if isinstance(n, bytes) else str(n) for n in found[spec.meta][spec.names_key]
        )
    except (
        tarfile.TarError,
        pickle.UnpicklingError,
        EOFError,
        KeyError,
        ValueError,
        OSError,
    ) as exc:
        if isinstance(exc, BlockQNNError):
            raise
        raise BlockQNNError(f"{path}: cannot read the archive: {exc}") from None
    return Decoded(x_train, y_train, x_test, y_test, classes)
