"""Final training of a found block: the paper's CIFAR recipe, checkpoints and resume.

Owns: choosing the block (from a run's ranking or given), training on train + validation
with `trainer.fit`, evaluating on the official test split, and the training folder
(checkpoint every epoch, written atomically; the finished model file). The settings
(`FinalSettings`, the named recipes) are `blockqnn.settings.final`'s, their `Recipe` is
`blockqnn.final.recipe`'s. Must not search or export.

A training folder OUT holds:
    checkpoint.pt  model file + train_state (optimizer state, epoch, settings); every epoch;
                   checked before a resume (checksum, then weights and optimiser state
                   against the block): one that does not fit is a "damaged checkpoint"
    model.pt       the finished model (`blockqnn.load_model`), with test accuracy in metrics
    history.jsonl  one JSON line per epoch (loss, lr, seconds)
Running the same command again continues from checkpoint.pt; a finished folder just reports.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from blockqnn.errors import BlockQNNError, clip
from blockqnn.files import lock_folder, make_dir
from blockqnn.final.recipe import final_recipe
from blockqnn.settings.bounds import MAX_TOP, check, integers
from blockqnn.settings.config import Config, DataConfig, NetworkConfig
from blockqnn.settings.final import FINAL_RECIPES as FINAL_RECIPES  # re-exported
from blockqnn.settings.final import FinalSettings as FinalSettings
from blockqnn.settings.final import epochs_for_data
from blockqnn.space.nsc.block import Block

if TYPE_CHECKING:
    from blockqnn.data import DataArrays
    from blockqnn.train.loop import EpochInfo

CHECKPOINT = "checkpoint.pt"
MODEL = "model.pt"
HISTORY = "history.jsonl"


class TrainingFailed(Exception):
    """The final training diverged (non-finite loss): a failed run, exit code 1."""


# Settings added after the first release, with the values that reproduce it: left out of a
# training folder's identity while they have these values, so a folder started by an older
# version (the paper recipe) still resumes.
_LATER_SETTINGS = {"nesterov": False, "warmup_epochs": 0.0, "tta": "none"}


def _settings_identity(settings: FinalSettings) -> dict[str, Any]:
    values = asdict(settings)
    return {k: v for k, v in values.items() if _LATER_SETTINGS.get(k, object()) != v}


def pick_block(run_dir: str | Path, rank: int) -> tuple[Block, Config]:
    """The `rank`-th best (1 = best) completed block of a run and the run's config."""
    from blockqnn.store.db import Store

    check("--rank", rank, integers(1, MAX_TOP))
    store = Store.open(run_dir, readonly=True)
    try:
        top = store.top(rank)
        config = store.config()
    finally:
        store.close()
    if config.search.space != "nsc":
        raise BlockQNNError(
            f"{run_dir}: a {config.search.space} run; train builds networks of NSC blocks "
            "(search space nsc)"
        )
    if not top:
        raise BlockQNNError(f"{run_dir}: the run has no completed trials yet")
    if rank > len(top):
        raise BlockQNNError(f"--rank {rank}: the run has only {len(top)} completed blocks")
    return Block.parse(top[rank - 1].candidate, max_depth=config.agent.max_depth), config


def _full_training_set(arrays: DataArrays) -> DataArrays:
    """Train + validation as the training split (the final network sees every image)."""
    return replace(
        arrays,
        x_train=np.concatenate([arrays.x_train, arrays.x_val]),
        y_train=np.concatenate([arrays.y_train, arrays.y_val]),
        x_val=arrays.x_val[:0],
        y_val=arrays.y_val[:0],
    )


@dataclass
class FinalResult:
    out: str
    block: str
    test_accuracy: float
    epochs: int
    train_seconds: float
    images_per_second: float
    device: str
    mode: str
    resumed_from: int  # epochs already done when this call started
    params: int
    flops: int
    tta: str = "none"  # the test-time augmentation in test_accuracy: "flip" or "none"
    test_accuracy_no_tta: float | None = None  # without it, when tta is "flip"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TrainingPlan:
    """What is about to be trained, told to `train_final`'s `on_start` before training."""

    network: NetworkConfig
    params: int
    flops: int
    epochs: int  # the training's total
    start_epoch: int  # epochs already done (a resume)
    train_images: int
    recipe_epochs: int  # the recipe's count before it was fitted to the data


