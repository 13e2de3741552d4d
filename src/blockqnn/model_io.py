"""Trained-model files: save, safe load, and export for deployment.

Owns: the model file format (weights + block + network settings + normalisation, one
`torch.save` of plain containers, read back with `weights_only=True` so a file can never run
code), `load_model`, and TorchScript / ONNX export. Must not train.

A model file is a dict:
    format "blockqnn-model", version 1, block (NSC text), max_depth, network (NetworkConfig
    dict), classes, mean, std (per channel, [0, 1] units), metrics (dict), state_dict,
    and optionally train_state (optimizer/scheduler state and epoch, for resuming `train`).
"""

from __future__ import annotations

import math
import os
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from blockqnn.builder import Network
from blockqnn.cost import NetworkConfig
from blockqnn.errors import BlockQNNError
from blockqnn.files import temp_beside
from blockqnn.nsc import Block

FORMAT = "blockqnn-model"
VERSION = 1


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


def save_atomic(payload: dict[str, Any], path: str | Path) -> None:
    """Write with temp file + fsync + rename: a kill at any moment leaves the old file or the
    new one, never a torn one."""
    target = Path(path)
    fd, tmp = temp_beside(target, "model file")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_payload(path: str | Path) -> dict[str, Any]:
    """Load and check a model file; BlockQNNError for anything that is not ours or broken."""
    p = Path(path)
    if not p.is_file():
        raise BlockQNNError(f"{p}: no such model file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's multi-line hints about weights_only
            payload = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, foreign pickle, random bytes
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()  # torch colours its message
        reason = text.splitlines()[0] if text else type(exc).__name__
        raise BlockQNNError(f"{p}: not a readable blockqnn model file ({reason[:120]})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise BlockQNNError(f"{p}: not a blockqnn model file")
    if payload.get("version") != VERSION:
        raise BlockQNNError(
            f"{p}: model file version {payload.get('version')} is not supported "
            f"(this blockqnn reads version {VERSION})"
        )
    missing = [k for k in ("block", "network", "mean", "std", "state_dict") if k not in payload]
    if missing:
        raise BlockQNNError(f"{p}: model file lacks {', '.join(missing)}")
    return payload


def model_from_payload(payload: dict[str, Any], source: str = "model") -> DeployModel:
    block = Block.parse(payload["block"], max_depth=int(payload.get("max_depth", 10)))
    network = Network(block, NetworkConfig.from_dict(payload["network"]))
    try:
        network.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise BlockQNNError(f"{source}: weights do not fit the stored network ({first})") from None
    model = DeployModel(
        network, tuple(payload["mean"]), tuple(payload["std"]), tuple(payload.get("classes", ()))
    )
    return model.eval()


def load_model(path: str | Path) -> DeployModel:
    """Load a trained model (in eval mode) from a file written by `blockqnn train`.

    >>> model = load_model("runs/final/model.pt")  # doctest: +SKIP
    >>> logits = model(images)  # float images in [0, 1], (B, C, H, W)  # doctest: +SKIP
    """
    return model_from_payload(read_payload(path), str(path))


EXPORT_FORMATS = ("torchscript", "onnx")


def export_model(model: DeployModel, fmt: str, out: str | Path, batch: int = 2) -> dict[str, Any]:
    """Export to TorchScript (traced) or ONNX (dynamic batch), then check the file against
    PyTorch on random inputs. Returns {"format", "path", "max_abs_diff", "checked_with"}."""
    if fmt not in EXPORT_FORMATS:
        raise BlockQNNError(f"format {fmt!r} is not supported (choose {', '.join(EXPORT_FORMATS)})")
    target = Path(out)
    model = model.eval().cpu()
    shape = model.network.config.input_shape
    example = torch.rand(batch, *shape, generator=torch.Generator().manual_seed(0))
    probe = torch.rand(batch + 1, *shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(probe)
    fd, tmp = temp_beside(target, "--out")
    os.close(fd)
    try:
        if fmt == "torchscript":
            actual, checker = _export_torchscript(model, example, probe, tmp)
        else:
            actual, checker = _export_onnx(model, example, probe, tmp)
        diff = float((actual - expected).abs().max())
        if not math.isfinite(diff) or diff > 1e-3:
            raise RuntimeError(f"exported {fmt} model disagrees with PyTorch (max |diff| {diff})")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return {"format": fmt, "path": str(target), "max_abs_diff": diff, "checked_with": checker}


def _export_torchscript(
    model: DeployModel, example: torch.Tensor, probe: torch.Tensor, path: Path
) -> tuple[torch.Tensor, str]:
    import warnings

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", DeprecationWarning)  # jit is deprecated, still the
        traced = torch.jit.trace(model, example)  # type: ignore[no-untyped-call]  # format most C++/mobile runtimes load
        traced.save(str(path))
        loaded = torch.jit.load(str(path))  # type: ignore[no-untyped-call]
        return loaded(probe), "torch.jit.load"


def _export_onnx(
    model: DeployModel, example: torch.Tensor, probe: torch.Tensor, path: Path
) -> tuple[torch.Tensor, str]:
    import warnings

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            str(path),
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

        onnx.checker.check_model(str(path))
        return model(probe), "onnx.checker (onnxruntime not installed: outputs not compared)"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"images": probe.numpy()})
    return torch.from_numpy(logits), f"onnxruntime {ort.__version__}"
