"""Benchmark: search strategies side by side, over many seeds, on a space with known rewards.

Every strategy runs the same loop as `blockqnn search` with one evaluation slot: ask, look
the candidate's hash up among those already evaluated (a known one is told its stored reward
again and does not count), otherwise evaluate it, count it and tell its reward. Rewards come
from a table or a formula, never from training, so hundreds of seeds take seconds:

- `--space nb201`: NAS-Bench-201's table (`--table`, default the shared data's copies); the
  budget counts distinct cells queried. `--protocol proxy` (the default, BlockQNN's and the
  literature's): the reward is the 12-epoch test accuracy of the `--dataset` column, and the
  search's pick (its best reward) is judged by its 200-epoch accuracy; the best achievable
  pick is the 200-epoch accuracy of the cell with the best 12-epoch one (CIFAR-10: 93.92).
  `--protocol oracle`: the reward is the 200-epoch accuracy itself, the best achievable pick
  the table's best.
- `--space nsc --synthetic`: BlockQNN's NSC space with a deterministic accuracy-like formula
  (`synthetic_accuracy`) that, like real early-stop rewards, saturates with the depth of the
  convolution chain and punishes tiny blocks and pooling; its optimum is not known exactly,
  so regret is left out.

Per (strategy, budget) over the seeds: the best reward found (mean, std, 95% interval), the
pick's final accuracy (mean, 95% interval), its regret to the best achievable pick, and the
mean reward of the last quarter of the queries (which shows whether a strategy learned:
random search's stays at the space's mean). The proxy is noisy, so a pick can beat the best
achievable pick (a negative regret). Intervals are mean +- t(0.975, n-1) * std / sqrt(n).
A PNG draws the mean best-so-far against queries.

    python benchmarks/strategies.py --space nb201 --json
    python benchmarks/strategies.py --space nb201 --seeds 100 --budgets 100,300
    python benchmarks/strategies.py --protocol oracle --dataset cifar100 --budgets 100,300
    python benchmarks/strategies.py --space nsc --synthetic --budgets 64,256,1500 --seeds 20
    python benchmarks/strategies.py --space nb201 --preset paper   # the paper's constants
"""

from __future__ import annotations

import argparse
import hashlib
import math
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the checkout

from benchmarks.common import dumps, int_list
from blockqnn.cli.args import integer
from blockqnn.errors import BlockQNNError
from blockqnn.settings.config import Config, merge
from blockqnn.settings.registry import STRATEGIES
from blockqnn.space.nsc.block import Block, LayerType
from blockqnn.strategy import make_strategy

ROOT = Path(__file__).resolve().parents[1]
# the shared data beside the project (`../shared/data`), or beside a worktree's parent
DATA = next(
    (d for d in (ROOT.parent / "shared/data", ROOT.parents[1] / "shared/data") if d.is_dir()),
    ROOT.parent / "shared/data",
)
DEFAULT_TABLE = DATA / "nats-tss-200epoch-accuracy.csv.gz"
PROXY_TABLE = DATA / "nats-tss-12epoch-cifar10.csv.gz"  # joined with the 200-epoch one
DEFAULT_STRATEGIES = ("qlearning", "random", "evolution")
MAX_REUSE_STREAK = 10_000  # as the search loop: a strategy proposing only known candidates


def t975(n: int) -> float:
    """Student's t at 0.975 for a sample of `n` (scipy's: scikit-learn installs it)."""
    from scipy.stats import t  # type: ignore[import-untyped, unused-ignore]

    return float(t.ppf(0.975, n - 1)) if n >= 2 else math.nan


def ci95(values: list[float]) -> float:
    """Half-width of the 95% interval of the mean."""
    if len(values) < 2:
        return math.nan
    return t975(len(values)) * statistics.stdev(values) / math.sqrt(len(values))


# ----- rewards ---------------------------------------------------------------------------------


