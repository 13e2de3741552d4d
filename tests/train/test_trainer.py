"""The training loop: schedules, seeding, resume, failure detection and the CUDA path."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from torch import nn

from blockqnn.data import DeviceData, load_arrays
from blockqnn.data.augment import cutout
from blockqnn.errors import BlockQNNError
from blockqnn.settings.config import DataConfig, TrainConfig
from blockqnn.space.nsc.builder import build_network
from blockqnn.train.devices import resolve_device, resolve_precision
from blockqnn.train.loop import EpochInfo, accuracy, fit, make_optimizer, recalibrate_batchnorm
from blockqnn.train.optim import GraphableSGD
from blockqnn.train.recipe import (
    EARLY_STOP_BN_IMAGES,
    WARMUP_START,
    Recipe,
    lr_at,
    should_compile,
)
from blockqnn.train.step import Execution, compile_forward, load_optimizer_state

BLOCK = "1,1,3,0,0; 2,1,3,1,0; 3,5,0,2,0; 4,7,0,0,0"
# Small and quick: 8 filters, 320 training digits (400 minus validation), batches of 50.
RECIPE = Recipe(batch_size=50, precision="fp32", bn_recalibrate=400)


@pytest.fixture(scope="module")
def digits() -> DeviceData:
    return load_arrays(DataConfig(dataset="digits", train_samples=400)).to_device("cpu")


def net(data: DeviceData, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_network(BLOCK, input_shape=data.input_shape, filters=8)


class NaNNet(nn.Module):
    """Logits 0 / 0: the loss is NaN from the first step."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :10] * self.w / self.w  # 0/0 = NaN from the start


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device(None).type == expected
    assert resolve_device("auto").type == expected
    with pytest.raises(BlockQNNError, match="not a device"):
        resolve_device("gpu0")
    with pytest.raises(BlockQNNError, match="only cpu and cuda"):
        resolve_device("meta")
    if not torch.cuda.is_available():
        with pytest.raises(BlockQNNError, match="CUDA is not available"):
            resolve_device("cuda:0")


def test_precision() -> None:
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) is None
    assert resolve_precision("bf16", cpu) is torch.bfloat16
    assert resolve_precision("auto", cpu) in (None, torch.bfloat16)


def test_paper_step_schedule() -> None:
    r = Recipe(lr=1e-3, schedule="step", step_epochs=5, gamma=0.2)
    got = [lr_at(r, 12, e) for e in range(12)]
    assert got[:5] == [1e-3] * 5
    assert got[5:10] == pytest.approx([2e-4] * 5)
    assert got[10:] == pytest.approx([4e-5] * 2)


def test_multistep_cosine_constant() -> None:
    r = Recipe(optimizer="sgd", lr=0.1, schedule="multistep", gamma=0.1)
    assert lr_at(r, 300, 149) == pytest.approx(0.1)
    assert lr_at(r, 300, 150) == pytest.approx(0.01)
    assert lr_at(r, 300, 225) == pytest.approx(0.001)
    c = replace(r, schedule="cosine")
    assert lr_at(c, 10, 0) == pytest.approx(0.1)
    assert lr_at(c, 10, 5) == pytest.approx(0.05)
    assert lr_at(c, 10, 10) == pytest.approx(0.0, abs=1e-12)
    assert lr_at(replace(r, schedule="constant"), 10, 7.5) == 0.1


def test_linear_warm_up_then_the_schedule() -> None:
    r = Recipe(optimizer="sgd", lr=0.4, schedule="cosine", warmup_epochs=2)
    assert lr_at(r, 40, 0) == pytest.approx(0.4 * WARMUP_START)  # not 0: a wasted step
    halfway = WARMUP_START + (1 - WARMUP_START) / 2  # linear: half the way at epoch 1 of 2
    assert lr_at(r, 40, 1) == pytest.approx(0.4 * halfway * 0.5 * (1 + math.cos(math.pi / 40)))
    cosine = replace(r, warmup_epochs=0)
    assert lr_at(r, 40, 2) == lr_at(cosine, 40, 2)  # the schedule's own after the warm-up
    assert lr_at(r, 40, 30) == lr_at(cosine, 40, 30)
    assert [lr_at(r, 40, p / 10) for p in range(21)] == sorted(
        lr_at(r, 40, p / 10) for p in range(21)
    )  # rising through the warm-up


