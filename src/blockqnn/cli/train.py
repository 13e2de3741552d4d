"""Train a found block with a final recipe (the paper's 300 epochs by default) and test it.

Examples:
  blockqnn train runs/digits --out runs/digits-final --epochs 30
  blockqnn train --block "1,1,3,0,0; 2,1,3,1,0; 3,7,0,0,0" --dataset cifar10 --out final
  blockqnn train runs/c10 --recipe fast --filters 64 --out runs/c10-fast

Recipes: `paper` (SGD momentum 0.9, lr 0.1 /10 at 50% and 75% of 300 epochs, wd 5e-4,
batch 128) and `fast` (40 epochs for one GPU: batch 512, Nesterov SGD at lr 0.4 with a
2-epoch warm-up and cosine decay, label smoothing 0.1, flip test-time augmentation); flags
given beside `--recipe` override its values. Trains on the whole training set (train +
validation) and reports accuracy on the official test split. Checkpoints every epoch; the
same command again resumes from the last one.
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
    from blockqnn.final.settings import FINAL_RECIPES
    from blockqnn.settings.bounds import DEFAULT_MAX_DEPTH
    from blockqnn.settings.choices import AUGMENTS, FINAL_SCHEDULES, HEADS, PRECISIONS, TTA_MODES
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
    parser.add_argument("--dataset", type=PATH, help="dataset (default: the run's)")
    parser.add_argument("--data-dir", type=PATH, help="where cifar archives are")
    parser.add_argument("--train-samples", type=INT, help="class-balanced subset (quick runs)")
    parser.add_argument("--out", type=PATH, required=True, metavar="DIR", help="training folder")
    parser.add_argument(
        "--recipe", choices=tuple(FINAL_RECIPES), default="paper", help="the starting settings"
    )
    # Unset flags (None) keep the recipe's value.
    parser.add_argument("--epochs", type=INT, help=f"paper {paper.epochs}, fast {fast.epochs}")
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
    """Train a block with a final recipe. Long on purpose: the command's steps (choose the
    block, apply the flags, train, print) in the order the user meets them."""
    from blockqnn.final.settings import FINAL_RECIPES, FinalSettings
    from blockqnn.final.train import TrainingFailed, pick_block, train_final
    from blockqnn.settings.config import Config, DataConfig
    from blockqnn.space.nsc.block import Block
    from blockqnn.train import threads

    if (args.run_dir is None) == (args.block is None):
        raise BlockQNNError("give either RUN_DIR or --block BLOCK")
    if args.block is not None and (args.pick is not None or args.max_latency_ms is not None):
        raise BlockQNNError("--pick and --max-latency-ms choose from a RUN_DIR, not --block")
    if args.block is not None:
        block = Block.parse(args.block, max_depth=args.max_depth)
        config = Config()
        if not args.dataset:
            raise BlockQNNError("--dataset is required with --block")
    elif args.pick is not None or args.max_latency_ms is not None:
        from blockqnn.final.pick import parse_pick, pick_from_run

        member = parse_pick(args.pick) if args.pick is not None else None
        block, config = pick_from_run(args.run_dir, member, args.max_latency_ms)
    else:
        block, config = pick_block(args.run_dir, args.rank)
    # --threads, else the run's (or the default) setting
    threads.choose(args.threads if args.threads is not None else config.train.threads)
    threads.configure_threads()
    data: DataConfig = config.data
    overrides: dict[str, Any] = {}
    if args.dataset:
        overrides = {"dataset": args.dataset, "data_dir": args.data_dir or ""}
    elif args.data_dir:
        overrides["data_dir"] = args.data_dir
    if args.train_samples is not None:
        overrides["train_samples"] = args.train_samples
    data = replace(data, **overrides)
    network = config.network
    for flag, name in (
        ("filters", "filters"),
        ("blocks_per_stage", "blocks_per_stage"),
        ("head", "head"),
    ):
        if getattr(args, flag) is not None:
            network = replace(network, **{name: getattr(args, flag)})
    flags = (
        "epochs", "batch_size", "lr", "weight_decay", "schedule", "warmup_epochs",
        "label_smoothing", "cutout", "augment", "tta", "precision", "seed",
    )  # fmt: skip
    given = {f: getattr(args, f) for f in flags if getattr(args, f) is not None}
    settings: FinalSettings = replace(FINAL_RECIPES[args.recipe], **given)
    progress, close = _progress(args.json)
    sized = args.filters is not None or args.blocks_per_stage is not None
    announce = None if args.json else _announce(args.run_dir is not None and not sized)
    try:
        result = train_final(
            block, data, network, settings, args.out, args.device, progress, announce
        )
    except TrainingFailed as exc:
        print(f"blockqnn train: {exc}", file=sys.stderr)
        return 1
    finally:
        close()
    if args.json:
        json.dump(result.to_dict(), sys.stdout)
        sys.stdout.write("\n")
    else:
        resumed = f", resumed at epoch {result.resumed_from}" if result.resumed_from else ""
        print(f"block          {result.block}")
        tta = (
            f" (flip TTA; {result.test_accuracy_no_tta:.4f} without)"
            if result.test_accuracy_no_tta is not None
            else ""
        )
        print(
            f"test accuracy  {result.test_accuracy:.4f} after {result.epochs} epochs{resumed}{tta}"
        )
        print(f"network        {result.params:,} parameters, {result.flops / 1e6:,.1f} MFLOPs")
        print(f"speed          {result.images_per_second:,.0f} images/s on {result.device}")
        print(f"model          {result.out}/model.pt")
    return 0


def _announce(search_size: bool) -> Any:
    """Prints the network before training: its size, and when it is the run's search-time
    size (small on purpose), how to ask for a final one."""

    def show(network: Any, params: int, flops: int) -> None:
        shape = "x".join(str(v) for v in network.input_shape)
        print(
            f"network  F={network.filters} filters, N={network.blocks_per_stage} blocks per "
            f"stage, {network.head} head, {params:,} parameters, {flops / 1e6:,.1f} MFLOPs "
            f"per {shape} image",
            file=sys.stderr,
            flush=True,
        )
        if search_size:
            print(
                "         the run's search-time size; --filters and --blocks-per-stage set "
                "the final size (e.g. --filters 32 --blocks-per-stage 2 or more)",
                file=sys.stderr,
                flush=True,
            )

    return show


def _progress(quiet: bool) -> tuple[Any, Any]:
    """A rich bar on a terminal, one line per epoch otherwise, nothing with --json."""
    if quiet:
        return None, lambda: None
    if not sys.stderr.isatty():

        def line(row: dict[str, Any]) -> None:
            print(
                f"epoch {row['epoch']}/{row['epochs']} loss {row['train_loss']:.4f} "
                f"lr {row['lr']:.4g} {row['images_per_second']:,.0f} images/s",
                file=sys.stderr,
                flush=True,
            )

        return line, lambda: None
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(
        TextColumn("epoch {task.completed}/{task.total}"),
        BarColumn(),
        TextColumn("loss {task.fields[loss]}  lr {task.fields[lr]}  {task.fields[speed]} img/s"),
        TimeRemainingColumn(),
        transient=False,
    )
    task = bar.add_task("train", total=None, loss="-", lr="-", speed="-")
    bar.start()

    def update(row: dict[str, Any]) -> None:
        bar.update(
            task,
            total=row["epochs"],
            completed=row["epoch"],
            loss=f"{row['train_loss']:.4f}",
            lr=f"{row['lr']:.3g}",
            speed=f"{row['images_per_second']:,.0f}",
        )

    return update, bar.stop
