"""Benchmark: growing a search on the NAS-Bench-201 table (seconds per hundred seeds).

Two questions, each answered over many seeds with the same loop as `blockqnn search` (one
slot; a candidate seen before is told its stored reward again and does not count):

- `extend`: how should Q-learning's epsilon schedule continue when a finished search of
  budget B is extended to E (`blockqnn search --resume DIR --budget E`)? Compared:
  `final` (the extra blocks continue at the schedule's final epsilon: what blockqnn does),
  `reexplore` (a short re-exploration: the extra blocks get epsilon 0.5, 0.4, 0.3, 0.2, 0.1
  in equal stages), and `fresh` (a search of budget E from the start, for reference). The
  figures: the best found after E, and the mean reward of the extra E - B queries.
- `warm`: what does warm-starting Q-learning (`--warm-start`) from a random-search run of the
  same budget give? Compared: `cold` (Q-learning alone) and `warm` (the random run's
  results told first, as `blockqnn search --warm-start` does: they are known, so a proposal
  of one of them is reused and does not count). The figures: the best of the run's own
  queries, the best including the warm-start trials, and the mean of the last quarter of
  its own queries. The random run of seed s uses seed s + 10_000.

Intervals are 95% (mean +- t * std / sqrt(n), as benchmarks/strategies.py).

    python benchmarks/growth.py extend --budget 100 --extend-to 200 --seeds 50
    python benchmarks/growth.py warm --budget 100 --seeds 50
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import dumps
from benchmarks.strategies import DEFAULT_TABLE, _Problem, ci95
from blockqnn.cli.args import integer
from blockqnn.strategy import make_strategy
from blockqnn.strategy.qlearning import QLearningAgent

REEXPLORE = (0.5, 0.4, 0.3, 0.2, 0.1)
MAX_REUSE_STREAK = 10_000


Known = dict[str, tuple[Any, float]]  # hash -> (candidate, reward), in query order


def _search(
    strategy: Any, problem: _Problem, budget: int, known: Known, rewards: list[float]
) -> None:
    """Ask and tell until `rewards` holds `budget` distinct queries (in place)."""
    streak = 0
    while len(rewards) < budget and streak < MAX_REUSE_STREAK:
        candidate = strategy.ask()
        h = candidate.hash
        if h in known:
            strategy.tell(candidate, known[h][1])
            streak += 1
            continue
        streak = 0
        reward = problem.reward(candidate)
        known[h] = (candidate, reward)
        strategy.tell(candidate, reward)
        rewards.append(reward)


def _agent(problem: _Problem, name: str, budget: int, seed: int) -> Any:
    return make_strategy(name, problem.space, budget, seed, problem.config.agent)


def _reexplore(agent: QLearningAgent, start: int, extra: int) -> None:
    """Append equal stages of `REEXPLORE` epsilons over `extra` blocks after `start` ones.
    (Reaches into the agent: this schedule is only measured here, not offered.)"""
    ends = [start + round(extra * (i + 1) / len(REEXPLORE)) for i in range(len(REEXPLORE))]
    agent._epsilons = [*agent._epsilons[: len(agent._stage_ends)], *REEXPLORE]
    agent._stage_ends = [*agent._stage_ends, *ends]


def extend_one(problem: _Problem, mode: str, budget: int, extend_to: int, seed: int) -> Any:
    known: Known = {}
    rewards: list[float] = []
    agent = _agent(problem, "qlearning", extend_to if mode == "fresh" else budget, seed)
    if mode != "fresh":
        _search(agent, problem, budget, known, rewards)
        if mode == "reexplore":
            _reexplore(agent, budget, extend_to - budget)
    _search(agent, problem, extend_to, known, rewards)
    return {"best": max(rewards), "extra_mean": statistics.fmean(rewards[budget:])}


def warm_one(problem: _Problem, mode: str, budget: int, seed: int) -> Any:
    known: Known = {}
    warm: list[float] = []
    if mode == "warm":
        _search(_agent(problem, "random", budget, seed + 10_000), problem, budget, known, warm)
    agent = _agent(problem, "qlearning", budget, seed)
    if mode == "warm":  # told in the random run's order, before the first ask
        for candidate, reward in list(known.values()):
            agent.tell(candidate, reward)
    rewards: list[float] = []
    _search(agent, problem, budget, known, rewards)
    k = max(1, len(rewards) // 4)
    return {
        "best": max(rewards),
        "best_with_warm": max(rewards + warm),
        "last_quarter": statistics.fmean(rewards[-k:]),
    }


def _stats(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "ci95": ci95(values)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("question", choices=("extend", "warm"))
    parser.add_argument("--table", default=str(DEFAULT_TABLE))
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--budget", type=integer(1), default=100)
    parser.add_argument("--extend-to", type=integer(2), default=200, help="> --budget")
    parser.add_argument("--seeds", type=integer(1), default=50)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.question == "extend" and args.extend_to <= args.budget:
        parser.error(f"--extend-to {args.extend_to}: must exceed --budget {args.budget}")
    if not Path(args.table).is_file():
        print(f"growth: table {args.table} not found (--table FILE)", file=sys.stderr)
        return 2
    problem = _Problem("nb201", args.table, args.dataset, 10)
    rows: dict[str, dict[str, Any]] = {}
    if args.question == "extend":
        for mode in ("final", "reexplore", "fresh"):
            runs = [
                extend_one(problem, mode, args.budget, args.extend_to, s) for s in range(args.seeds)
            ]
            rows[mode] = {key: _stats([r[key] for r in runs]) for key in runs[0]}
    else:
        for mode in ("cold", "warm"):
            runs = [warm_one(problem, mode, args.budget, s) for s in range(args.seeds)]
            rows[mode] = {key: _stats([r[key] for r in runs]) for key in runs[0]}
    report = {
        "question": args.question,
        "dataset": args.dataset,
        "budget": args.budget,
        "extend_to": args.extend_to if args.question == "extend" else None,
        "seeds": args.seeds,
        "optimum": problem.optimum,
        "results": rows,
    }
    if args.json:
        print(dumps(report))
        return 0
    print(f"nb201 {args.dataset} {args.question}, budget {args.budget}, {args.seeds} seeds")
    for mode, figures in rows.items():
        text = "  ".join(f"{k} {v['mean']:.4f} +- {v['ci95']:.4f}" for k, v in figures.items())
        print(f"{mode:>10}  {text}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
