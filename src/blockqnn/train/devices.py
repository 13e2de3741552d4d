"""Which device and precision training runs on.

Owns: device resolution and description, the CPU's bf16 capability, the autocast dtype and
whether a network's parameters can fit the device's memory at all. Must not train.
"""

from __future__ import annotations

import os
from functools import cache

import torch

from blockqnn.errors import BlockQNNError, clip


def resolve_device(name: str | None = None) -> torch.device:
    """ "auto" or None -> the current CUDA device if there is one, else the CPU."""
    if name is None or name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise BlockQNNError(
            f"device {clip(name, quote=True)}: not a device (try auto, cpu, cuda, cuda:1)"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise BlockQNNError(
                f"device {clip(name, quote=True)}: CUDA is not available on this machine"
            )
        index = torch.cuda.current_device() if device.index is None else device.index
        if index >= torch.cuda.device_count():
            raise BlockQNNError(
                f"device {clip(name, quote=True)}: only {torch.cuda.device_count()} CUDA "
                "device(s) visible"
            )
        return torch.device("cuda", index)
    if device.type != "cpu":
        raise BlockQNNError(
            f"device {clip(name, quote=True)}: only cpu and cuda devices are supported"
        )
    return device


def describe_device(device: torch.device) -> str:
    """E.g. "cpu (2 threads)" or "cuda:0 (NVIDIA H100 80GB HBM3)"."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    n = torch.get_num_threads()
    return f"cpu ({n} thread{'' if n == 1 else 's'})"


@cache
def cpu_has_fast_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AMX or AVX512-BF16). Without it oneDNN
    emulates bf16 and autocast makes training slower, not faster (measured on a 2-core
    AVX512 Xeon without either: see benchmarks/trainer.py)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"amx_bf16", "avx512_bf16"})
    except OSError:
        pass
    return torch.backends.cpu.get_cpu_capability() in ("AMX", "AVX512_BF16")


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `precision` on `device`; None means plain fp32."""
    if precision == "fp32":
        return None
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return torch.bfloat16
        if precision == "bf16":
            raise BlockQNNError(f"precision bf16: {describe_device(device)} does not support it")
        return None
    if precision == "bf16" or cpu_has_fast_bf16():
        return torch.bfloat16
    return None


# fp32 weights, their gradients and Adam's two moments: what training holds per parameter
# before any activation. A network that needs more than the device's memory for these alone
# cannot train there; trying would fail inside the allocator, or, where the kernel
# overcommits, in the out-of-memory killer.
TRAINING_BYTES_PER_PARAM = 16
# Timing one untrained network holds its fp32 weights and, for ONNX Runtime, the exported
# copy beside them.
TIMING_BYTES_PER_PARAM = 8


def device_memory(device: torch.device) -> int | None:
    """Total memory of `device` in bytes (the host's RAM for the CPU); None if unknown."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # not POSIX
        return None


def too_large(params: int, device: torch.device, timing: bool = False) -> str:
    """Why a network of `params` parameters cannot be trained (or, with `timing`, timed)
    on `device`; "" if it may."""
    memory = device_memory(device)
    need = params * (TIMING_BYTES_PER_PARAM if timing else TRAINING_BYTES_PER_PARAM)
    if memory is None or need <= memory:
        return ""
    return (
        f"its {params:,} parameters need {need / 2**30:,.1f} GiB to "
        f"{'time' if timing else 'train'}, more than the {memory / 2**30:,.1f} GiB of "
        f"{describe_device(device)}"
    )