def test_warm_up_changes_the_lr_every_step(digits: DeviceData) -> None:
    """A warm-up within one epoch: the optimiser sees a new lr at each step, so the first
    epoch's end lr is the warm-up's end, not its start."""
    recipe = replace(RECIPE, optimizer="sgd", lr=0.05, schedule="constant", warmup_epochs=1)
    seen: list[float] = []
    original = torch.optim.SGD.step

    def spy(self: torch.optim.SGD, *args: object, **kwargs: object) -> object:
        seen.append(float(self.param_groups[0]["lr"]))
        return original(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.optim.SGD, "step", spy)
        result = fit(net(digits), digits, recipe, epochs=2, eval_split=None)
    assert result.ok
    steps = len(seen) // 2
    assert seen[0] == pytest.approx(0.05 * WARMUP_START)
    assert seen[:steps] == sorted(seen[:steps]) and len(set(seen[:steps])) == steps
    assert seen[steps:] == [0.05] * steps


def test_graphable_sgd_matches_torch_sgd() -> None:
    for nesterov, wd in ((True, 5e-4), (False, 0.0), (True, 0.0)):
        torch.manual_seed(0)
        a = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))
        b = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))
        b.load_state_dict(a.state_dict())
        lr = torch.tensor(0.1)
        ours = GraphableSGD(b.parameters(), lr=lr, momentum=0.9, nesterov=nesterov, weight_decay=wd)
        theirs = torch.optim.SGD(
            a.parameters(), lr=0.1, momentum=0.9, nesterov=nesterov, weight_decay=wd
        )
        for i in range(6):
            x = torch.randn(4, 5)
            for model, opt in ((a, theirs), (b, ours)):
                opt.zero_grad()
                model(x).pow(2).sum().backward()
                opt.step()
            lr.fill_(0.1 * 0.5**i)  # the schedule moves the tensor in place
            theirs.param_groups[0]["lr"] = 0.1 * 0.5**i
        for p, q in zip(a.parameters(), b.parameters(), strict=True):
            assert torch.allclose(p, q, atol=1e-6), (nesterov, wd)


def test_a_checkpoint_moves_between_the_two_sgds(digits: DeviceData) -> None:
    """A final training checkpointed on a GPU (graphed SGD) resumes on the CPU (torch's SGD)
    and the other way round."""
    recipe = replace(RECIPE, optimizer="sgd", lr=0.05, nesterov=True)
    model = net(digits)
    graphed = make_optimizer(model, recipe, graphed=True)
    eager = make_optimizer(model, recipe, graphed=False)
    assert isinstance(graphed, GraphableSGD) and type(eager) is torch.optim.SGD
    for source, target, is_graphed in ((graphed, eager, False), (eager, graphed, True)):
        source.zero_grad()
        model(digits.normalize(digits.x_train[:8])).sum().backward()
        source.step()
        load_optimizer_state(target, source.state_dict(), graphed=is_graphed)
        # the momentum carries over: every buffer of the target is the source's
        for param in model.parameters():
            carried = target.state[param].get("momentum_buffer")
            assert carried is not None, "no momentum buffer: the state was not loaded"
            assert torch.equal(carried, source.state[param]["momentum_buffer"])
        target.zero_grad()
        model(digits.normalize(digits.x_train[:8])).sum().backward()
        target.step()  # a missing hyperparameter would raise KeyError here


