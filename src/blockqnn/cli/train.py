"""Train a found block with a final recipe (the paper's by default) and test it.

Examples:
  blockqnn train runs/digits --out runs/digits-final --filters 32 --blocks-per-stage 2
  blockqnn train --block "1,1,3,0,0; 2,1,3,1,0; 3,7,0,0,0" --dataset cifar10 --out final
  blockqnn train runs/c10 --recipe fast --filters 64 --out runs/c10-fast

Recipes: `paper` (SGD momentum 0.9, lr 0.1 /10 at 50% and 75% of 300 epochs, wd 5e-4,
batch 128) and `fast` (40 epochs for one GPU: batch 512, Nesterov SGD at lr 0.4 with a
2-epoch warm-up and cosine decay, label smoothing 0.1, flip test-time augmentation); flags
given beside `--recipe` override its values. Without `--epochs`, a data set smaller than
CIFAR's 50,000 training images trains for proportionally fewer epochs, at least 30 (digits:
30). Prints the network and the epochs first, the time left after the first epoch. Trains
on the whole training set (train + validation) and reports accuracy on the official test
split. Checkpoints every epoch; the same command again resumes from the last one (also
after Ctrl-C).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from typing import Any

from blockqnn.cli.args import FLOAT, INT, PATH
from blockqnn.errors import BlockQNNError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from blockqnn.settings.bounds import DEFAULT_MAX_DEPTH
    from blockqnn.settings.choices import AUGMENTS, FINAL_SCHEDULES, HEADS, PRECISIONS, TTA_MODES
    from blockqnn.settings.final import FEWEST_EPOCHS, FINAL_RECIPES, RECIPE_IMAGES
    from blockqnn.settings.threads import HELP as THREADS_HELP

    paper, fast = FINAL_RECIPES["paper"], FINAL_RECIPES["fast"]

    parser.add_argument(
        "run_dir", nargs="?", type=PATH, metavar="RUN_DIR", help="a search run to take from"
    )
    parser.add_argument("--rank", type=INT, default=1, help="K-th best block of the run")
    parser.add_argument("--block", metavar="BLOCK", help="train this block instead of a run's")
    _add_pick_arguments(parser)
    parser.add_argument(
        "--max-depth", type=INT, default=DEFAULT_MAX_DEPTH, help="depth limit of --block"
    )
    _add_data_arguments(parser)
    parser.add_argument("--out", type=PATH, required=True, metavar="DIR", help="training folder")
    parser.add_argument(
        "--recipe", choices=tuple(FINAL_RECIPES), default="paper", help="the starting settings"
    )
    # Unset flags (None) keep the recipe's value.
    parser.add_argument(
        "--epochs",
        type=INT,
        help=f"paper {paper.epochs}, fast {fast.epochs}; unset, scaled down for data sets "
        f"under {RECIPE_IMAGES:,} training images (at least {FEWEST_EPOCHS})",
    )
    parser.add_argument(
        "--batch-size", type=INT, help=f"paper {paper.batch_size}, fast {fast.batch_size}"
    )
    parser.add_argument(
        "--lr", type=FLOAT, help=f"peak SGD lr: paper {paper.lr:g}, fast {fast.lr:g}"
    )
    parser.add_argument("--weight-decay", type=FLOAT, help=f"L2 penalty ({paper.weight_decay:g})")
    parser.add_argument("--schedule", choices=FINAL_SCHEDULES)
    parser.add_argument(
        "--warmup-epochs", type=FLOAT, help=f"linear lr warm-up (fast: {fast.warmup_epochs:g})"
    )
    parser.add_argument(
        "--label-smoothing",
        type=FLOAT,
        help=f"paper {paper.label_smoothing:g}, fast {fast.label_smoothing:g}",
    )
    parser.add_argument("--cutout", type=INT, help=f"cutout square side in pixels ({paper.cutout})")
    parser.add_argument("--augment", choices=AUGMENTS)
    parser.add_argument(
        "--tta", choices=TTA_MODES, help=f"test-time flips: paper {paper.tta}, fast {fast.tta}"
    )
    parser.add_argument("--filters", type=INT, help="first-stage width F (default: the run's)")
    parser.add_argument("--blocks-per-stage", type=INT, help="blocks per stage N")
    parser.add_argument("--head", choices=HEADS)
    parser.add_argument("--precision", choices=PRECISIONS)
    parser.add_argument("--device", help="auto (default), cpu, cuda, cuda:1, ...")
    parser.add_argument("--seed", type=INT)
    parser.add_argument("--threads", help=THREADS_HELP)
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _add_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", type=PATH, help="dataset (default: the run's)")
    parser.add_argument("--data-dir", type=PATH, help="where cifar archives are")
    parser.add_argument(
        "--train-samples",
        type=INT,
        help="class-balanced subset (quick runs); default: the whole training set, also for "
        "a run that searched on a subset",
    )


def _add_pick_arguments(parser: argparse.ArgumentParser) -> None:
    """Choosing from the run's accuracy-latency front (`blockqnn.final.pick`) instead of by rank."""
    parser.add_argument(
        "--pick", metavar="pareto:K", help="the K-th block of the run's accuracy-latency front"
    )
    parser.add_argument(
        "--max-latency-ms",
        type=FLOAT,
        metavar="MS",
        help="the most accurate front block at most this slow",
    )


