"""Benchmark: the agents' overhead per block (ask, tell, replay), Q-table size and snapshot cost.

Runs a whole search schedule against a cheap torch-free synthetic reward, timing every `ask`,
every `tell` and every replay (the replay runs inside the `tell` that completes an iteration;
it is timed separately and subtracted from that tell). Q-learning runs with the default
preset (`qlearning`) and the paper's (`qlearning-paper`); the random agent, run in the same
process on the same budget, is the baseline of the ratio column.

    python benchmarks/agent.py                 # budgets 1,000 and 11,392
    python benchmarks/agent.py --budget 11392 --json

`--json` prints one object; its top-level `ask_ms`, `tell_ms`, `replay_ms`,
`overhead_ms_per_block` (medians) and `q_entries` are the Q-learning agent's at the largest
budget run, and `runs` holds every agent and budget with medians, p90 and means.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import statistics
import sys
import time
from typing import Any

from blockqnn.settings.config import Config, merge
from blockqnn.space.nsc.block import Block
from blockqnn.space.nsc.space import NSCSpace
from blockqnn.strategy import PAPER_BUDGET, QLearningAgent, RandomAgent, make_strategy
from blockqnn.train.threads import cpu_name

BUDGETS = (1000, PAPER_BUDGET)


def synthetic_reward(block: Block, rng: random.Random) -> float:
    """Accuracy-like reward: 3x3 convs help, pools hurt, plus noise. Microseconds to compute."""
    n3 = sum(1 for layer in block.layers if layer.type == 1 and layer.kernel == 3)
    pools = sum(1 for layer in block.layers if layer.type in (2, 3))
    return 0.3 + 0.07 * n3 - 0.08 * pools + rng.gauss(0.0, 0.02)


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {"median": 0.0, "p90": 0.0, "mean": 0.0, "n": 0}
    return {
        "median": statistics.median(values),
        "p90": _quantile(values, 0.9),
        "mean": statistics.fmean(values),
        "n": len(values),
    }


def q_table_bytes(agent: QLearningAgent) -> int:
    """Bytes held by the Q-table: the dicts and the float values. The key tuples are the
    search space's shared objects (a fixed cost, counted in `space_bytes`)."""
    table = agent._q
    total = sys.getsizeof(table)
    for row in table.values():
        total += sys.getsizeof(row) + sum(sys.getsizeof(v) for v in row.values())
    return total


def space_bytes(agent: QLearningAgent | RandomAgent) -> int:
    """Bytes of the space's interned state/action tuples (shared by every agent's keys)."""
    interned = agent.space._intern  # type: ignore[attr-defined]  # the NSC space's table
    return sys.getsizeof(interned) + sum(
        sys.getsizeof(t) + sum(sys.getsizeof(v) for v in t) for t in interned
    )


