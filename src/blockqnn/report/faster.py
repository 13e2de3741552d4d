"""What early termination and the pre-screen did in a run: for `status`, `report`, benchmarks.

Owns: `spearman` (scipy's when installed, else a numpy rank implementation with average ranks
for ties), `rank_interval` (a 95% interval by Fisher's z with the Fieller et al. variance
for Spearman's rho) and `faster_summary` (stopped trials, training seconds spent and saved,
the rank correlations of the partial accuracy and of the zero-cost score with the full
early-stop reward). Must not write or import torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from blockqnn.store.db import COMPLETE, TrialRecord

Z95 = 1.959964  # the standard normal's 97.5% quantile


def _ranks(values: Sequence[float]) -> np.ndarray:
    """Ranks 1..n, ties given their average rank."""
    a = np.asarray(values, dtype=float)
    order = np.argsort(a, kind="mergesort")
    ranks = np.empty(len(a))
    ranks[order] = np.arange(1, len(a) + 1)
    for value in np.unique(a):
        tied = a == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rank correlation; None with fewer than 3 pairs or a constant side."""
    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return None
    try:
        from scipy.stats import spearmanr  # type: ignore[import-untyped, unused-ignore]
    except ImportError:
        rx, ry = _ranks(x), _ranks(y)
        return float(np.corrcoef(rx, ry)[0, 1])
    return float(spearmanr(x, y).statistic)


def rank_interval(rho: float, n: int) -> tuple[float, float] | None:
    """A 95% interval for Spearman's rho of `n` pairs (None below 5 pairs)."""
    if n < 5:
        return None
    z = math.atanh(max(-0.999999, min(0.999999, rho)))
    half = Z95 * math.sqrt(1.06 / (n - 3))
    return math.tanh(z - half), math.tanh(z + half)


def correlation(x: Sequence[float], y: Sequence[float]) -> dict[str, Any] | None:
    """{"rho", "n", "low", "high"} of the pairs, or None when undefined."""
    rho = spearman(x, y)
    if rho is None:
        return None
    interval = rank_interval(rho, len(x))
    low, high = interval if interval is not None else (None, None)
    return {"rho": rho, "n": len(x), "low": low, "high": high}


def _metrics(t: TrialRecord) -> dict[str, Any]:
    return dict((t.result or {}).get("metrics") or {})


def faster_summary(trials: Sequence[TrialRecord]) -> dict[str, Any] | None:
    """Early termination and pre-screen figures over the trained trials; None when the run
    used neither."""
    trained = [t for t in trials if t.trained and t.result is not None]
    stopped = [t for t in trained if "stopped_at" in _metrics(t)]
    full = [t for t in trained if t.status == COMPLETE and "stopped_at" not in _metrics(t)]
    screened = [t.info["prescreen"] for t in trained if isinstance(t.info.get("prescreen"), dict)]
    partial = [t for t in full if "partial_accuracy" in _metrics(t)]
    if not partial and not screened:
        return None
    out: dict[str, Any] = {
        "stopped": len(stopped),
        "train_seconds": sum(t.train_seconds or 0.0 for t in trained),  # cache hits: none
        "saved_seconds": sum(float(_metrics(t).get("saved_seconds", 0.0)) for t in stopped),
        "partial_vs_reward": correlation(
            [_metrics(t)["partial_accuracy"] for t in partial], [t.reward or 0.0 for t in partial]
        ),
    }
    if screened:
        scored = [
            (t.info["prescreen"]["score"], t.reward or 0.0)
            for t in full
            if isinstance(t.info.get("prescreen"), dict)
            and t.info["prescreen"].get("score") is not None
        ]
        proposals = sum(int(p.get("screened", 0)) for p in screened)
        out["prescreen"] = {
            "score": screened[-1].get("score_name"),
            "proposals": proposals,
            "seconds_per_proposal": sum(float(p.get("seconds", 0.0)) for p in screened)
            / max(proposals, 1),
            "score_vs_reward": correlation([s for s, _ in scored], [r for _, r in scored]),
        }
    return out


def faster_text(summary: dict[str, Any]) -> str:
    """One line for `status` and the report."""
    parts = [
        f"{summary['stopped']} stopped early, {summary['saved_seconds']:.1f} training s saved "
        f"of {summary['train_seconds']:.1f} spent"
    ]
    if summary["partial_vs_reward"] is not None:
        parts.append("partial vs full " + _rho_text(summary["partial_vs_reward"]))
    screen = summary.get("prescreen")
    if screen is not None:
        parts.append(
            f"pre-screen by {screen['score']}: {screen['proposals']} proposals, "
            f"{screen['seconds_per_proposal'] * 1000:.1f} ms each"
        )
        if screen["score_vs_reward"] is not None:
            parts.append(f"{screen['score']} vs reward " + _rho_text(screen["score_vs_reward"]))
    return "; ".join(parts)


def _rho_text(c: dict[str, Any]) -> str:
    interval = "" if c["low"] is None else f" [{c['low']:.2f}, {c['high']:.2f}]"
    return f"Spearman {c['rho']:.2f}{interval} (n {c['n']})"
