"""Tests of blockqnn.data: sources, cache, splits, device copies and augmentation."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import io
import os
import pickle
import struct
import tarfile
import threading
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from blockqnn.data import augment, cifar, default_augmentation, load_arrays, local
from blockqnn.data.cache import cache_root, load_npz, save_npz
from blockqnn.data.splits import balanced_subset, stratified_split, val_count
from blockqnn.errors import BlockQNNError
from blockqnn.settings.config import DataConfig

SHARED_TAR = Path(__file__).resolve().parents[3] / "shared" / "data" / "cifar10-jpg.tar.gz"


def rows(x: np.ndarray) -> list[bytes]:
    return sorted(img.tobytes() for img in x)


# ---------------------------------------------------------------- digits and splits


def test_digits_shapes_splits_and_determinism() -> None:
    data = load_arrays(DataConfig(dataset="digits"))
    assert data.input_shape == (1, 8, 8) and data.num_classes == 10
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == (1150, 288, 359)
    for x, y in (
        (data.x_train, data.y_train),
        (data.x_val, data.y_val),
        (data.x_test, data.y_test),
    ):
        assert x.dtype == np.uint8 and y.dtype == np.int64 and len(x) == len(y)
    assert data.x_train.max() == 255 and data.x_train.min() == 0
    # train + val is exactly the official-training part: a partition, nothing lost or shared
    from blockqnn.data import load_digits

    raw = load_digits()
    assert rows(np.concatenate([data.x_train, data.x_val])) == rows(raw.x_train)
    # stratified: every class's validation share is within one image of 20%
    share = np.bincount(data.y_val, minlength=10) / np.bincount(raw.y_train, minlength=10)
    assert np.all(np.abs(share - 0.2) < 1.5 / np.bincount(raw.y_train).min())
    again = load_arrays(DataConfig(dataset="digits"))
    assert np.array_equal(again.x_val, data.x_val) and np.array_equal(again.y_train, data.y_train)
    other = load_arrays(DataConfig(dataset="digits", seed=1))
    assert not np.array_equal(other.x_val, data.x_val)
    assert np.array_equal(other.x_test, data.x_test)  # the test split never depends on the seed
    assert data.mean[0] == pytest.approx(data.x_train.mean() / 255)
    assert data.std[0] == pytest.approx((data.x_train / 255).std())


def test_digits_match_scikit_learn() -> None:
    from sklearn.datasets import load_digits as sk_digits

    from blockqnn.data import _digits_table

    bunch = sk_digits()
    table = _digits_table()
    assert np.array_equal(table[:, :64], bunch.data) and np.array_equal(table[:, 64], bunch.target)


def test_train_samples_and_val_size() -> None:
    data = load_arrays(DataConfig(dataset="digits", train_samples=200, val_size=50, seed=3))
    assert (len(data.x_train), len(data.x_val)) == (150, 50)
    assert np.array_equal(np.bincount(np.concatenate([data.y_train, data.y_val])), [20] * 10)
    frac = load_arrays(DataConfig(dataset="digits", train_samples=100, val_size=0.3))
    assert (len(frac.x_train), len(frac.x_val)) == (70, 30)
    assert np.array_equal(np.bincount(frac.y_val), [3] * 10)
    with pytest.raises(BlockQNNError, match="leaves no training images"):
        load_arrays(DataConfig(dataset="digits", train_samples=100, val_size=100))
    # a fraction that rounds to every image is refused the same way, before any training
    with pytest.raises(BlockQNNError, match=r"0\.999 \(100 images\): leaves no training"):
        load_arrays(DataConfig(dataset="digits", train_samples=100, val_size=0.999))
    one_left = load_arrays(DataConfig(dataset="digits", train_samples=100, val_size=0.99))
    assert len(one_left.x_train) == 1
    with pytest.raises(BlockQNNError, match="whole number"):
        load_arrays(DataConfig(dataset="digits", val_size=2.5))


def test_split_helpers() -> None:
    y = np.array([0] * 2 + [1] * 10 + [2] * 30)
    pick = balanced_subset(y, 12, seed=0)  # class 0 has only 2: the others share its remainder
    assert np.array_equal(np.bincount(y[pick]), [2, 5, 5])
    assert np.array_equal(balanced_subset(y, 100, seed=0), np.arange(len(y)))
    keep, out = stratified_split(y, 21, seed=0)
    assert np.array_equal(np.bincount(y[out], minlength=3), [1, 5, 15])
    assert len(np.intersect1d(keep, out)) == 0 and len(keep) + len(out) == len(y)
    assert val_count(0, 50000) == 5000 and val_count(0, 1000) == 200 and val_count(0.1, 50) == 5
    with pytest.raises(BlockQNNError, match="at least 2"):
        val_count(0, 1)


# ---------------------------------------------------------------- image folders


@pytest.fixture(scope="module")
def cifar_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 train and 20 test images per class of the shared CIFAR-10 JPEGs."""
    if not SHARED_TAR.is_file():
        pytest.skip(f"{SHARED_TAR} not present")
    root = tmp_path_factory.mktemp("cifar10-jpg")
    taken: dict[str, int] = {}
    with tarfile.open(SHARED_TAR, "r:gz") as tar:
        for member in tar:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) != 3:
                continue
            key = f"{parts[0]}/{parts[1]}"
            if taken.get(key, 0) < 20:
                taken[key] = taken.get(key, 0) + 1
                (root / key).mkdir(parents=True, exist_ok=True)
                f = tar.extractfile(member)
                assert f is not None
                (root / member.name).write_bytes(f.read())
    return root