def synthetic_accuracy(block: Block) -> float:
    """An accuracy-like score in about [0.70, 0.95] from a block's structure.

    The depth of the convolution chain from input to output counts most and saturates (a
    3x3 or 5x5 conv 1, a 1x1 conv 0.4, pools and identities 0), so one-layer blocks score
    ~0.77 and the best need several stacked convs; a pool on the output path costs 0.01;
    blocks that merge branches (add, concat) gain 0.02; a deterministic hash-keyed noise
    (sd ~0.005) breaks ties as training noise would.
    """
    depth: dict[int, float] = {0: 0.0}
    pools: dict[int, int] = {0: 0}
    consumed: set[int] = set()
    merges = 0
    for layer in block.layers:
        if layer.type is LayerType.TERMINAL:
            continue
        consumed.update(layer.preds)
        own = 0.0
        if layer.type is LayerType.CONV:
            own = 1.0 if layer.kernel > 1 else 0.4
        best = max(layer.preds, key=lambda p: depth[p])
        depth[layer.index] = depth[best] + own
        pools[layer.index] = pools[best] + (layer.type in (LayerType.MAX_POOL, LayerType.AVG_POOL))
        merges += layer.type in (LayerType.ADD, LayerType.CONCAT)
    outputs = [i for i in depth if i and i not in consumed] or [0]
    top = max(outputs, key=lambda i: depth[i])
    noise = int.from_bytes(hashlib.sha256(block.hash.encode()).digest()[:4], "big") / 2**32
    score = 0.70 + 0.24 * (1 - math.exp(-depth[top] / 2.5))
    return score - 0.01 * pools[top] + 0.02 * (merges > 0) + 0.01 * (noise - 0.5)


class _Problem:
    """A space, its reward of a candidate, the final accuracy a pick is judged by, and the
    best achievable pick (None when unknown).

    Protocols (nb201): `oracle` rewards the 200-epoch accuracy, the figure the pick is then
    judged by; `proxy` rewards the 12-epoch accuracy (BlockQNN's early stop) and judges the
    pick by its 200-epoch accuracy, whose best achievable value is that of the cell with
    the best 12-epoch accuracy (a perfect search of the proxy)."""

    def __init__(
        self, space_name: str, table: str, dataset: str, max_depth: int, protocol: str = "oracle"
    ) -> None:
        self.config = merge(
            Config(),
            {
                "search": {"space": space_name},
                "data": {"table": table, "dataset": dataset},
                "agent": {"max_depth": max_depth},
            },
        )
        self.optimum: float | None = None  # the best achievable pick
        if space_name == "nb201":
            from blockqnn.space.nb201 import NB201Space
            from blockqnn.space.nb201_table import FINAL_EPOCHS, load_table

            self.space: Any = NB201Space()
            table_ = load_table(table)
            final = table_.column(dataset)
            reward = table_.column(dataset, 12 if protocol == "proxy" else FINAL_EPOCHS)
            # ops -> (reward, final accuracy), as fractions
            self._rows = {
                ops: (row[reward] / 100, row[final] / 100) for ops, row in table_.rows.items()
            }
            self.optimum = max(self._rows.values())[1]
        else:
            from blockqnn.space.nsc.space import NSCSpace

            self.space = NSCSpace(max_depth)

    def reward(self, candidate: Any) -> float:
        return self.score(candidate)[0]

    def score(self, candidate: Any) -> tuple[float, float]:
        """(reward, final accuracy) of `candidate`."""
        if self.optimum is not None:
            return self._rows[candidate.ops]
        value = synthetic_accuracy(candidate)
        return value, value


# ----- one run ---------------------------------------------------------------------------------

_PROBLEM: _Problem | None = None


def _init(space_name: str, table: str, dataset: str, max_depth: int, protocol: str) -> None:
    global _PROBLEM
    _PROBLEM = _Problem(space_name, table, dataset, max_depth, protocol)