@dataclass
class _Job:
    """The training's fixed parts, shared by the steps of `train_final`."""

    block: Block
    arrays: DataArrays
    network: NetworkConfig
    settings: FinalSettings
    dataset: str
    out_dir: Path
    identity: dict[str, Any]


def train_final(
    block: Block,
    data: DataConfig,
    network: NetworkConfig,
    settings: FinalSettings,
    out: str | Path,
    device: str | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
    on_start: Callable[[TrainingPlan], None] | None = None,
    fit_epochs_to_data: bool = False,
) -> FinalResult:
    """Train `block` with the final recipe into folder `out` (resuming if it holds a run).
    `on_start(plan)` is told the network and the epochs before training starts. With
    `fit_epochs_to_data`, the recipe's epochs are scaled to the data (`epochs_for_data`)."""
    from blockqnn.data import load_arrays
    from blockqnn.space.nsc.cost import network_cost
    from blockqnn.train.devices import resolve_device, too_large

    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise BlockQNNError(f"--out {out_dir}: exists and is not a directory")
    arrays = _full_training_set(load_arrays(data))
    recipe_epochs = settings.epochs
    if fit_epochs_to_data:
        settings = replace(settings, epochs=epochs_for_data(recipe_epochs, len(arrays.x_train)))
    net_cfg = replace(network, num_classes=arrays.num_classes, input_shape=arrays.input_shape)
    identity = {
        "block": block.hash,
        "data": asdict(data),
        "network": net_cfg.to_dict(),
        "settings": _settings_identity(settings),
    }
    finished = out_dir / MODEL
    if finished.is_file():
        return _finished_result(finished, identity, out_dir)
    dev = resolve_device(device)
    planned = network_cost(block, net_cfg)
    reason = too_large(planned.params, dev)
    if reason:  # refused before it is built: allocating it could take the host down
        raise BlockQNNError(f"the network is too large for this device: {reason}")
    make_dir(out_dir, "--out")
    shown = clip(str(out_dir))
    # one training per folder: two would write the same checkpoint and history
    busy = f"--out {shown}: another training is writing this folder; wait for it to end, or "
    with lock_folder(out_dir, busy + "give another --out"):
        if finished.is_file():  # the other training finished while this one loaded its data
            return _finished_result(finished, identity, out_dir)
        resume = _checkpoint_resume(out_dir / CHECKPOINT, identity, settings.epochs, out_dir)
        start = int(resume["epoch"]) if resume else 0
        if on_start is not None:
            on_start(
                TrainingPlan(
                    net_cfg, planned.params, planned.flops, settings.epochs, start,
                    len(arrays.x_train), recipe_epochs,
                )
            )  # fmt: skip
        job = _Job(block, arrays, net_cfg, settings, data.dataset, out_dir, identity)
        return _train(job, dev, resume, progress)


def _train(
    job: _Job,
    dev: Any,
    resume: dict[str, Any] | None,
    progress: Callable[[dict[str, Any]], None] | None,
) -> FinalResult:
    """Build the network, fit it (a checkpoint every epoch), then test and save it."""
    import torch

    from blockqnn.final.model_io import model_payload, save_atomic
    from blockqnn.space.nsc.builder import Network
    from blockqnn.train.loop import fit

    arrays, ckpt_path = job.arrays, job.out_dir / CHECKPOINT
    device_data = arrays.to_device(dev)
    torch.manual_seed(job.settings.seed)
    model = Network(job.block, job.network)
    recipe = final_recipe(job.settings, job.dataset, arrays.input_shape)
    if resume is not None:
        _check_checkpoint(model, recipe, resume, ckpt_path)
    mean, std = tuple(arrays.mean), tuple(arrays.std)
    seconds_before = [0.0]  # fit's training seconds at the previous epoch's end

    def on_epoch(info: EpochInfo) -> None:
        ck = info.checkpoint()
        state = {"epoch": ck["epoch"], "optimizer": ck["optimizer"], "identity": job.identity}
        save_atomic(model_payload(model, mean, std, arrays.classes, {}, state), ckpt_path)
        history = job.out_dir / HISTORY
        _record_epoch(info, len(arrays.x_train), seconds_before, history, progress)

    t0 = time.perf_counter()
    fitted = fit(
        model,
        device_data,
        recipe,
        epochs=job.settings.epochs,
        eval_split=None,
        on_epoch=on_epoch,
        resume=resume,
    )
    if not fitted.ok:
        raise TrainingFailed(f"final training failed: {fitted.error}")
    start = int(resume["epoch"]) if resume else 0
    return _test_and_save(job, model, device_data, dev, fitted, start, t0, recipe.flip)