class _LeftOrRight(nn.Module):
    """Class 0 when the left half of the image is brighter, else class 1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = x.shape[-1] // 2
        left, right = x[..., :w].mean((1, 2, 3)), x[..., w:].mean((1, 2, 3))
        return torch.stack([left - right, right - left], 1)


def test_flip_tta_sums_the_logits_of_the_mirror_image(digits: DeviceData) -> None:
    x = torch.zeros(6, 1, 8, 8, dtype=torch.uint8)
    x[:3, ..., :4] = 255  # bright left half: class 0
    x[3:, ..., 4:] = 255  # bright right half: class 1
    y = torch.tensor([0, 0, 0, 1, 1, 1])
    data = replace(digits, x_test=x, y_test=y)
    assert accuracy(_LeftOrRight(), data, "test", precision="fp32") == 1.0
    # With the mirror's logits added the two classes tie (argmax: class 0): half right.
    assert accuracy(_LeftOrRight(), data, "test", precision="fp32", tta=True) == 0.5


def test_recipe_validation() -> None:
    with pytest.raises(BlockQNNError, match="optimizer"):
        Recipe(optimizer="rmsprop")
    with pytest.raises(BlockQNNError, match="lr"):
        Recipe(lr=float("nan"))
    with pytest.raises(BlockQNNError, match="milestones"):
        Recipe(milestones=(0.5, 1.5))


def test_early_stop_recipe_is_the_paper_s() -> None:
    r = Recipe.from_config(TrainConfig(), "cifar10", (3, 32, 32))
    assert (r.optimizer, r.lr, r.betas, r.eps) == ("adam", 1e-3, (0.9, 0.999), 1e-8)
    assert (r.schedule, r.step_epochs, r.gamma, r.batch_size) == ("step", 5, 0.2, 256)
    assert (r.pad, r.flip) == (4, True)
    assert r.bn_recalibrate == EARLY_STOP_BN_IMAGES
    digits = Recipe.from_config(TrainConfig(), "digits", (1, 8, 8))
    assert (digits.pad, digits.flip) == (0, False)
    crop = Recipe.from_config(TrainConfig(augment="crop_flip"), "digits", (1, 8, 8))
    assert (crop.pad, crop.flip) == (1, True)
    none = Recipe.from_config(TrainConfig(augment="none"), "cifar10", (3, 32, 32))
    assert (none.pad, none.flip) == (0, False)


def test_fit_learns_digits_and_reports(digits: DeviceData) -> None:
    model = net(digits)
    result = fit(model, digits, RECIPE, epochs=2)
    assert result.ok and result.epochs == 2
    assert result.accuracy is not None and result.accuracy > 0.6  # chance is 0.1
    assert result.images == 2 * len(digits.x_train)  # eager mode keeps the partial batch
    assert result.images_per_second > 0 and result.train_seconds > 0
    assert result.mode == "eager fp32 channels_last"
    assert result.batch_size == 50
    assert accuracy(model, digits, "val", precision="fp32") == pytest.approx(result.accuracy)


def test_same_seed_same_result(digits: DeviceData) -> None:
    r = replace(RECIPE, pad=1, flip=True, cutout=3)  # the random augmentations too
    a = fit(net(digits), digits, r, epochs=1)
    b = fit(net(digits), digits, r, epochs=1)
    c = fit(net(digits), digits, replace(r, seed=1), epochs=1)
    assert (a.train_loss, a.accuracy) == (b.train_loss, b.accuracy)
    assert a.train_loss != c.train_loss


def test_resume_from_checkpoint_is_exact(digits: DeviceData) -> None:
    """Two epochs in one go == one epoch, a checkpoint, and the second epoch resumed."""
    recipe = replace(RECIPE, schedule="cosine", flip=True)
    straight = fit(net(digits), digits, recipe, epochs=2)
    saved: list[dict[str, object]] = []

    def stop_after_one(info: EpochInfo) -> bool:
        saved.append(info.checkpoint())
        return True

    first = fit(net(digits), digits, recipe, epochs=2, on_epoch=stop_after_one)
    assert first.ok and first.epochs == 1 and first.accuracy is not None
    fresh = net(digits, seed=7)  # the checkpoint overwrites these weights
    resumed = fit(fresh, digits, recipe, epochs=2, resume=saved[0])
    assert resumed.epochs == 2
    assert resumed.train_loss == straight.train_loss
    assert resumed.accuracy == straight.accuracy


def test_on_epoch_and_eval_every(digits: DeviceData) -> None:
    seen: list[tuple[int, float | None, float]] = []
    fit(
        net(digits),
        digits,
        replace(RECIPE, step_epochs=1, gamma=0.5),
        epochs=2,
        eval_every=1,
        on_epoch=lambda i: seen.append((i.epoch, i.accuracy, i.lr)),
    )
    assert [e for e, _, _ in seen] == [1, 2]
    assert all(a is not None for _, a, _ in seen)
    assert [lr for _, _, lr in seen] == pytest.approx([1e-3, 5e-4])


def test_non_finite_loss_stops_training(digits: DeviceData) -> None:
    result = fit(NaNNet(), digits, replace(RECIPE, channels_last=False), epochs=3)
    assert result.error == "non-finite loss at epoch 1"
    assert result.epochs == 0 and result.accuracy is None
    assert result.images == 50  # stopped at the first step


def test_huge_lr_diverges(digits: DeviceData) -> None:
    result = fit(net(digits), digits, replace(RECIPE, lr=1e6), epochs=2)
    assert not result.ok
    assert result.error.startswith(("loss diverged at epoch 1", "non-finite loss at epoch 1"))


def test_time_limit(digits: DeviceData) -> None:
    result = fit(net(digits), digits, replace(RECIPE, max_seconds=1e-6), epochs=2)
    assert result.error == "time limit of 1e-06 s reached in epoch 1"
    assert result.epochs == 0 and result.images == 50


def test_bad_arguments(digits: DeviceData) -> None:
    with pytest.raises(BlockQNNError, match="epochs"):
        fit(net(digits), digits, RECIPE, epochs=0)
    with pytest.raises(BlockQNNError, match="eval_split"):
        fit(net(digits), digits, RECIPE, epochs=1, eval_split="train")


def test_cutout_squares() -> None:
    x = torch.full((64, 1, 8, 8), 200, dtype=torch.uint8)
    fill = torch.full((1, 1, 1, 1), 7, dtype=torch.uint8)
    out = cutout(x, 3, fill, torch.Generator().manual_seed(0))
    changed = (out == 7).flatten(1).sum(1)
    assert int(changed.min()) >= 4  # a corner centre keeps 2x2 of the 3x3 square
    assert int(changed.max()) == 9
    assert bool(((out == 7) | (out == 200)).all())


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graph_training(digits: DeviceData) -> None:
    data = load_arrays(DataConfig(dataset="digits")).to_device("cuda")
    recipe = Recipe(batch_size=64, bn_recalibrate=1024)
    graphed = fit(net(data), data, recipe, epochs=3)
    assert graphed.ok and graphed.accuracy is not None and graphed.accuracy > 0.8
    assert graphed.mode.startswith("cuda graph bf16"), graphed.mode
    assert graphed.images == 3 * (len(data.x_train) // 64)  # the partial batch is dropped
    sgd = fit(net(data), data, replace(recipe, optimizer="sgd", lr=0.05), epochs=1)
    assert sgd.mode.startswith("cuda graph"), sgd.mode  # GraphableSGD: captured too
    assert sgd.ok and math.isfinite(sgd.train_loss)
    eager = fit(net(data), data, replace(recipe, cuda_graphs=False), epochs=1)
    assert "no cuda graph: disabled" in eager.mode and eager.ok


def test_compile_policy() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    search_net = 358_567_936  # forward FLOPs of a typical search-time network on CIFAR
    # A 12-epoch CIFAR-10 evaluation on the CPU compiles; a digits proxy does not.
    assert should_compile("auto", cpu, search_net, 45_000, 12)
    assert not should_compile("auto", cpu, 914_432, 1_150, 3)
    assert not should_compile("auto", cuda, search_net, 45_000, 12)  # CUDA graphs instead
    assert should_compile("on", cuda, 1, 1, 1) and not should_compile(
        "off", cpu, search_net, 10**6, 300
    )


def test_compiled_training_drops_the_partial_batch_and_restores_the_warm_up(
    digits: DeviceData, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[nn.Module] = []

    def fake_compile(model: nn.Module, **kwargs: object) -> nn.Module:
        calls.append(model)
        return model  # stands in for the compiled module: same function

    monkeypatch.setattr(torch, "compile", fake_compile)
    model = net(digits)
    result = fit(model, digits, replace(RECIPE, compile=True), epochs=1)
    assert calls == [model] and result.ok
    assert result.mode.startswith("eager compiled fp32")
    assert result.images == (len(digits.x_train) // 50) * 50  # fixed shapes: no partial batch

    # The warm-up step that triggers compilation leaves no trace: same state, no gradients.
    fresh = net(digits)
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    ex = Execution(torch.device("cpu"), None, False)
    x = digits.normalize(digits.x_train[:50])
    compile_forward(fresh, nn.CrossEntropyLoss(), x, digits.y_train[:50], ex)
    assert ex.compiled
    assert all(torch.equal(before[k], v) for k, v in fresh.state_dict().items())
    assert all(p.grad is None for p in fresh.parameters())


def test_compile_failure_falls_back_to_eager(
    digits: DeviceData, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> object:
        def run(*a: object, **k: object) -> object:
            raise RuntimeError("no C++ compiler found\nmore detail")

        return run

    monkeypatch.setattr(torch, "compile", broken)
    result = fit(net(digits), digits, replace(RECIPE, compile=True), epochs=1)
    assert result.ok and result.accuracy is not None
    assert "not compiled: RuntimeError: no C++ compiler found" in result.mode
    assert result.images == len(digits.x_train)  # eager again: the partial batch is kept


def test_multistep_milestones_of_short_runs() -> None:
    sgd = Recipe(optimizer="sgd", lr=0.1, schedule="multistep", gamma=0.1)
    assert lr_at(sgd, 1, 0) == pytest.approx(0.1)  # a 1-epoch run starts at the full lr
    assert [lr_at(sgd, 4, e) for e in range(4)] == pytest.approx([0.1, 0.1, 0.01, 0.001])
    assert [lr_at(sgd, 3, e) for e in range(3)] == pytest.approx([0.1, 0.1, 0.01])
    assert lr_at(sgd, 300, 149) == pytest.approx(0.1) and lr_at(sgd, 300, 150) == pytest.approx(
        0.01
    )
    assert lr_at(sgd, 300, 225) == pytest.approx(0.001)


def tiny_imagenet_size(n_train: int) -> DeviceData:
    """`n_train` random 32x32 images of 2 classes: the ImageNet template pools them to 1x1, so
    a BatchNorm that trained on one image would see one value per channel."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n_train + 2, 3, 32, 32), dtype=torch.uint8, generator=gen)
    y = torch.arange(n_train + 2) % 2
    mean, std = torch.full((1, 3, 1, 1), 0.5), torch.full((1, 3, 1, 1), 0.3)
    return DeviceData("tiny", ("a", "b"), x[:n_train], y[:n_train], x[n_train:], y[n_train:],
                      x[n_train:], y[n_train:], mean, std)  # fmt: skip