def fail_decode(path: str) -> np.ndarray:
    raise AssertionError(f"decoded {path} although the cache is valid")


def test_cifar_folder_load_cache_and_split(
    cifar_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = DataConfig(dataset=str(cifar_folder), cache_dir=str(tmp_path / "cache"))
    data = load_arrays(config)
    assert data.input_shape == (3, 32, 32) and data.classes[0] == "airplane"
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == (160, 40, 200)
    assert np.array_equal(np.bincount(data.y_val), [4] * 10)
    first = sorted((cifar_folder / "train" / "airplane").iterdir())[0]
    assert rows(np.asarray(Image.open(first)).transpose(2, 0, 1)[None])[0] in set(
        rows(np.concatenate([data.x_train, data.x_val]))
    )
    (cache_file,) = (tmp_path / "cache").iterdir()

    monkeypatch.setattr(local, "_decode_image", fail_decode)
    again = load_arrays(config)  # from the cache: the decoder is never called
    assert np.array_equal(again.x_train, data.x_train) and again.classes == data.classes

    cache_file.write_bytes(cache_file.read_bytes()[:5000])  # truncated: must not be trusted
    with pytest.raises(AssertionError, match="decoded"):
        load_arrays(config)
    monkeypatch.undo()
    rebuilt = load_arrays(config)
    assert np.array_equal(rebuilt.x_train, data.x_train)
    assert load_npz(cache_file, {"x_train": "u"}) is not None  # rewritten whole

    monkeypatch.setattr(local, "_decode_image", fail_decode)
    os.utime(first, ns=(0, 0))  # a changed folder is decoded again
    with pytest.raises(AssertionError, match="decoded"):
        load_arrays(config)


def write_image(path: Path, mode: str, size: tuple[int, int] = (6, 4), value: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    color: int | tuple[int, ...] = value if mode == "L" else (value, 255 - value, 7)
    Image.new(mode, size, color).save(path)


def test_folder_colour_modes(tmp_path: Path) -> None:
    for split, n in (("train", 3), ("test", 1)):
        for c in ("a", "b"):
            for i in range(n):
                write_image(tmp_path / "gray" / split / c / f"{i}.png", "L", value=10 * i)
    (tmp_path / "gray" / "train" / "a" / ".DS_Store").write_bytes(b"junk")  # hidden: skipped
    (tmp_path / "gray" / "train" / "a" / "notes.txt").write_text("not an image")  # skipped
    gray = load_arrays(DataConfig(dataset=str(tmp_path / "gray"), cache_dir=str(tmp_path / "c")))
    assert gray.input_shape == (1, 4, 6) and gray.classes == ("a", "b")
    assert len(gray.x_train) + len(gray.x_val) == 6
    write_image(tmp_path / "gray" / "test" / "b" / "rgb.png", "RGB", value=50)
    write_image(tmp_path / "gray" / "test" / "b" / "pal.gif", "P", value=9)
    with pytest.warns(UserWarning, match=r"2 of 10 images .* converted to grayscale"):
        few = load_arrays(DataConfig(dataset=str(tmp_path / "gray"), cache_dir=str(tmp_path / "c")))
    assert few.input_shape == (1, 4, 6)  # two colour files do not make the set RGB
    # Pillow's luma of (50, 205, 7): (50 * 299 + 205 * 587 + 7 * 114) / 1000 = 136
    assert 136 in {int(img[0, 0, 0]) for img in few.x_test}
    for i in range(7):  # now most images have colour: the set is RGB
        write_image(tmp_path / "gray" / "train" / "a" / f"c{i}.png", "RGB", value=50)
    mixed = load_arrays(DataConfig(dataset=str(tmp_path / "gray"), cache_dir=str(tmp_path / "c")))
    assert mixed.input_shape == (3, 4, 6)
    gray_img = mixed.x_test[mixed.y_test == 0][0]
    assert np.array_equal(gray_img[0], gray_img[1]) and np.array_equal(gray_img[1], gray_img[2])
    assert {tuple(img[:, 0, 0]) for img in mixed.x_test} >= {(50, 205, 7)}


def test_an_rgb_file_of_gray_pixels_is_grayscale(tmp_path: Path) -> None:
    for split in ("train", "test"):
        for c in ("a", "b"):
            write_image(tmp_path / split / c / "0.png", "L", value=10)
            Image.new("RGB", (6, 4), (77, 77, 77)).save(tmp_path / split / c / "1.png")
    data = load_arrays(DataConfig(dataset=str(tmp_path), cache_dir=str(tmp_path / "c")))
    assert data.input_shape == (1, 4, 6)


def test_wide_grayscale_images_are_scaled_not_clipped(tmp_path: Path) -> None:
    """16-bit PNGs and [0, 1] float TIFFs: Pillow's convert("L") would clip them at 255."""
    ramp = np.arange(24).reshape(4, 6)
    for split in ("train", "test"):
        for c in ("a", "b"):
            folder = tmp_path / split / c
            folder.mkdir(parents=True)
            Image.fromarray((ramp * 2849).astype(np.uint16)).save(folder / "0.png")  # I;16
            Image.fromarray((ramp / 23).astype(np.float32)).save(folder / "1.tif")  # F
    data = load_arrays(DataConfig(dataset=str(tmp_path), cache_dir=str(tmp_path / "c")))
    assert data.input_shape == (1, 4, 6)
    expected = np.rint(ramp * 2849 * 255 / 65535), np.rint(ramp / 23 * 255)
    for img in data.x_test:
        assert any(np.array_equal(img[0], e) for e in expected)
    assert {int(v) for img in data.x_test for v in img.ravel()} >= {0, 255}

    Image.fromarray(np.full((4, 6), 2.0, np.float32)).save(tmp_path / "test" / "a" / "hot.tif")
    with pytest.raises(BlockQNNError, match=r"hot.tif: a float image .* \[0, 1\]"):
        load_arrays(DataConfig(dataset=str(tmp_path), cache_dir=str(tmp_path / "c")))


def png_header(path: Path, width: int, height: int) -> None:
    """A PNG that declares a size and holds no pixels: its header is all Pillow reads first."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


def dds_of_unknown_format(path: Path) -> None:
    """A DDS header whose pixel format has no flags: Pillow raises NotImplementedError."""
    header = struct.pack("<I3I", 124, 0, 4, 4) + bytes(56) + struct.pack("<4I", 32, 0, 0, 0)
    path.write_bytes(b"DDS " + header + bytes(36))


def test_a_non_utf8_file_name_is_read_and_fingerprinted(tmp_path: Path) -> None:
    """Linux allows any bytes in a name; Python gives b"\\xff" as the surrogate "\\udcff"."""
    root = tmp_path / os.fsdecode(b"set\xfe")
    for split in ("train", "test"):
        for c in ("a", "b"):
            write_image(root / split / c / "0.png", "L")
            write_image(root / split / c / "1.png", "L", value=9)
    try:
        write_image(root / "train" / "a" / os.fsdecode(b"\xff.png"), "L", value=5)
    except (OSError, UnicodeError):
        pytest.skip("this file system refuses a non-UTF-8 name")
    data = load_arrays(DataConfig(dataset=str(root), cache_dir=str(tmp_path / "c")))
    assert len(data.x_train) + len(data.x_val) == 5
    assert local.folder_fingerprint(root) != ""


def class_b_in_train_only(root: Path) -> None:
    write_image(root / "train" / "b" / "0.png", "L")
    (root / "test" / "b").mkdir()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda r: None, "does not exist"),
        # Pillow's DecompressionBombError at open, then a size no network takes before load
        (
            lambda r: png_header(r / "train" / "a" / "bomb.png", 10**5, 10**5),
            "bomb.png: Image size",
        ),
        (
            lambda r: png_header(r / "train" / "a" / "wide.png", 9000, 4),
            "wide.png: 9000x4 pixels, more than the 8192",
        ),
        (lambda r: dds_of_unknown_format(r / "test" / "a" / "x.dds"), "x.dds: Unknown pixel"),
        (lambda r: (r / "train").mkdir(parents=True), "no test/ subfolder"),
        (lambda r: [(r / s).mkdir(parents=True) for s in ("train", "test")], "no class subfolders"),
        (lambda r: (r / "train" / "a" / "x.png").write_bytes(b"not a png"), "x.png"),
        (lambda r: write_image(r / "train" / "a" / "big.png", "L", size=(9, 9)), "big.png is 9x9"),
        (lambda r: write_image(r / "test" / "zebra" / "0.png", "L"), "zebra: class not in"),
        (lambda r: (r / "train" / "empty").mkdir(), "empty has no images"),
        # the test split is checked as fully as train, before anything trains
        (class_b_in_train_only, r"test/b has no images"),
        (
            lambda r: [(r / "test" / "a" / f).unlink() for f in ("0.png", "1.png")],
            r"test/a has no images",
        ),
        (lambda r: write_image(r / "train" / "b" / "0.png", "L"), "has no class b .train/ has"),
    ],
)
def test_folder_bad_input(tmp_path: Path, make: Callable[[Path], object], message: str) -> None:
    root = tmp_path / "set"
    if message != "does not exist":
        for split in ("train", "test"):
            write_image(root / split / "a" / "0.png", "L")
            write_image(root / split / "a" / "1.png", "L")
        if "subfolder" in message:
            root = tmp_path / "bare"
    make(root)
    with pytest.raises(BlockQNNError, match=message):
        load_arrays(DataConfig(dataset=str(root) + "/", cache_dir=str(tmp_path / "c")))


# ---------------------------------------------------------------- .npz files and names


def save(path: Path, **arrays: np.ndarray) -> str:
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return str(path)


def test_npz_layouts(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (20, 3, 5, 7), dtype=np.uint8)
    y = np.arange(20) % 4
    nchw = save(tmp_path / "a.npz", x_train=x, y_train=y, x_test=x[:4], y_test=y[:4])
    nhwc = x.transpose(0, 2, 3, 1)
    nhwc_file = save(tmp_path / "b.npz", x_train=nhwc, y_train=y, x_test=nhwc[:4], y_test=y[:4])
    a = load_arrays(DataConfig(dataset=nchw))
    b = load_arrays(DataConfig(dataset=nhwc_file))
    assert a.input_shape == b.input_shape == (3, 5, 7) and a.classes == ("0", "1", "2", "3")
    assert np.array_equal(a.x_train, b.x_train) and np.array_equal(a.x_test, x[:4])
    gray = save(tmp_path / "g.npz", x_train=x[:, 0], y_train=y, x_test=x[:2, 0], y_test=y[:2])
    named = np.array(["w", "x", "y", "z", "extra"])
    c = load_arrays(DataConfig(dataset=gray, val_size=4))
    assert c.input_shape == (1, 5, 7) and (len(c.x_train), len(c.x_val)) == (16, 4)
    d = save(tmp_path / "n.npz", x_train=x, y_train=y, x_test=x, y_test=y, classes=named)
    assert load_arrays(DataConfig(dataset=d)).num_classes == 5


def test_npz_bad_input(tmp_path: Path) -> None:
    x = np.zeros((6, 1, 4, 4), np.uint8)
    y = np.arange(6) % 2
    cases: dict[str, dict[str, np.ndarray]] = {
        "missing array\\(s\\) y_test": dict(x_train=x, y_train=y, x_test=x),
        "x_train has 6 images but y_train has 5": dict(
            x_train=x, y_train=y[:5], x_test=x, y_test=y
        ),
        "y_test has label 2, out of range 0..1": dict(x_train=x, y_train=y, x_test=x, y_test=y + 1),
        "y_train has label -1": dict(x_train=x, y_train=y - 1, x_test=x, y_test=y),
        "must be uint8": dict(x_train=x / 255, y_train=y, x_test=x, y_test=y),
        "x_test images are": dict(x_train=x, y_train=y, x_test=x[:, :, :2], y_test=y),
        "x_test is empty": dict(x_train=x, y_train=y, x_test=x[:0], y_test=y[:0]),
    }
    for i, (message, arrays) in enumerate(cases.items()):
        with pytest.raises(BlockQNNError, match=message):
            load_arrays(DataConfig(dataset=save(tmp_path / f"{i}.npz", **arrays)))
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 garbage")
    with pytest.raises(BlockQNNError, match=r"not a readable \.npz"):
        load_arrays(DataConfig(dataset=str(tmp_path / "broken.npz")))


def test_a_long_folder_name_is_cached_under_a_short_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / ("d" * 230)  # "folder-<name>-<hash>.npz" would pass 255 bytes
    for split in ("train", "test"):
        for c in ("a", "b"):
            write_image(root / split / c / "0.png", "L")
            write_image(root / split / c / "1.png", "L", value=9)
    config = DataConfig(dataset=str(root), cache_dir=str(tmp_path / "c"))
    data = load_arrays(config)
    (cache_file,) = (tmp_path / "c").iterdir()
    assert cache_file.name == f"folder-{'d' * 64}-{cache_file.name[-20:-4]}.npz"
    monkeypatch.setattr(local, "_decode_image", fail_decode)
    assert np.array_equal(load_arrays(config).x_train, data.x_train)  # read from the cache
    assert local._short("é" * 100) == "é" * 32  # 2 bytes each: cut between characters


def test_one_class_is_refused(tmp_path: Path) -> None:
    """Every network would score 100% on it: refused, naming the data set and the class."""
    for split in ("train", "test"):
        for i in range(3):
            write_image(tmp_path / "cats" / split / "cat" / f"{i}.png", "L", value=i)
    with pytest.raises(BlockQNNError, match=r"cats has one class \('cat'\): every block"):
        load_arrays(DataConfig(dataset=str(tmp_path / "cats"), cache_dir=str(tmp_path / "c")))
    x, y = np.zeros((6, 1, 4, 4), np.uint8), np.zeros(6, np.int64)
    two = save(tmp_path / "two.npz", x_train=x, y_train=y, x_test=x, y_test=y + 1,
               classes=np.array(["a", "b"]))  # fmt: skip
    with pytest.raises(BlockQNNError, match=r"two.npz has one class \('a'\)"):
        load_arrays(DataConfig(dataset=two))


def test_dataset_names(tmp_path: Path) -> None:
    with pytest.raises(BlockQNNError, match="unknown dataset 'mnist' \\(valid: digits, cifar10"):
        load_arrays(DataConfig(dataset="mnist"))
    with pytest.raises(BlockQNNError, match="does not exist"):
        load_arrays(DataConfig(dataset=str(tmp_path / "none.npz")))
    (tmp_path / "x.csv").write_text("1,2")
    with pytest.raises(BlockQNNError, match=r"must be a \.npz"):
        load_arrays(DataConfig(dataset=str(tmp_path / "x.csv")))


# ---------------------------------------------------------------- CIFAR archives over HTTP


def tiny_cifar_archive(path: Path, per_batch: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """A cifar-10-python.tar.gz with the official layout and pickle format, tiny batches."""
    rng = np.random.default_rng(1)
    xs, ys = [], []
    with tarfile.open(path, "w:gz") as tar:

        def add(name: str, obj: object) -> None:
            data = pickle.dumps(obj, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            x = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
            y = [int(v) for v in rng.integers(0, 10, per_batch)]
            add(name, {b"batch_label": name.encode(), b"labels": y, b"data": x, b"filenames": []})
            xs.append(x)
            ys.append(y)
        add("batches.meta", {b"label_names": [f"c{i}".encode() for i in range(10)]})
    return np.concatenate(xs).reshape(-1, 3, 32, 32), np.concatenate(ys)


@pytest.fixture()
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A localhost HTTP server for tmp_path/www, set as the CIFAR URL base."""
    www = tmp_path / "www"
    www.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(www))
    )
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv(cifar.URL_ENV, f"http://127.0.0.1:{httpd.server_address[1]}")
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    yield www
    httpd.shutdown()
    httpd.server_close()