def _test_and_save(
    job: _Job,
    model: Any,
    device_data: Any,
    dev: Any,
    fitted: Any,
    start: int,
    t0: float,
    flips: bool,
) -> FinalResult:
    """Test the trained model (with flip TTA when asked) and write the finished model file."""
    from blockqnn.final.model_io import model_payload, save_atomic
    from blockqnn.space.nsc.cost import network_cost
    from blockqnn.train.devices import describe_device
    from blockqnn.train.loop import accuracy

    settings = job.settings
    tta = settings.tta == "flip" or (settings.tta == "auto" and flips)
    test_acc = accuracy(model, device_data, "test", precision=settings.precision, tta=tta)
    plain = accuracy(model, device_data, "test", precision=settings.precision) if tta else None
    cost = network_cost(job.block, job.network)
    ran = fitted.epochs - start
    result = FinalResult(
        out=str(job.out_dir),
        block=str(job.block),
        test_accuracy=test_acc,
        epochs=fitted.epochs,
        train_seconds=round(time.perf_counter() - t0, 3),
        images_per_second=(fitted.images / fitted.train_seconds if fitted.train_seconds else 0.0)
        if ran
        else 0.0,
        device=describe_device(dev),
        mode=fitted.mode,
        resumed_from=start,
        params=cost.params,
        flops=cost.flops,
        tta="flip" if tta else "none",
        test_accuracy_no_tta=plain,
    )
    metrics = {"test_accuracy": test_acc, "identity": job.identity, "result": result.to_dict()}
    arrays = job.arrays
    payload = model_payload(model, tuple(arrays.mean), tuple(arrays.std), arrays.classes, metrics)
    save_atomic(payload, job.out_dir / MODEL)
    return result


def _finished_result(finished: Path, identity: dict[str, Any], out_dir: Path) -> FinalResult:
    """The result stored in a finished training's model file, if it is of these settings."""
    from blockqnn.final.model_io import read_payload

    payload = read_payload(finished)
    metrics = payload.get("metrics")
    if not isinstance(metrics, dict) or metrics.get("identity") != identity:
        stored = metrics.get("identity") if isinstance(metrics, dict) else None
        raise BlockQNNError(
            f"--out {out_dir}: holds a finished training of other settings "
            f"({_difference(stored, identity)}; {_start_over(out_dir)})"
        )
    try:  # where the folder is now (it may have been moved or copied since)
        return replace(FinalResult(**metrics["result"]), out=str(out_dir))
    except (KeyError, TypeError):
        raise BlockQNNError(f"{finished}: damaged model file (no training result)") from None


def _start_over(out_dir: Path) -> str:
    """How to train these settings instead of the folder's: never by overwriting it."""
    return f"to start over with these settings, give another --out or remove {out_dir} first"


