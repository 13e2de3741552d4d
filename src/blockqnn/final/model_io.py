"""Trained-model files: save, safe load, and export for deployment.

Owns: the model file format (weights + block + network settings + normalisation, one
`torch.save` of plain containers, read back with `weights_only=True` so a file can never run
code), `load_model`, and TorchScript / ONNX export. Must not train.

A model file is a dict:
    format "blockqnn-model", version 2, block (NSC text), max_depth, network (NetworkConfig
    dict), classes, mean, std (per channel, [0, 1] units), metrics (dict), state_dict,
    optionally train_state (optimizer/scheduler state and epoch, for resuming `train`), and
    checksum: the SHA-256 of everything else, tensors by dtype, shape and bytes
    (`payload_checksum`). Every read verifies it: a file whose weights or settings changed
    after it was written (a flipped bit, a truncated copy that still unzips) is refused as
    damaged, never used. Version-1 files (no checksum, written before it existed) are read
    with a warning that their contents cannot be verified; refusing them would strand every
    trained model of that release, and a warning says what cannot be promised.
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import re
import struct
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from blockqnn.errors import BlockQNNError, clip
from blockqnn.files import check_replace, write_atomic
from blockqnn.settings.choices import EXPORT_FORMATS
from blockqnn.settings.config import NetworkConfig
from blockqnn.space.nsc.block import Block
from blockqnn.space.nsc.builder import Network

FORMAT = "blockqnn-model"
VERSION = 2  # 1: no checksum; 2: `checksum` of the rest
CHECKSUM = "checksum"
log = logging.getLogger("blockqnn.final.model_io")


class DeployModel(nn.Module):
    """A trained network with its input normalisation built in.

    Input: float images in [0, 1], shape (B, C, H, W). Output: class logits (B, classes).
    """

    mean: torch.Tensor  # (1, C, 1, 1) buffers, saved with the weights
    std: torch.Tensor

    def __init__(
        self,
        network: Network,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        classes: tuple[str, ...] = (),
    ) -> None:
        super().__init__()
        self.network = network
        channels = network.config.input_shape[0]
        self.register_buffer(
            "mean", torch.tensor(mean, dtype=torch.float32).view(1, channels, 1, 1)
        )
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, channels, 1, 1))
        self.classes = tuple(classes)

    @property
    def block(self) -> Block:
        return self.network.block

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) in [0, 1] -> (B, K)
        return self.network((x - self.mean) / self.std)


def model_payload(
    network: Network,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    classes: tuple[str, ...] = (),
    metrics: dict[str, Any] | None = None,
    train_state: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The dict stored in a model file (weights moved to the CPU)."""
    payload: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "block": str(network.block),
        "max_depth": network.block.max_depth,
        "network": network.config.to_dict(),
        "classes": list(classes),
        "mean": [float(v) for v in mean],
        "std": [float(v) for v in std],
        "metrics": dict(metrics or {}),
        "state_dict": {k: v.detach().cpu() for k, v in network.state_dict().items()},
    }
    if train_state is not None:
        payload["train_state"] = train_state
    return payload


class _Unhashable(Exception):
    """A value a model file cannot hold (only plain containers, numbers, text, tensors)."""