def run_one(task: tuple[str, int, int, dict[str, Any]]) -> dict[str, Any]:
    """One search of `budget` distinct queries; the rewards in query order."""
    name, budget, seed, agent_settings = task
    problem = _PROBLEM
    assert problem is not None
    agent_config = merge(Config(), {"agent": agent_settings}).agent  # a preset, then the keys
    strategy = make_strategy(name, problem.space, budget, seed, agent_config)
    known: dict[str, float] = {}
    rewards: list[float] = []
    finals: list[float] = []
    streak = reused = 0
    start = time.perf_counter()
    while len(rewards) < budget and streak < MAX_REUSE_STREAK:
        candidate = strategy.ask()
        h = candidate.hash
        if h in known:
            strategy.tell(candidate, known[h])
            streak += 1
            reused += 1
            continue
        streak = 0
        reward, final = problem.score(candidate)
        known[h] = reward
        strategy.tell(candidate, reward)
        rewards.append(reward)
        finals.append(final)
    return {
        "strategy": name,
        "budget": budget,
        "seed": seed,
        "rewards": rewards,
        # the pick: the final accuracy of the first candidate with the best reward
        "pick": finals[rewards.index(max(rewards))] if rewards else math.nan,
        "reused": reused,
        "seconds": time.perf_counter() - start,
    }


