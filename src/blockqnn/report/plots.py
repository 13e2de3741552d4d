"""The report's plots, drawn with matplotlib's Agg renderer into base64 PNG data URIs.

Owns: the learning curve, the comparison against a baseline run and accuracy against FLOPs.
Uses `matplotlib.figure.Figure` directly, never pyplot: no global figure state, no GUI
backend, safe to call from any thread. Must not read the store or write files.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

from blockqnn.report.data import RunSummary, stage_means, window_means
from blockqnn.store import COMPLETE, FAILED, REUSED, TrialRecord

DPI = 110  # pixels per inch of the PNGs: sharp on ordinary screens, ~50-100 kB per plot
SIZE = (9.0, 4.2)  # inches: fills a 1000 px column
_BLUE, _ORANGE, _RED, _GREY = "#1f77b4", "#ff7f0e", "#d62728", "#9a9a9a"


def _figure() -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=SIZE, dpi=DPI, layout="constrained")
    return fig, fig.add_subplot()


def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def learning_curve(run: RunSummary) -> str:
    """Reward of every scored trial in ask order, the mean per epsilon stage over it, and
    failed trials marked: the paper's learning curve."""
    fig, ax = _figure()
    scored = run.scored
    by_status: dict[str, list[TrialRecord]] = {COMPLETE: [], REUSED: [], FAILED: []}
    for t in scored:
        by_status[t.status].append(t)
    stages = stage_means(scored)
    for i, stage in enumerate(stages):
        if i % 2:  # shade every other stage so the boundaries read at a glance
            ax.axvspan(stage.first - 0.5, stage.last + 0.5, color="#f2f2f2", zorder=0)
    ax.scatter(
        [t.id for t in by_status[COMPLETE]],
        [t.reward for t in by_status[COMPLETE]],
        s=12,
        color=_BLUE,
        alpha=0.6,
        label="trained",
        zorder=2,
    )
    if by_status[REUSED]:
        ax.scatter(
            [t.id for t in by_status[REUSED]],
            [t.reward for t in by_status[REUSED]],
            s=14,
            facecolors="none",
            edgecolors=_GREY,
            label="reused (seen before)",
            zorder=2,
        )
    for i, stage in enumerate(stages):
        ax.hlines(
            stage.mean,
            stage.first - 0.5,
            stage.last + 0.5,
            color=_ORANGE,
            linewidth=2.5,
            label="mean per epsilon stage" if i == 0 else None,
            zorder=4,
        )
        _label_stage(ax, stage.epsilon, stage.first, stage.last + 1, run.trials[-1].id)
    if by_status[FAILED]:
        # Failed trials are told a constant reward (0) far below the others: drawn on the
        # bottom edge so they do not squash the scale of the curve; the means include them.
        ax.scatter(
            [t.id for t in by_status[FAILED]],
            [0.015] * len(by_status[FAILED]),
            s=30,
            marker="x",
            color=_RED,
            transform=ax.get_xaxis_transform(),
            label=f"failed (reward {by_status[FAILED][0].reward:g}, drawn at the bottom)",
            zorder=3,
            clip_on=False,
        )
    ax.set_xlabel("trial (ask order)")
    ax.set_ylabel("reward")
    ax.set_title(f"reward of every trial ({run.agent})")
    ax.grid(alpha=0.3)
    _legend(ax)
    return _png(fig)


def _legend(ax: Any) -> None:
    """Below the plot, where it hides no data whatever the curve does."""
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, fontsize=8, frameon=False)


def _label_stage(ax: Any, epsilon: float, start: float, end: float, total: float) -> None:
    """Write a stage's epsilon at the top of its span, vertically, if the span is wide
    enough for the text not to run into its neighbours (the paper's shortest stages are 4%
    of the budget)."""
    if end - start < 0.015 * total:
        return
    ax.text(
        (start + end) / 2,
        0.98,
        f"ε={epsilon:g}",
        transform=ax.get_xaxis_transform(),
        rotation=90,
        ha="center",
        va="top",
        fontsize=7,
        color="#a04000",
    )


def _stage_bounds(trials: Sequence[TrialRecord]) -> list[tuple[float, int, int]]:
    """(epsilon, start, end) of each epsilon stage as positions in the scored sequence."""
    bounds: list[tuple[float, int, int]] = []
    start = 0
    for stage in stage_means(trials):
        bounds.append((stage.epsilon, start, start + stage.count))
        start += stage.count
    return bounds


def comparison(run: RunSummary, baseline: RunSummary) -> str:
    """Mean reward per iteration of `iteration_size` blocks for both runs, and per epsilon
    stage of `run` (the baseline averaged over the same block positions)."""
    fig, ax = _figure()
    size = run.config.agent.iteration_size
    mine, theirs = run.scored, baseline.scored
    for name, trials, color in (
        (f"{run.agent} (this run)", mine, _BLUE),
        (f"{baseline.agent} (baseline)", theirs, _GREY),
    ):
        windows = window_means(trials, size)
        n = len([t for t in trials if t.reward is not None])
        centers = [min((w - 0.5) * size, n) for w, _ in windows]
        ax.plot(
            centers,
            [m for _, m in windows],
            marker="o",
            markersize=4,
            linewidth=1,
            color=color,
            alpha=0.8,
            label=f"{name}: mean per {size} blocks",
        )
    series = (
        ([float(t.reward or 0.0) for t in mine], _ORANGE, f"{run.agent} (this run)"),
        ([float(t.reward or 0.0) for t in theirs], "#555555", f"{baseline.agent} (baseline)"),
    )
    for i, (eps, start, end) in enumerate(_stage_bounds(mine)):
        for rewards, color, name in series:
            values = rewards[start:end]
            if not values:
                continue
            ax.hlines(
                sum(values) / len(values),
                start + 0.5,
                start + len(values) + 0.5,
                color=color,
                linewidth=2.5,
                label=f"{name}: mean per epsilon stage" if i == 0 else None,
            )
        if i % 2:
            ax.axvspan(start + 0.5, end + 0.5, color="#f2f2f2", zorder=0)
        _label_stage(ax, eps, start + 0.5, end + 0.5, len(mine))
    ax.set_xlabel("blocks sampled")
    ax.set_ylabel("mean reward")
    ax.set_title(f"{run.agent} vs {baseline.agent} ({baseline.run_dir.name})")
    ax.grid(alpha=0.3)
    _legend(ax)
    return _png(fig)


def accuracy_vs_flops(run: RunSummary) -> str:
    """Validation accuracy against FLOPs (log scale) of every trained block, coloured by
    reward; the top blocks carry their rank."""
    fig, ax = _figure()
    done = [t for t in run.complete if t.flops and t.accuracy is not None]
    points = ax.scatter(
        [t.flops for t in done],
        [t.accuracy for t in done],
        c=[t.reward for t in done],
        cmap="viridis",
        s=18,
        edgecolors="none",
    )
    fig.colorbar(points, ax=ax, label="reward")
    for rank, t in enumerate(run.top, start=1):
        if t.flops:
            ax.annotate(
                str(rank),
                (t.flops, t.accuracy or 0.0),
                textcoords="offset points",
                xytext=(4, 3),
                fontsize=8,
            )
    ax.set_xscale("log")
    ax.set_xlabel("FLOPs per image (forward, search-time network)")
    ax.set_ylabel("validation accuracy")
    ax.set_title("accuracy against cost (numbers: rank by reward)")
    ax.grid(alpha=0.3, which="both")
    return _png(fig)