def _feed(h: Any, obj: Any) -> None:
    """Feed `obj` to the hash `h` unambiguously: a type tag, a length, then the content."""
    if obj is None:
        h.update(b"N")
    elif isinstance(obj, bool):
        h.update(b"T" if obj else b"F")
    elif isinstance(obj, int):  # bytes, not decimal text: no limit on the number's size
        data = obj.to_bytes(obj.bit_length() // 8 + 1, "little", signed=True)
        h.update(b"i%d:" % len(data) + data)
    elif isinstance(obj, float):
        h.update(b"f" + struct.pack("<d", obj))
    elif isinstance(obj, str):
        data = obj.encode("utf-8", "surrogatepass")
        h.update(b"s%d:" % len(data) + data)
    elif isinstance(obj, bytes):
        h.update(b"b%d:" % len(obj) + obj)
    elif isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous().reshape(-1)
        if t.is_quantized or t.layout != torch.strided:
            raise _Unhashable(f"a {t.layout} tensor")
        raw = t.view(torch.uint8).numpy().tobytes() if t.numel() else b""
        h.update(f"t{t.dtype}{tuple(obj.shape)}:{len(raw)}:".encode() + raw)
    elif isinstance(obj, (list, tuple)):
        h.update((b"l" if isinstance(obj, list) else b"u") + b"%d:" % len(obj))
        for item in obj:
            _feed(h, item)
    elif isinstance(obj, dict):  # insertion order: a file reads back in the order written
        h.update(b"d%d:" % len(obj))
        for key, value in obj.items():
            _feed(h, key)
            _feed(h, value)
    else:
        raise _Unhashable(type(obj).__name__)


def payload_checksum(payload: dict[str, Any]) -> str:
    """SHA-256 of a model file's payload, its `checksum` entry left out."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in payload.items() if k != CHECKSUM})
    return h.hexdigest()


def save_atomic(payload: dict[str, Any], path: str | Path) -> None:
    """Write with temp file + fsync + rename: a kill at any moment leaves the old file or the
    new one, never a torn one. The payload is written with its checksum (version 2)."""
    payload = {**payload, "version": VERSION}
    payload[CHECKSUM] = payload_checksum(payload)
    buffer = io.BytesIO()  # serialised in memory: torch's writer fails badly on a full disk
    torch.save(payload, buffer)
    write_atomic(path, buffer.getvalue(), "model file")


def read_payload(path: str | Path) -> dict[str, Any]:
    """Load and check a model file; BlockQNNError for anything that is not ours, broken or
    damaged (its checksum does not match)."""
    p = Path(path)
    if not p.exists():
        raise BlockQNNError(f"{p}: no such model file")
    if not p.is_file():  # a FIFO would block the reader, a device would never end
        raise BlockQNNError(f"{p}: not a regular file")
    if not zipfile.is_zipfile(p):  # every file torch.save writes (and so ours) is a zip
        raise BlockQNNError(f"{p}: not a blockqnn model file (not a PyTorch zip archive)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's multi-line hints about weights_only
            payload = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, foreign pickle, random bytes
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()  # torch colours its message
        reason = _sentence(text.splitlines()[0]) if text else type(exc).__name__
        raise BlockQNNError(f"{p}: not a readable blockqnn model file ({reason})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise BlockQNNError(f"{p}: not a blockqnn model file")
    version = payload.get("version")
    if version not in (1, VERSION) or isinstance(version, bool):
        raise BlockQNNError(
            f"{p}: model file version {clip(version)} is not supported "
            f"(this blockqnn reads versions 1 and {VERSION})"
        )
    stored = payload.get(CHECKSUM)
    if stored is None and version == 1:
        log.warning(
            "%s: written by an older blockqnn without a checksum; its contents cannot be verified",
            p,
        )
    else:
        try:
            actual = payload_checksum(payload)
        except _Unhashable as exc:
            raise BlockQNNError(f"{p}: damaged model file (it holds {exc})") from None
        if stored != actual:
            raise BlockQNNError(
                f"{p}: damaged model file (its contents do not match its SHA-256 checksum)"
            )
    missing = [k for k in ("block", "network", "mean", "std", "state_dict") if k not in payload]
    if missing:
        raise BlockQNNError(f"{p}: model file lacks {', '.join(missing)}")
    if not isinstance(payload["state_dict"], dict) or not isinstance(payload["network"], dict):
        raise BlockQNNError(f"{p}: damaged model file (state_dict or network is not a dict)")
    return payload


def model_from_payload(payload: dict[str, Any], source: str = "model") -> DeployModel:
    """The model a checked payload describes. Settings or weights that do not fit each other
    (a file written by hand, or an old one that no checksum protects) are refused as a
    damaged file, never a traceback."""
    try:
        block = Block.parse(payload["block"], max_depth=payload.get("max_depth", 10))
        network = Network(block, NetworkConfig.from_dict(payload["network"]))
        load_weights(network, payload["state_dict"])
        model = DeployModel(
            network,
            tuple(float(v) for v in payload["mean"]),
            tuple(float(v) for v in payload["std"]),
            tuple(str(c) for c in payload.get("classes", ())),
        )
    except BlockQNNError as exc:
        raise BlockQNNError(f"{source}: damaged model file ({exc})") from None
    except (TypeError, ValueError, KeyError, RuntimeError) as exc:
        raise BlockQNNError(f"{source}: damaged model file ({_first_line(exc)})") from None
    return model.eval()


def load_weights(module: nn.Module, state_dict: Any) -> None:
    """`module.load_state_dict(state_dict)`, refusing weights whose names, shapes or types do
    not fit as one `BlockQNNError` line instead of PyTorch's many ("weights do not fit")."""
    if not isinstance(state_dict, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state_dict.items()
    ):
        raise BlockQNNError("the weights are not a dict of named tensors")
    try:
        module.load_state_dict(state_dict)
    except (RuntimeError, TypeError, ValueError, KeyError) as exc:
        raise BlockQNNError(f"weights do not fit the network ({_first_line(exc)})") from None


def _sentence(text: str, limit: int = 120) -> str:
    """The first sentence of `text`, cut at a word (never mid-word) to `limit` characters."""
    first = re.split(r"(?<=\.)\s", text, maxsplit=1)[0]
    if len(first) <= limit:
        return first
    cut = first[:limit].rsplit(" ", 1)[0]
    return cut.rstrip(",;:") + " ..."


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return clip(f"{type(exc).__name__}: {lines[0] if lines else ''}", 160)


def load_model(path: str | Path) -> DeployModel:
    """Load a trained model (in eval mode) from a file written by `blockqnn train`.

    >>> model = load_model("runs/final/model.pt")  # doctest: +SKIP
    >>> logits = model(images)  # float images in [0, 1], (B, C, H, W)  # doctest: +SKIP
    """
    return model_from_payload(read_payload(path), str(path))


def export_model(model: DeployModel, fmt: str, out: str | Path, batch: int = 2) -> dict[str, Any]:
    """Export to TorchScript (traced) or ONNX (dynamic batch), then check the file against
    PyTorch on random inputs. Returns {"format", "path", "max_abs_diff", "checked_with"}."""
    if fmt not in EXPORT_FORMATS:
        raise BlockQNNError(f"format {fmt!r} is not supported (choose {', '.join(EXPORT_FORMATS)})")
    if fmt == "onnx":
        _require_onnx()
    target = Path(out)
    model = model.eval().cpu()
    shape = model.network.config.input_shape
    example = torch.rand(batch, *shape, generator=torch.Generator().manual_seed(0))
    probe = torch.rand(batch + 1, *shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(probe)
    # before the (slow) export; an earlier export of this format may be replaced, nothing else
    kind = "a TorchScript export" if fmt == "torchscript" else "an ONNX export"
    check_replace(target, "--out", kind, _is_export(fmt))
    # Exported into memory and written through write_atomic: torch's C++ file writer aborts
    # the interpreter on a full disk and leaves its temp file behind.
    buffer = io.BytesIO()
    if fmt == "torchscript":
        actual, checker = _export_torchscript(model, example, probe, buffer)
    else:
        actual, checker = _export_onnx(model, example, probe, buffer)
    diff = float((actual - expected).abs().max())
    if not math.isfinite(diff) or diff > 1e-3:
        raise RuntimeError(f"exported {fmt} model disagrees with PyTorch (max |diff| {diff})")
    write_atomic(target, buffer.getvalue(), "--out")
    return {"format": fmt, "path": str(target), "max_abs_diff": diff, "checked_with": checker}


def _is_export(fmt: str) -> Callable[[Path], bool]:
    """A test that a file is a TorchScript archive (its zip holds code, which a checkpoint's
    does not) or an ONNX model, as `fmt` says."""

    def torchscript(path: Path) -> bool:
        try:
            with zipfile.ZipFile(path) as archive:
                return any("/code/" in name for name in archive.namelist())
        except (zipfile.BadZipFile, OSError):
            return False

    def onnx_model(path: Path) -> bool:
        import onnx

        try:
            return len(onnx.load(str(path), load_external_data=False).graph.node) > 0
        except Exception:  # any decoding error: not an ONNX model
            return False

    return torchscript if fmt == "torchscript" else onnx_model


def _require_onnx() -> None:
    """Refuse, in one line naming the extra, before anything is traced: torch's exporter
    needs the onnx package and otherwise fails deep inside with a long traceback."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise BlockQNNError(
            "--format onnx needs the onnx package, which is not installed: "
            "pip install 'blockqnn[export]'"
        ) from None


def _export_torchscript(
    model: DeployModel, example: torch.Tensor, probe: torch.Tensor, buffer: io.BytesIO
) -> tuple[torch.Tensor, str]:
    import warnings

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", DeprecationWarning)  # jit is deprecated, still the
        traced = torch.jit.trace(model, example)  # type: ignore[no-untyped-call]  # format most C++/mobile runtimes load
        torch.jit.save(traced, buffer)
        buffer.seek(0)
        loaded = torch.jit.load(buffer)  # type: ignore[no-untyped-call]
        return loaded(probe), "torch.jit.load"


def _export_onnx(
    model: DeployModel, example: torch.Tensor, probe: torch.Tensor, buffer: io.BytesIO
) -> tuple[torch.Tensor, str]:
    import warnings

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            buffer,  # type: ignore[arg-type]  # the TorchScript exporter takes a file object
            dynamo=False,  # the TorchScript-based exporter: no onnxscript needed, dynamic batch
            input_names=["images"],
            output_names=["logits"],
            dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=17,
        )
    try:
        import onnxruntime as ort
    except ImportError:  # pragma: no cover - the export extra installs it
        import onnx

        onnx.checker.check_model(onnx.load_from_string(buffer.getvalue()))
        return model(probe), "onnx.checker (onnxruntime not installed: outputs not compared)"
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"images": probe.numpy()})
    return torch.from_numpy(logits), f"onnxruntime {ort.__version__}"
