"""The free pre-screen: `m` proposals, one zero-cost score each, the best one trained.

Owns: `Screener` (draws `[search] prescreen` proposals from the strategy, ranks them with a
scorer, `blockqnn.evaluate.zero_cost.ZeroCostScorer` in a search, and says which to train)
and `replayed_asks` (the asks a trial's pre-screen made, for resume). Must not train nor
write to the store: the loop records what `screen` returns in the chosen trial's info.

Why no `forget` in the strategy protocol: the proposals that lose are asked and never told,
and every built-in strategy keeps such an ask harmless. Q-learning's ask only walks its
table with its RNG (the table, the replay memory and the epsilon clock, distinct blocks
told, change on `tell` alone); evolution's ask samples its population and mutates a copy
(the population changes on `tell` alone); random search only draws. Each ask advances the
strategy's RNG, so resume replays the losers' asks too: their positions among the agent's
calls are recorded (`info["prescreen"]["asks"]`) and `blockqnn.search.resume` asks again
at each of them. A plug-in strategy that needs a tell for every ask must not be used with
`prescreen > 1`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

Scorer = Callable[[Any], tuple[float, float]]  # candidate -> (score, seconds); -inf: unknown


class Screener:
    """Ranks `m` proposals by `scorer` (higher is better; ties to the earlier proposal)."""

    def __init__(self, m: int, scorer: Scorer, name: str) -> None:
        self.m = m
        self.scorer = scorer
        self.name = name

    def screen(self, ask: Callable[[], tuple[Any, int]]) -> tuple[Any, int, dict[str, Any]]:
        """Ask `m` times (`ask` returns a candidate and its position among the agent's calls);
        returns the best, its position and the record for its trial's info: its score (None
        when none could be computed), the seconds all scores took, the proposals screened
        and the positions of the losers' asks."""
        proposals = [ask() for _ in range(self.m)]
        scores: list[float] = []
        seconds = 0.0
        for candidate, _ in proposals:
            value, took = self.scorer(candidate)
            scores.append(value if math.isfinite(value) else -math.inf)
            seconds += took
        best = max(range(len(proposals)), key=lambda i: (scores[i], -i))
        candidate, seq = proposals[best]
        record = {
            "score_name": self.name,
            "score": scores[best] if math.isfinite(scores[best]) else None,
            "seconds": seconds,
            "screened": self.m,
            "asks": [s for i, (_, s) in enumerate(proposals) if i != best],
        }
        return candidate, seq, record


def replayed_asks(info: dict[str, Any]) -> list[int]:
    """The positions of the asks a trial's pre-screen made and did not train."""
    record = info.get("prescreen")
    if not isinstance(record, dict):
        return []
    asks = record.get("asks", [])
    return [int(s) for s in asks if isinstance(s, int) and not isinstance(s, bool)]
