"""Benchmark: training throughput of `blockqnn.train.loop.fit` against a typical PyTorch loop.

Both train the same search-time network (a 6-layer multi-branch block, F = 32, N = 2) on the
same CIFAR-10 images with Adam, crop + flip augmentation, in one process, interleaved:

- ours: `fit` with the early-stop recipe: data resident on the device as uint8, batches
  sliced from a seeded randperm, augmented and normalised on the device, channels_last, bf16
  autocast where it is fast, the whole step as a CUDA graph on GPUs;
- baseline, written the way most users would: a `DataLoader` (shuffle, 2 workers as in the
  PyTorch CIFAR tutorial) over a Dataset whose `__getitem__` does torchvision-style
  per-sample work in plain torch (to float, zero-pad 4 + random crop, random flip,
  normalise), fp32, eager, NCHW.

Throughput is images per second over `--steps` training steps after a warm-up of 2 steps
(the first steps create kernels and, on CUDA, capture the graph). `seconds_per_12_epoch_eval`
is extrapolated, not measured: setup (network build, fit setup) + 12 epochs x 45,000 images
at the measured rate + the measured validation pass (5,000 images plus BatchNorm
re-estimation) - the quantity a search pays per candidate.

Data: the CIFAR-10 JPEGs in ../shared/data/cifar10-jpg.tar.gz, extracted and decoded once
into ./.cache/bench (git-ignored); random uint8 images of CIFAR's shape when that archive is
absent (the output says which).

    python benchmarks/trainer.py                     # batch 256, device auto
    python benchmarks/trainer.py --steps 20 --repeats 5 --json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tarfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the checkout

from blockqnn.cli.args import integer
from blockqnn.data import DataArrays, DeviceData, load_arrays
from blockqnn.settings.config import DataConfig, TrainConfig
from blockqnn.space.nsc.block import Block
from blockqnn.space.nsc.builder import build_network
from blockqnn.space.nsc.cost import network_cost
from blockqnn.train.devices import describe_device, resolve_device
from blockqnn.train.loop import configure_threads, fit
from blockqnn.train.recipe import Recipe, should_compile

ROOT = Path(__file__).resolve().parent.parent
ARCHIVE = ROOT.parent / "shared" / "data" / "cifar10-jpg.tar.gz"
CACHE = ROOT / ".cache" / "bench"
# conv3 and conv5 from the input, added; a max-pool of the input concatenated with the sum;
# a 1x1 conv of that: a representative multi-branch block of the search space.
BLOCK = "1,1,3,0,0; 2,1,5,0,0; 3,5,0,1,2; 4,2,3,0,0; 5,6,0,3,4; 6,1,1,5,0; 7,7,0,0,0"
SEARCH_IMAGES = 45_000  # CIFAR-10 training split minus the 5,000 validation images
SEARCH_EPOCHS = 12  # (paper) early-stop epochs
VAL_IMAGES = 5_000


def load_data(archive: Path = ARCHIVE, cache: Path = CACHE) -> tuple[DataArrays, str]:
    """CIFAR-10 from `archive` (the JPEG .tar.gz, or a folder already extracted from it),
    decoded once into `cache`; random images of its shape when the archive is absent."""
    if archive.is_dir():
        config = DataConfig(dataset=str(archive), cache_dir=str(cache / "arrays"))
        return load_arrays(config), f"CIFAR-10 JPEGs ({archive})"
    if archive.is_file():
        folder = cache / "cifar10-jpg"
        if not (folder / "test").is_dir():
            cache.mkdir(parents=True, exist_ok=True)
            with tarfile.open(archive) as tar:
                tar.extractall(folder, filter="data")
        config = DataConfig(dataset=str(folder), cache_dir=str(cache / "arrays"))
        return load_arrays(config), f"CIFAR-10 JPEGs ({archive.name})"
    rng = np.random.default_rng(0)

    def images(n: int) -> np.ndarray:
        return rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)

    labels = rng.integers(0, 10, SEARCH_IMAGES + VAL_IMAGES, dtype=np.int64)
    arrays = DataArrays(
        name="random", x_train=images(SEARCH_IMAGES), y_train=labels[:SEARCH_IMAGES],
        x_val=images(VAL_IMAGES), y_val=labels[SEARCH_IMAGES:], x_test=images(0),
        y_test=labels[:0], classes=tuple(str(i) for i in range(10)),
        mean=(0.5, 0.5, 0.5), std=(0.29, 0.29, 0.29),
    )  # fmt: skip
    return arrays, "random uint8 images of CIFAR-10's shape (archive absent)"


def network(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_network(BLOCK, filters=32, blocks_per_stage=2)


def subset(data: DeviceData, n: int) -> DeviceData:
    return replace(data, x_train=data.x_train[:n], y_train=data.y_train[:n])


def measure_ours(data: DeviceData, recipe: Recipe, steps: int) -> dict[str, Any]:
    """A warm-up fit of 2 steps, then a timed fit of `steps` steps, on one network. Setup is
    the build, both fits' setup and the warm-up's time beyond its steps at the measured rate
    (kernel creation, torch.compile, CUDA-graph capture)."""
    b = recipe.batch_size
    t0 = time.perf_counter()
    model = network()
    build = time.perf_counter() - t0
    warm = fit(model, subset(data, 2 * b), recipe, epochs=1, eval_split=None)
    result = fit(model, subset(data, steps * b), recipe, epochs=1, eval_split="val")
    assert warm.ok and result.ok, warm.error or result.error
    rate = result.images_per_second
    first_steps = max(0.0, warm.train_seconds - warm.images / rate)
    return {
        "images_per_s": rate,
        "setup_s": build + warm.setup_seconds + result.setup_seconds + first_steps,
        "eval_s": result.eval_seconds,
        "mode": result.mode,
    }


class TypicalCifar(Dataset[tuple[torch.Tensor, int]]):
    """What tutorials write: per-sample ToTensor, RandomCrop(32, padding=4),
    RandomHorizontalFlip and Normalize, here in plain torch (torchvision is not a
    dependency)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, mean: Any, std: Any) -> None:
        self.x, self.y = torch.from_numpy(x), y
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = self.x[i].float() / 255.0
        img = nn.functional.pad(img, (4, 4, 4, 4))
        top, left = torch.randint(0, 9, (2,)).tolist()
        img = img[:, top : top + 32, left : left + 32]
        if torch.rand(()) < 0.5:
            img = img.flip(-1)
        return (img - self.mean) / self.std, int(self.y[i])