def pin(monkeypatch: pytest.MonkeyPatch, archive: Path, md5: str | None = None) -> None:
    blob = archive.read_bytes()
    spec = dataclasses.replace(
        cifar.ARCHIVES["cifar10"],
        size=len(blob),
        md5=md5 or hashlib.md5(blob).hexdigest(),
        sha256=hashlib.sha256(blob).hexdigest(),
    )
    monkeypatch.setitem(cifar.ARCHIVES, "cifar10", spec)


def test_cifar_download_verify_and_cache(
    server: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    x, y = tiny_cifar_archive(server / "cifar-10-python.tar.gz")
    pin(monkeypatch, server / "cifar-10-python.tar.gz")
    config = DataConfig(dataset="cifar10", cache_dir=str(tmp_path / "cache"), val_size=4)
    data = load_arrays(config)
    assert data.classes == tuple(f"c{i}" for i in range(10)) and data.input_shape == (3, 32, 32)
    assert rows(np.concatenate([data.x_train, data.x_val])) == rows(x[:20])
    assert np.array_equal(data.x_test, x[20:]) and np.array_equal(data.y_test, y[20:])
    assert (tmp_path / "cache" / "cifar-10-python.tar.gz").is_file()
    (server / "cifar-10-python.tar.gz").unlink()  # decoded arrays are cached: no new download
    (tmp_path / "cache" / "cifar-10-python.tar.gz").unlink()
    assert np.array_equal(load_arrays(config).x_test, data.x_test)


def test_cifar_checksum_mismatch_removes_file(
    server: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tiny_cifar_archive(server / "cifar-10-python.tar.gz")
    pin(monkeypatch, server / "cifar-10-python.tar.gz", md5="0" * 32)
    cache = tmp_path / "cache"
    with pytest.raises(BlockQNNError, match=r"checksum mismatch: md5 .* removed"):
        load_arrays(DataConfig(dataset="cifar10", cache_dir=str(cache)))
    assert list(cache.iterdir()) == []  # neither the archive nor a partial file is left
    with pytest.raises(BlockQNNError, match="downloading is disabled"):
        load_arrays(DataConfig(dataset="cifar10", cache_dir=str(cache)), download=False)
    monkeypatch.setenv(cifar.URL_ENV, "http://127.0.0.1:9")  # nothing listens on port 9
    with pytest.raises(BlockQNNError, match="could not download"):
        load_arrays(DataConfig(dataset="cifar10", cache_dir=str(cache)))


def test_cifar_from_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = tmp_path / "data" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    x, _ = tiny_cifar_archive(archive)
    pin(monkeypatch, archive)
    monkeypatch.setenv(cifar.URL_ENV, "http://127.0.0.1:9")  # must not be needed
    config = DataConfig(dataset="cifar10", data_dir=str(archive.parent), cache_dir=str(tmp_path))
    assert np.array_equal(load_arrays(config, download=False).x_test, x[20:])
    pin(monkeypatch, archive, md5="0" * 32)  # a user's bad file: refused and left in place
    for cached in tmp_path.glob("cifar10-*.npz"):
        cached.unlink()
    with pytest.raises(BlockQNNError, match="checksum mismatch"):
        load_arrays(config)
    assert archive.is_file()


def test_cifar_unpickler_reads_python2_pickles() -> None:
    """The official batches were pickled by Python 2 (str payloads, numpy.core names)."""

    def s(b: bytes) -> bytes:  # SHORT_BINSTRING, Python 2's str
        return b"U" + bytes([len(b)]) + b

    array = (
        b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + s(b"b") + b"\x87R"
        b"(K\x01K\x02K\x03\x86cnumpy\ndtype\n" + s(b"u1") + b"K\x00K\x01\x87R"
        b"(K\x03"
        + s(b"|")
        + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89"
        + s(bytes(range(250, 256)))
        + b"tb"
    )
    batch = cifar._unpickle(b"\x80\x02}(" + s(b"data") + array + s(b"labels") + b"](K\x07K\x03eu.")
    assert batch["labels"] == [7, 3]
    assert np.array_equal(batch["data"], np.arange(250, 256, dtype=np.uint8).reshape(2, 3))


def test_cifar_unpickler_refuses_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"  # an unrestricted unpickler would create it
    evil = pickle.dumps({"data": functools.partial(open, str(marker), "w")})
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        cifar._unpickle(evil)
    assert not marker.exists()


# ---------------------------------------------------------------- device data and cache files


def test_device_data_normalize_and_pickle() -> None:
    data = load_arrays(DataConfig(dataset="digits"))
    assert pickle.loads(pickle.dumps(data)).x_val.tobytes() == data.x_val.tobytes()
    dev = data.to_device("cpu")
    assert dev.x_train.dtype == torch.uint8 and dev.y_train.dtype == torch.int64
    assert dev.mean.shape == (1, 1, 1, 1) and dev.num_classes == 10
    assert dev.input_shape == (1, 8, 8) and dev.device == torch.device("cpu")
    z = dev.normalize(dev.x_train)
    assert z.dtype == torch.float32
    assert z.mean().item() == pytest.approx(0, abs=1e-4) and z.std().item() == pytest.approx(
        1, 1e-3
    )
    assert dev.normalize(dev.x_val, torch.bfloat16).dtype == torch.bfloat16
    cl = dev.x_val.contiguous(memory_format=torch.channels_last)
    assert dev.normalize(cl).is_contiguous(memory_format=torch.channels_last)
    frozen = data.x_train.copy()
    frozen.setflags(write=False)  # as Ray's object store hands arrays out
    assert torch.equal(
        dataclasses.replace(data, x_train=frozen).to_device("cpu").x_train, dev.x_train
    )


def test_cache_files_are_atomic_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "c" / "a.npz"
    assert save_npz(path, {"x": np.arange(4, dtype=np.uint8), "n": np.array("hi")})
    assert [p.name for p in path.parent.iterdir()] == ["a.npz"]  # no temporary left behind
    assert load_npz(path, {"x": "u", "n": "U"}) is not None
    assert load_npz(path, {"x": "i"}) is None  # wrong dtype
    assert load_npz(path, {"missing": "u"}) is None
    path.write_bytes(path.read_bytes()[:-20])
    assert load_npz(path, {"x": "u"}) is None


# ---------------------------------------------------------------- augmentation


def test_augment_flip_and_crop() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8, generator=gen)
    out = augment(x, 2, True, torch.Generator().manual_seed(5))
    assert out.shape == x.shape and out.dtype == torch.uint8
    assert torch.equal(out, augment(x, 2, True, torch.Generator().manual_seed(5)))
    assert not torch.equal(out, augment(x, 2, True, torch.Generator().manual_seed(6)))
    assert augment(x, 0, False, None) is x

    flipped = augment(x, 0, True, torch.Generator().manual_seed(1))
    same = (flipped == x).flatten(1).all(1)
    mirrored = (flipped == x.flip(3)).flatten(1).all(1)
    assert bool((same | mirrored).all()) and 10 < int(mirrored.sum()) < 54

    # every crop is one of the 25 shifted windows of the reflect-padded image
    crops = augment(x.float(), 2, False, torch.Generator().manual_seed(2))
    padded = F.pad(x.float(), (2, 2, 2, 2), mode="reflect")
    windows = torch.stack(
        [padded[:, :, i : i + 8, j : j + 8] for i in range(5) for j in range(5)], dim=1
    )
    match = (windows == crops[:, None]).flatten(2).all(2)  # (B, 25)
    assert bool(match.any(1).all()) and len(set(match.float().argmax(1).tolist())) > 10

    cl = x.contiguous(memory_format=torch.channels_last)
    out_cl = augment(cl, 2, True, torch.Generator().manual_seed(5))
    assert out_cl.is_contiguous(memory_format=torch.channels_last) and torch.equal(out_cl, out)
    big = augment(x[:, :, :3, :3], 5, True, torch.Generator().manual_seed(0))  # pad > side
    assert big.shape == (64, 3, 3, 3)
    with pytest.raises(ValueError, match="pad"):
        augment(x, -1, False, None)


def test_default_augmentation() -> None:
    assert default_augmentation("digits") == (0, False)
    assert default_augmentation("cifar100") == (4, True)
    assert default_augmentation("/data/set", (3, 32, 32)) == (4, True)
    assert default_augmentation("/data/set", (3, 64, 64)) == (8, True)
    assert default_augmentation("/data/set", (1, 5, 5)) == (1, True)


def test_the_data_cache_defaults_to_the_user_cache_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the evaluation cache's: $XDG_CACHE_HOME/blockqnn. It was ~/.cache/blockqnn
    whatever XDG_CACHE_HOME said, so decoded data sets went where the user had not put
    their caches."""
    monkeypatch.delenv("BLOCKQNN_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "blockqnn"
    monkeypatch.setenv("BLOCKQNN_CACHE", str(tmp_path / "mine"))
    assert cache_root() == tmp_path / "mine"
    assert cache_root(str(tmp_path / "set")) == tmp_path / "set"
