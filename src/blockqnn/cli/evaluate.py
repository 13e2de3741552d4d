"""Evaluate one block: early-stop training of its search-time network and its reward.

Example: blockqnn evaluate "1,1,3,0,0; 2,1,3,1,0; 3,5,0,2,0; 4,7,0,0,0" --dataset digits
--epochs 3 --batch-size 64 --filters 16

Settings come from the defaults, then --config FILE.toml, then the options given here.
Exit code 0: the evaluation finished; 1: the candidate failed (non-finite or diverged loss,
out of memory, time limit); 2: bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from blockqnn.cli.args import FLOAT, INT, PATH

# option -> (config section, key); only options the user gives override the config
_OVERRIDES = {
    "dataset": ("data", "dataset"),
    "data_dir": ("data", "data_dir"),
    "train_samples": ("data", "train_samples"),
    "epochs": ("train", "epochs"),
    "lr": ("train", "lr"),
    "batch_size": ("train", "batch_size"),
    "seed": ("train", "seed"),
    "filters": ("network", "filters"),
    "blocks_per_stage": ("network", "blocks_per_stage"),
    "threads": ("train", "threads"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from blockqnn.settings.threads import HELP as THREADS_HELP

    parser.add_argument("block", metavar="BLOCK", help="NSC text or a JSON list of 5-lists")
    parser.add_argument(
        "--dataset",
        type=PATH,
        help="digits, cifar10, cifar100, a folder or a .npz (default: digits)",
    )
    parser.add_argument("--epochs", type=INT, help="early-stop epochs (paper: 12)")
    parser.add_argument("--train-samples", type=INT, help="class-balanced training subset")
    parser.add_argument("--lr", type=FLOAT, help="Adam learning rate (paper: 0.001)")
    parser.add_argument("--batch-size", type=INT, help="images per step (paper: 256)")
    parser.add_argument("--filters", type=INT, help="first-stage width F (search-time: 32)")
    parser.add_argument("--blocks-per-stage", type=INT, help="blocks per stage N (search: 2)")
    parser.add_argument(
        "--data-dir", type=PATH, help="where the cifar archives are or are downloaded to"
    )
    parser.add_argument("--device", default="auto", help="auto (cuda if present), cpu, cuda:1")
    parser.add_argument("--config", type=PATH, metavar="FILE", help="a TOML config file")
    parser.add_argument("--seed", type=INT, help="seed of weight init, batch order, augmentation")
    parser.add_argument("--threads", help=THREADS_HELP)
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _config(args: argparse.Namespace) -> Any:
    from blockqnn.settings.config import Config, merge

    config = Config.from_toml(args.config) if args.config is not None else Config()
    overrides: dict[str, dict[str, Any]] = {}
    for option, (section, key) in _OVERRIDES.items():
        value = getattr(args, option)
        if value is not None:
            overrides.setdefault(section, {})[key] = value
    return merge(config, overrides)


def run(args: argparse.Namespace) -> int:
    from blockqnn.evaluate import latency
    from blockqnn.space.nsc.block import Block
    from blockqnn.train import threads

    # Every check before torch is imported (seconds): bad input is refused at once.
    config = _config(args)
    block = Block.parse(args.block, max_depth=config.agent.max_depth)
    _check_dataset(config.data.dataset)
    latency.check_config(config)  # a bad runtime or target is refused before training
    threads.choose(config.train.threads)
    threads.configure_threads()  # now: the device line reports the threads used
    result = _evaluate(config, block, args.device)
    if args.json:
        json.dump({"nsc": str(block), "hash": block.hash, **result.to_dict()}, sys.stdout)
        sys.stdout.write("\n")
        return 0 if result.ok else 1

    from rich.console import Console

    out = Console()
    err = Console(stderr=True)
    cfg = config.network
    out.print(f"block     {block}  [dim]{block.hash[:12]}[/dim]")
    out.print(
        f"setup     {config.data.dataset}, F={cfg.filters}, N={cfg.blocks_per_stage}, "
        f"{config.train.epochs} epochs, batch {result.batch_size}, lr {config.train.lr:g}"
    )
    out.print(f"device    {result.device}, {result.mode}")
    if result.ok:
        out.print(f"accuracy  [bold]{result.accuracy:.2%}[/bold] (validation split)")
        out.print(f"reward    {result.reward:.4f} ({_reward_text(config)})")
    if latency.LATENCY_METRIC in result.metrics:
        out.print(
            f"latency   {result.metrics[latency.LATENCY_METRIC]:.3f} ms "
            f"({config.reward.latency_device or 'cpu'}, batch 1, deployment size)"
        )
    out.print(f"cost      {result.flops:,} FLOPs, {result.params:,} params, "
              f"density {result.density:.3f}")  # fmt: skip
    out.print(
        f"time      build {result.build_seconds:.2f} s, train {result.train_seconds:.2f} s "
        f"({result.epochs} epochs, {result.images_per_second:,.0f} images/s), "
        f"eval {result.eval_seconds:.2f} s"
    )
    if not result.ok:
        err.print(f"[red]failed[/red]    {result.error}", highlight=False)
        return 1
    return 0


def _check_dataset(name: str) -> None:
    """A dataset that names neither a built-in set nor an existing folder or .npz, refused
    as the loader would refuse it, but before torch and numpy are imported."""
    from pathlib import Path

    from blockqnn.settings.datasets import BUILTIN_DATASETS, missing_dataset

    if name in BUILTIN_DATASETS:
        return
    path = Path(name).expanduser()
    try:
        if path.exists():
            return  # what it holds is checked by the loader
    except OSError:
        return  # e.g. a name too long for the file system: the loader says so
    raise missing_dataset(name)


def _evaluate(config: Any, block: Any, device: str) -> Any:
    """Train the block's network briefly, measure its latency if asked, and reward it (the
    evaluator reports metrics only; the reward is the search's own `score`)."""
    from blockqnn.evaluate import latency
    from blockqnn.evaluate.early_stop import Evaluator
    from blockqnn.evaluate.shape import data_shape
    from blockqnn.reward import make_reward, score
    from blockqnn.store.cache import latency_cache

    evaluator = Evaluator(config, device=device)
    result = evaluator.evaluate(block)
    if latency.settings_of(config) is not None:  # [reward] latency_device or a latency reward
        shape, classes = data_shape(config, None, evaluator)
        meter = latency.LatencyMeter.for_config(config, shape, classes, latency_cache(config))
        if meter is not None:
            result = meter.apply(block, result)
    return score(make_reward(config), result)


def _reward_text(config: Any) -> str:
    reward = config.reward
    if reward.name == "paper":
        return f"mu {reward.mu:g}, rho {reward.rho:g}"
    return reward.name