def summarise(runs: list[dict[str, Any]], optimum: float | None) -> dict[str, Any]:
    """The figures of one (strategy, budget) over its seeds."""
    best = [max(r["rewards"]) for r in runs]
    picks = [r["pick"] for r in runs]
    quarter = []
    for r in runs:
        k = max(1, len(r["rewards"]) // 4)
        quarter.append(statistics.fmean(r["rewards"][-k:]))
    out: dict[str, Any] = {
        "strategy": runs[0]["strategy"],
        "budget": runs[0]["budget"],
        "seeds": len(runs),
        "best_mean": statistics.fmean(best),
        "best_std": statistics.stdev(best) if len(best) > 1 else 0.0,
        "best_ci95": ci95(best),
        "pick_mean": statistics.fmean(picks),
        "pick_ci95": ci95(picks),
        "regret_mean": None if optimum is None else optimum - statistics.fmean(picks),
        "last_quarter_mean": statistics.fmean(quarter),
        "last_quarter_ci95": ci95(quarter),
        "reused_mean": statistics.fmean(r["reused"] for r in runs),
        "short_runs": sum(len(r["rewards"]) < r["budget"] for r in runs),
        "seconds": sum(r["seconds"] for r in runs),
    }
    return out


def best_so_far(runs: list[dict[str, Any]]) -> list[float]:
    """Mean over seeds of the best reward after each query."""
    n = max(len(r["rewards"]) for r in runs)
    curves = []
    for r in runs:
        curve, best = [], -math.inf
        for value in r["rewards"]:
            best = max(best, value)
            curve.append(best)
        curve += [best] * (n - len(curve))
        curves.append(curve)
    return [statistics.fmean(c[i] for c in curves) for i in range(n)]


def _plot(path: Path, groups: dict[tuple[str, int], list[dict[str, Any]]], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budget = max(b for _, b in groups)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for (name, b), runs in sorted(groups.items()):
        if b != budget:
            continue
        curve = best_so_far(runs)
        ax.plot(range(1, len(curve) + 1), curve, label=f"{name} (n={len(runs)})")
    ax.set_xscale("log")
    ax.set_xlabel("distinct candidates queried")
    ax.set_ylabel("best reward so far (mean over seeds)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _parse_settings(items: list[str], preset: str = "") -> dict[str, Any]:
    """`key=value` pairs for `[agent]`, values read as TOML scalars (numbers, true, quoted
    strings), else as the bare string; checked as a config's `[agent]` table."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise BlockQNNError(f"--agent-set {item!r}: expected KEY=VALUE")
        try:
            out[key.strip()] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:  # a bare word: preset=fast
            out[key.strip()] = value
    if preset:
        out["preset"] = preset
    merge(Config(), {"agent": out})  # validates names and types
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--space", choices=("nb201", "nsc"), default="nb201")
    parser.add_argument("--synthetic", action="store_true", help="nsc: the synthetic reward")
    parser.add_argument(
        "--protocol",
        choices=("proxy", "oracle"),
        default="proxy",
        help="nb201: reward the 12-epoch (proxy) or the 200-epoch (oracle) accuracy; the pick "
        "is judged by its 200-epoch accuracy",
    )
    parser.add_argument("--table", default="", help="nb201: the table file(s), os.pathsep-joined")
    parser.add_argument("--dataset", default="cifar10", help="nb201: the accuracy column")
    parser.add_argument("--strategies", default=",".join(DEFAULT_STRATEGIES))
    parser.add_argument("--budgets", type=int_list(1), default="32,100,300,1000")
    parser.add_argument("--seeds", type=integer(1), default=100)
    parser.add_argument("--max-depth", type=integer(1), default=10, help="nsc: the depth")
    parser.add_argument("--preset", default="", help="[agent] preset for every strategy")
    parser.add_argument(
        "--agent-set", action="append", default=[], metavar="KEY=VALUE", help="[agent] setting"
    )
    parser.add_argument("--workers", type=integer(1), default=os.cpu_count() or 1)
    parser.add_argument("--png", default="", help="where to draw best-so-far curves")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.space == "nsc" and not args.synthetic:
        parser.error("--space nsc needs --synthetic (real NSC rewards need training)")
    if not args.table:
        proxy = args.protocol == "proxy"
        args.table = os.pathsep.join(map(str, [DEFAULT_TABLE, *([PROXY_TABLE] * proxy)]))
    if args.space == "nsc":
        args.protocol = "oracle"  # the synthetic reward is its own final accuracy
    missing = [t for t in args.table.split(os.pathsep) if not Path(t).is_file()]
    if args.space == "nb201" and missing:
        print(f"strategies: table {missing[0]} not found (--table FILE)", file=sys.stderr)
        return 2
    budgets: list[int] = args.budgets
    names = args.strategies.split(",")
    try:
        settings = _parse_settings(args.agent_set, args.preset)
        for name in names:
            STRATEGIES.check(name)
    except BlockQNNError as exc:
        print(f"strategies: {exc}", file=sys.stderr)
        return 2
    tasks = [(n, b, s, settings) for b in budgets for n in names for s in range(args.seeds)]
    init = (args.space, args.table, args.dataset, args.max_depth, args.protocol)
    try:
        _init(*init)
    except BlockQNNError as exc:
        print(f"strategies: {exc}", file=sys.stderr)
        return 2
    assert _PROBLEM is not None
    start = time.perf_counter()
    if args.workers > 1:
        ctx = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
        with ctx.Pool(args.workers, initializer=_init, initargs=init) as pool:
            results = pool.map(run_one, tasks, chunksize=max(1, len(tasks) // (8 * args.workers)))
    else:
        results = [run_one(t) for t in tasks]
    wall = time.perf_counter() - start
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["strategy"], r["budget"]), []).append(r)
    rows = [summarise(groups[(n, b)], _PROBLEM.optimum) for b in budgets for n in names]
    label = (
        f"nb201 {args.dataset} {args.protocol} protocol"
        if args.space == "nb201"
        else "nsc synthetic"
    )
    if args.png:
        _plot(Path(args.png), groups, f"{label}: {args.seeds} seeds per strategy")
    report = {
        "space": args.space,
        "dataset": args.dataset if args.space == "nb201" else "synthetic",
        "protocol": args.protocol,
        "best_achievable_pick": _PROBLEM.optimum,
        "agent_settings": settings,
        "wall_seconds": wall,
        "results": rows,
    }
    if args.json:
        print(dumps(report))
        return 0
    opt = "unknown" if _PROBLEM.optimum is None else f"{_PROBLEM.optimum:.4f}"
    print(
        f"{label}, best achievable pick {opt}, {args.seeds} seeds, {wall:.1f} s wall, "
        f"{settings or ''}"
    )
    print(
        f"{'strategy':>10} {'budget':>6} {'best reward +- ci95':>20} {'pick (final) +- ci95':>21}"
        f" {'regret':>7} {'last-quarter mean +- ci95':>26} {'reused':>7}"
    )
    for row in rows:
        regret = "-" if row["regret_mean"] is None else f"{row['regret_mean']:.4f}"
        print(
            f"{row['strategy']:>10} {row['budget']:>6} "
            f"{row['best_mean']:>11.4f} +- {row['best_ci95']:.4f} "
            f"{row['pick_mean']:>12.4f} +- {row['pick_ci95']:.4f} {regret:>7} "
            f"{row['last_quarter_mean']:>17.4f} +- {row['last_quarter_ci95']:.4f} "
            f"{row['reused_mean']:>7.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