def imagenet_net(data: DeviceData) -> nn.Module:
    torch.manual_seed(0)
    return build_network(
        "1,1,3,0,0; 2,7,0,0,0", 2, data.input_shape, filters=4, blocks_per_stage=1,
        template="imagenet",
    )  # fmt: skip


def test_a_last_batch_of_one_image_joins_the_batch_before() -> None:
    data = tiny_imagenet_size(9)  # batches of 4: 4, 4 and 1 -> 4 and 5
    recipe = Recipe(batch_size=4, precision="fp32", channels_last=False, bn_recalibrate=5)
    result = fit(imagenet_net(data), data, recipe, epochs=2)
    assert result.ok and result.images == 18 and result.accuracy is not None


def test_recalibration_never_ends_on_one_image() -> None:
    data = tiny_imagenet_size(9)
    model = imagenet_net(data)
    recalibrate_batchnorm(model, data, 5, 4, precision="fp32")  # 4 and 1 -> one batch of 5
    recalibrate_batchnorm(model, data, 9, 1, precision="fp32")  # batch 1: taken as 2
    before = {k: v.clone() for k, v in model.state_dict().items()}
    recalibrate_batchnorm(model, data, 1, 4, precision="fp32")  # one image: left as it was
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_one_training_image_is_refused() -> None:
    data = tiny_imagenet_size(1)
    recipe = Recipe(batch_size=4, precision="fp32", channels_last=False)
    with pytest.raises(BlockQNNError, match="training split of tiny has 1 image"):
        fit(imagenet_net(data), data, recipe, epochs=1)