def _checkpoint_resume(
    ckpt_path: Path, identity: dict[str, Any], epochs: int, out_dir: Path
) -> dict[str, Any] | None:
    """What `fit(..., resume=...)` needs from the folder's checkpoint (None without one),
    refusing a checkpoint of other settings or a damaged one, and a folder holding something
    else."""
    from blockqnn.final.model_io import read_payload

    if not ckpt_path.is_file():
        if out_dir.is_dir() and any(out_dir.iterdir()):
            raise BlockQNNError(f"--out {out_dir}: is not empty and holds no blockqnn training")
        return None
    payload = read_payload(ckpt_path)
    state = payload.get("train_state")
    if not isinstance(state, dict):
        raise BlockQNNError(f"{ckpt_path}: damaged checkpoint (no training state)")
    if state.get("identity") != identity:
        raise BlockQNNError(
            f"--out {out_dir}: holds a training of another block or other settings "
            f"({_difference(state.get('identity'), identity)}; {_start_over(out_dir)})"
        )
    epoch = state.get("epoch")
    if not isinstance(epoch, int) or isinstance(epoch, bool):
        raise BlockQNNError(f"{ckpt_path}: damaged checkpoint (no epoch count)")
    if not 0 <= epoch <= epochs:
        raise BlockQNNError(f"{ckpt_path}: damaged checkpoint (epoch {clip(epoch)} of {epochs})")
    return {"epoch": epoch, "model": payload["state_dict"], "optimizer": state.get("optimizer")}


def _record_epoch(
    info: EpochInfo,
    n_train: int,
    seconds_before: list[float],
    history: Path,
    progress: Callable[[dict[str, Any]], None] | None,
) -> None:
    """Append the epoch's line to the history file and hand it to `progress`;
    `seconds_before` holds fit's training seconds at the previous epoch's end."""
    row = {
        "epoch": info.epoch,
        "train_loss": info.train_loss,
        "lr": info.lr,
        "train_seconds": round(info.train_seconds, 3),
        # this epoch's speed, not the mean since the start
        "images_per_second": round(n_train / (info.train_seconds - seconds_before[0]), 1)
        if info.train_seconds > seconds_before[0]
        else 0.0,
    }
    seconds_before[0] = info.train_seconds
    with history.open("a") as f:
        f.write(json.dumps(row) + "\n")
    if progress is not None:
        progress({**row, "epochs": info.epochs})


def _difference(stored: Any, wanted: dict[str, Any], where: str = "") -> str:
    """The first setting in which a folder's training differs from this command's, as
    `network.filters is 8 there, 16 here`."""
    if not isinstance(stored, dict):
        return "its settings are not recorded"
    for key, value in wanted.items():
        name = f"{where}.{key}" if where else key
        if key not in stored:
            return f"{name} is not recorded there"
        other = stored[key]
        if isinstance(value, dict) and isinstance(other, dict):
            if other != value:
                return _difference(other, value, name)
        elif other != value and not (isinstance(value, tuple) and list(value) == other):
            if name == "block":
                return "another block"
            return f"{name} is {clip(other)} there, {clip(value)} here"
    extra = sorted(set(stored) - set(wanted))
    return f"{where or 'it'} records {extra[0]}, not set here" if extra else "the settings differ"


def _check_checkpoint(model: Any, recipe: Any, resume: dict[str, Any], path: Path) -> None:
    """Load the checkpoint's weights into `model` and its optimiser state into a fresh
    optimiser, refusing (one line, "damaged checkpoint") whatever does not fit the block and
    the recipe: names, shapes, parameter groups, per-parameter state. Without this the first
    mismatch surfaces as a PyTorch traceback inside `fit`, or mid-step."""
    import torch

    from blockqnn.final.model_io import load_weights
    from blockqnn.train.step import make_optimizer

    try:
        load_weights(model, resume["model"])
        if not isinstance(resume["optimizer"], dict):
            raise BlockQNNError("no optimizer state")
        optimizer = make_optimizer(model, recipe, graphed=False)
        optimizer.load_state_dict(resume["optimizer"])
        for param, state in optimizer.state.items():
            for name, value in state.items():
                shaped = isinstance(value, torch.Tensor) and value.dim() > 0
                if shaped and value.shape != param.shape:
                    raise BlockQNNError(f"optimizer {name} of shape {tuple(value.shape)}")
    except BlockQNNError as exc:
        raise BlockQNNError(f"{path}: damaged checkpoint ({exc})") from None
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as exc:
        lines = str(exc).strip().splitlines()
        reason = clip(f"{type(exc).__name__}: {lines[0] if lines else ''}", 160)
        raise BlockQNNError(f"{path}: damaged checkpoint ({reason})") from None