def measure_baseline(
    arrays: DataArrays, device: torch.device, batch: int, steps: int, workers: int
) -> dict[str, Any]:
    n = (steps + 2) * batch
    ds = TypicalCifar(arrays.x_train[:n], arrays.y_train[:n], arrays.mean, arrays.std)
    loader = DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers,
                        pin_memory=device.type == "cuda", drop_last=True)  # fmt: skip
    model = network().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    images = 0
    t0 = 0.0
    for i, (x, y) in enumerate(loader):
        if i == 2:  # after the warm-up steps (and the workers' start)
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0, images = time.perf_counter(), 0
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        images += len(y)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return {"images_per_s": images / (time.perf_counter() - t0)}


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=integer(1), default=256)
    parser.add_argument(
        "--steps", type=integer(1), help="timed steps (default: 8 on CPU, 200 on CUDA)"
    )
    parser.add_argument("--repeats", type=integer(1), default=3, help="interleaved repeats")
    parser.add_argument("--workers", type=integer(0), default=2, help="baseline DataLoader workers")
    parser.add_argument(
        "--compile",
        choices=("auto", "on", "off"),
        default="auto",
        help="ours with torch.compile; auto decides as a 12-epoch CIFAR-10 evaluation would",
    )
    parser.add_argument(
        "--archive",
        type=Path,
        default=ARCHIVE,
        help="the CIFAR-10 JPEG .tar.gz or its extracted folder (default: ../shared/data)",
    )
    parser.add_argument("--cache", type=Path, default=CACHE, help="where to extract and decode")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    device = resolve_device(args.device)
    threads = configure_threads() if device.type == "cpu" else torch.get_num_threads()
    steps = args.steps or (200 if device.type == "cuda" else 8)
    arrays, source = load_data(args.archive, args.cache)
    data = arrays.to_device(device)
    recipe = replace(
        Recipe.from_config(TrainConfig(), "cifar10", (3, 32, 32)),
        batch_size=args.batch_size,
        compile=should_compile(
            args.compile,
            device,
            network_cost(Block.parse(BLOCK)).flops,
            SEARCH_IMAGES,
            SEARCH_EPOCHS,
        ),
    )
    ours: list[dict[str, Any]] = []
    base: list[dict[str, Any]] = []
    for _ in range(args.repeats):
        ours.append(measure_ours(data, recipe, steps))
        base.append(measure_baseline(arrays, device, args.batch_size, steps, args.workers))
    ours_rate = spread([o["images_per_s"] for o in ours])
    base_rate = spread([b["images_per_s"] for b in base])
    pairs = zip(ours, base, strict=True)
    ratios = spread([o["images_per_s"] / b["images_per_s"] for o, b in pairs])
    setup = statistics.median(o["setup_s"] for o in ours)
    # The eval in measure_ours covers data.x_val (5,000 CIFAR images) and BN re-estimation.
    eval_s = statistics.median(o["eval_s"] for o in ours) * VAL_IMAGES / len(arrays.x_val)
    per_eval = setup + SEARCH_EPOCHS * SEARCH_IMAGES / ours_rate["median"] + eval_s
    report = {
        "ours_images_per_s": ours_rate["median"],
        "baseline_images_per_s": base_rate["median"],
        "ratio": ratios["median"],
        "seconds_per_12_epoch_eval": per_eval,
        "seconds_per_12_epoch_eval_note": "extrapolated: setup + 12 x 45,000 images at the "
        "measured rate + the measured validation pass",
        "device": describe_device(device),
        "mode": ours[0]["mode"],
        "spread": {"ours": ours_rate, "baseline": base_rate, "ratio": ratios},
        "n": args.repeats,
        "steps": steps,
        "batch_size": args.batch_size,
        "threads": threads,
        "baseline_workers": args.workers,
        "data": source,
        "block": BLOCK,
        "network": "F=32, N=2, paper head",
        "setup_s": setup,
        "eval_s": eval_s,
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "compile": args.compile,
    }
    if args.json:
        json.dump(report, sys.stdout)
        sys.stdout.write("\n")
        return 0
    print(f"trainer benchmark: {report['device']}, batch {args.batch_size}, {steps} steps "
          f"x {args.repeats} repeats (median [min, max]); data: {source}")  # fmt: skip
    print(f"{'loop':<10} {'images/s':>10} {'min':>9} {'max':>9}  mode")
    for name, rate, mode in (
        ("ours", ours_rate, report["mode"]),
        ("baseline", base_rate, f"DataLoader ({args.workers} workers), fp32 eager"),
    ):
        print(f"{name:<10} {rate['median']:>10.1f} {rate['min']:>9.1f} {rate['max']:>9.1f}  {mode}")
    print(f"ratio      {ratios['median']:>10.2f} {ratios['min']:>9.2f} {ratios['max']:>9.2f}")
    print(f"12-epoch evaluation (45k images, extrapolated): {per_eval:.1f} s "
          f"(setup {setup:.2f} s, validation {eval_s:.2f} s)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