def run_one(kind: str, budget: int, seed: int) -> dict[str, Any]:
    agent: Any
    if kind == "random":
        agent = RandomAgent(budget=budget, seed=seed)
    else:  # "qlearning" (the default preset) or "qlearning-paper"
        preset = "paper" if kind == "qlearning-paper" else "blockqnn"
        config = merge(Config(), {"agent": {"preset": preset}}).agent
        agent = make_strategy("qlearning", NSCSpace(), budget, seed, config)
    replay_ns: list[int] = []
    if isinstance(agent, QLearningAgent):
        inner = agent._replay

        def timed_replay() -> None:
            start = time.perf_counter_ns()
            inner()
            replay_ns.append(time.perf_counter_ns() - start)

        setattr(agent, "_replay", timed_replay)  # noqa: B010  (instance override for timing)
    rng = random.Random(f"reward noise {seed}")  # not the agent's stream: Random(seed)
    ask_ms: list[float] = []
    tell_ms: list[float] = []
    block_ms: list[float] = []
    rewards: list[float] = []
    clock = time.perf_counter_ns
    for _ in range(budget):
        t0 = clock()
        block = agent.ask()
        t1 = clock()
        reward = synthetic_reward(block, rng)
        n_replays = len(replay_ns)
        t2 = clock()
        agent.tell(block, reward)
        t3 = clock()
        replayed = replay_ns[-1] if len(replay_ns) > n_replays else 0
        ask_ms.append((t1 - t0) / 1e6)
        tell_ms.append((t3 - t2 - replayed) / 1e6)
        block_ms.append((t1 - t0 + t3 - t2) / 1e6)
        rewards.append(reward)
    t0 = clock()
    snapshot = json.dumps(agent.state_dict())
    snapshot_ms = (clock() - t0) / 1e6
    last = max(1, budget * 12 // 178)  # the epsilon = 0.1 stage of the default schedule
    out: dict[str, Any] = {
        "agent": kind,
        "budget": budget,
        "ask_ms": _summary(ask_ms),
        "tell_ms": _summary(tell_ms),
        "replay_ms": _summary([ns / 1e6 for ns in replay_ns]),
        "overhead_ms_per_block": _summary(block_ms),
        "q_entries": agent.q_entries if isinstance(agent, QLearningAgent) else 0,
        "q_table_bytes": q_table_bytes(agent) if isinstance(agent, QLearningAgent) else 0,
        "space_bytes": space_bytes(agent),
        "snapshot_ms": snapshot_ms,
        "snapshot_bytes": len(snapshot),
        "mean_reward_last_stage": statistics.fmean(rewards[-last:]),
    }
    return out


def _hardware() -> str:
    return f"{cpu_name()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def _print_table(runs: list[dict[str, Any]], hardware: str) -> None:
    print(f"agent overhead per block ({hardware}); times in ms, median / p90")
    head = (
        f"{'agent':<10} {'budget':>7} {'ask':>13} {'tell':>13} {'replay':>13} "
        f"{'per block':>13} {'vs random':>9} {'q entries':>9} {'Q MiB':>6} {'snap ms':>8} "
        f"{'snap MiB':>8}"
    )
    print(head)
    print("-" * len(head))
    baseline = {r["budget"]: r for r in runs if r["agent"] == "random"}

    def cell(s: dict[str, float]) -> str:
        return f"{s['median']:.3f}/{s['p90']:.3f}"

    for r in runs:
        base = baseline.get(r["budget"])
        ratio = (
            r["overhead_ms_per_block"]["median"] / base["overhead_ms_per_block"]["median"]
            if base
            else float("nan")
        )
        print(
            f"{r['agent']:<10} {r['budget']:>7} {cell(r['ask_ms']):>13} {cell(r['tell_ms']):>13} "
            f"{cell(r['replay_ms']):>13} {cell(r['overhead_ms_per_block']):>13} "
            f"{ratio:>8.2f}x {r['q_entries']:>9} {r['q_table_bytes'] / 2**20:>6.2f} "
            f"{r['snapshot_ms']:>8.1f} {r['snapshot_bytes'] / 2**20:>8.2f}"
        )
    for r in runs:
        mean = r["overhead_ms_per_block"]["mean"]
        print(
            f"{r['agent']} @ {r['budget']}: mean per block incl. replays {mean:.3f} ms, "
            f"mean reward in the last stage {r['mean_reward_last_stage']:.3f}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--budget", type=int, choices=BUDGETS, action="append", help="budget to run (repeatable)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    budgets = sorted(args.budget or BUDGETS)
    runs: list[dict[str, Any]] = []
    for budget in budgets:
        for kind in ("random", "qlearning", "qlearning-paper"):
            gc.collect()
            runs.append(run_one(kind, budget, args.seed))
    hardware = _hardware()
    if args.json:
        top = next(r for r in reversed(runs) if r["agent"] == "qlearning")
        metrics = ("ask_ms", "tell_ms", "replay_ms", "overhead_ms_per_block")
        out: dict[str, Any] = {name: top[name]["median"] for name in metrics}
        out["p90"] = {name: top[name]["p90"] for name in metrics}
        out.update(
            budget=top["budget"],
            q_entries=top["q_entries"],
            q_table_bytes=top["q_table_bytes"],
            snapshot_ms=top["snapshot_ms"],
            snapshot_bytes=top["snapshot_bytes"],
            hardware=hardware,
            runs=runs,
        )
        print(json.dumps(out, indent=2))
    else:
        _print_table(runs, hardware)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