def run(args: argparse.Namespace) -> int:
    """Train a block with a final recipe: choose it, apply the flags, train, print."""
    from blockqnn.final.train import TrainingFailed, train_final
    from blockqnn.train import threads

    block, config = _choose_block(args)
    # --threads, else the run's (or the default) setting
    threads.choose(args.threads if args.threads is not None else config.train.threads)
    threads.configure_threads()
    data, network = _data_and_network(args, config)
    sized = args.filters is not None or args.blocks_per_stage is not None
    display = _Display(quiet=args.json, search_size=args.run_dir is not None and not sized)
    try:
        result = train_final(
            block, data, network, _settings(args), args.out, args.device,
            display.epoch, display.start, fit_epochs_to_data=args.epochs is None,
        )  # fmt: skip
    except TrainingFailed as exc:
        print(f"blockqnn train: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        display.close()
        print(
            "blockqnn train: interrupted; run the same command again to resume from the last "
            "finished epoch",
            file=sys.stderr,
        )
        return 130
    finally:
        display.close()
    if args.json:
        json.dump(result.to_dict(), sys.stdout)
        sys.stdout.write("\n")
    else:
        _print_result(result)
    return 0


def _choose_block(args: argparse.Namespace) -> tuple[Any, Any]:
    """The block to train and the config it comes with (a run's, or the defaults)."""
    from blockqnn.final.train import pick_block
    from blockqnn.settings.config import Config
    from blockqnn.space.nsc.block import Block

    if (args.run_dir is None) == (args.block is None):
        raise BlockQNNError("give either RUN_DIR or --block BLOCK")
    if args.block is not None and (args.pick is not None or args.max_latency_ms is not None):
        raise BlockQNNError("--pick and --max-latency-ms choose from a RUN_DIR, not --block")
    if args.block is not None:
        block = Block.parse(args.block, max_depth=args.max_depth)
        if not args.dataset:
            raise BlockQNNError("--dataset is required with --block")
        return block, Config()
    if args.pick is not None or args.max_latency_ms is not None:
        from blockqnn.final.pick import parse_pick, pick_from_run

        member = parse_pick(args.pick) if args.pick is not None else None
        return pick_from_run(args.run_dir, member, args.max_latency_ms)
    return pick_block(args.run_dir, args.rank)


def _data_and_network(args: argparse.Namespace, config: Any) -> tuple[Any, Any]:
    """The run's (or default) data and network settings with the flags given applied."""
    data = config.data
    # the whole training set unless --train-samples says otherwise: a search's subset (a
    # speed setting for scoring candidates) is not the final network's data
    overrides: dict[str, Any] = {"train_samples": 0}
    if args.dataset:
        overrides.update(dataset=args.dataset, data_dir=args.data_dir or "")
    elif args.data_dir:
        overrides["data_dir"] = args.data_dir
    if args.train_samples is not None:
        overrides["train_samples"] = args.train_samples
    data = replace(data, **overrides)
    network = config.network
    for name in ("filters", "blocks_per_stage", "head"):
        if getattr(args, name) is not None:
            network = replace(network, **{name: getattr(args, name)})
    return data, network


def _settings(args: argparse.Namespace) -> Any:
    """The recipe named by --recipe with the flags given beside it."""
    from blockqnn.settings.final import FINAL_RECIPES

    flags = (
        "epochs", "batch_size", "lr", "weight_decay", "schedule", "warmup_epochs",
        "label_smoothing", "cutout", "augment", "tta", "precision", "seed",
    )  # fmt: skip
    given = {f: getattr(args, f) for f in flags if getattr(args, f) is not None}
    return replace(FINAL_RECIPES[args.recipe], **given)


def _print_result(result: Any) -> None:
    resumed = f", resumed at epoch {result.resumed_from}" if result.resumed_from else ""
    tta = (
        f" (flip TTA; {result.test_accuracy_no_tta:.4f} without)"
        if result.test_accuracy_no_tta is not None
        else ""
    )
    print(f"block          {result.block}")
    print(f"test accuracy  {result.test_accuracy:.4f} after {result.epochs} epochs{resumed}{tta}")
    print(f"network        {result.params:,} parameters, {result.flops / 1e6:,.1f} MFLOPs")
    print(f"speed          {result.images_per_second:,.0f} images/s on {result.device}")
    print(f"model          {result.out}/model.pt")


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def duration(seconds: float) -> str:
    """`45 s`, `3 min`, `2.5 h`: an estimate's precision, not a stopwatch's."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class _Display:
    """Before training: the network, the epochs and (after the first epoch) an estimate of
    the time; then a rich bar on a terminal, one line per epoch otherwise; nothing but the
    result with --json. The bar starts only once the epochs are known (no `epoch 0/None`)."""

    def __init__(self, quiet: bool, search_size: bool) -> None:
        self.quiet = quiet
        self.search_size = search_size
        self._bar: Any = None
        self._task: Any = None
        self._first: int | None = None  # the first epoch this call trains

    def start(self, plan: Any) -> None:
        if self.quiet:
            return
        net = plan.network
        shape = "x".join(str(v) for v in net.input_shape)
        _say(
            f"network  F={net.filters} filters, N={net.blocks_per_stage} blocks per "
            f"stage, {net.head} head, {plan.params:,} parameters, {plan.flops / 1e6:,.1f} "
            f"MFLOPs per {shape} image"
        )
        if self.search_size:
            _say(
                "         the run's search-time size; --filters and --blocks-per-stage set "
                "the final size (e.g. --filters 32 --blocks-per-stage 2 or more)"
            )
        scaled = (
            f" (the recipe's {plan.recipe_epochs} scaled to {plan.train_images:,} training "
            "images; --epochs sets it)"
            if plan.epochs != plan.recipe_epochs
            else ""
        )
        resumed = f", resuming after epoch {plan.start_epoch}" if plan.start_epoch else ""
        _say(f"epochs   {plan.epochs}{scaled}{resumed}")
        _say("time     estimated after the first epoch")
        self._first = plan.start_epoch + 1

    def _start_bar(self, total: int) -> None:
        """Started at the first finished epoch: before it there is no loss, lr or speed to
        show (the bar showed `epoch 0/None loss - lr -` during the set-up)."""
        from rich.progress import BarColumn, Progress, TextColumn

        self._bar = Progress(
            TextColumn("epoch {task.completed}/{task.total}"),
            BarColumn(),
            TextColumn(
                "loss {task.fields[loss]}  lr {task.fields[lr]}  {task.fields[speed]} img/s  "
                "ETA {task.fields[eta]}"
            ),
            transient=False,
            auto_refresh=False,  # drawn at each epoch's end, when there is news
        )
        self._task = self._bar.add_task("train", total=total, loss="", lr="", speed="", eta="")

    def epoch(self, row: dict[str, Any]) -> None:
        if self.quiet:
            return
        done, total = row["epoch"], row["epochs"]
        left = (total - done) * row["train_seconds"] / max(1, done - (self._first or 1) + 1)
        loss, lr, speed = row["train_loss"], row["lr"], row["images_per_second"]
        if done == self._first:
            _say(f"time     about {duration(left)} for the {total - done} epochs left")
            if sys.stderr.isatty():
                self._start_bar(total)
        if self._bar is None:
            _say(
                f"epoch {done}/{total} loss {loss:.4f} lr {lr:.4g} {speed:,.0f} images/s "
                f"ETA {duration(left)}"
            )
            return
        self._bar.update(
            self._task,
            completed=done,
            loss=f"{loss:.4f}",
            lr=f"{lr:.3g}",
            speed=f"{speed:,.0f}",
            eta=duration(left),
        )
        if not self._bar.live.is_started:
            self._bar.start()
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
