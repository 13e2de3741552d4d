"""The report's plots, drawn with matplotlib's Agg renderer into base64 PNG data URIs.

Owns: the learning curve, the comparison against a baseline run, and accuracy against FLOPs
(or, for spaces without FLOPs, a histogram of accuracies). Each plot has a `*_figure`
function returning the `Figure` (which tests inspect) and a function returning its data URI.
Uses `matplotlib.figure.Figure` directly, never pyplot: no global figure state, no GUI
backend, safe to call from any thread. Must not read the store or write files.

What is drawn (see `report.data` for why reused trials are not averaged): every scored
trial as a point; the mean of each epsilon stage (strategies that report an epsilon only)
and a rolling mean of the last k trained trials, k = `data.rolling_size(n)` = a tenth of the
n trained trials, at least 5, both over trained trials only.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

from blockqnn.report.data import (
    RunSummary,
    Stage,
    rolling,
    rolling_means,
    rolling_size,
    stage_means,
    trained_rewards,
    window_means,
)
from blockqnn.store import COMPLETE, FAILED, REUSED, TrialRecord

DPI = 110  # pixels per inch of the PNGs: sharp on ordinary screens, ~50-100 kB per plot
SIZE = (9.0, 4.2)  # inches: fills a 1000 px column
_BLUE, _ORANGE, _RED, _GREY = "#1f77b4", "#ff7f0e", "#d62728", "#9a9a9a"
_GREEN = "#2ca02c"
STAGE_LABEL = "mean per epsilon stage (trained trials)"  # legend entries tests look for
ROLLING_LABEL = "rolling mean of the last {k} trained"


def _figure() -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=SIZE, dpi=DPI, layout="constrained")
    return fig, fig.add_subplot()


def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _reused_failure(t: TrialRecord) -> bool:
    """A reused copy of a failed evaluation (its stored result failed)."""
    return t.result is not None and t.result.get("status") != "ok"


def stage_text(stage: Stage) -> str:
    """A stage's label on the plots: its epsilon and, if any, how many trials were reused."""
    return f"ε={stage.epsilon:g}" + (f" (+{stage.reused} reused)" if stage.reused else "")


def learning_curve_figure(run: RunSummary) -> Any:
    """Reward of every scored trial in ask order, the mean per epsilon stage (if the strategy
    reports an epsilon) and a rolling mean over the trained trials; failed trials marked.
    Long on purpose: one figure's matplotlib calls, layer by layer."""
    fig, ax = _figure()
    scored = run.scored
    complete = [t for t in scored if t.status == COMPLETE]
    failed = [t for t in scored if t.status == FAILED]
    reused = [t for t in scored if t.status == REUSED and not _reused_failure(t)]
    reused_failed = [t for t in scored if t.status == REUSED and _reused_failure(t)]
    stages = stage_means(scored)
    last_id = run.trials[-1].id
    for i, stage in enumerate(stages):
        if i % 2:  # shade every other stage so the boundaries read at a glance
            ax.axvspan(stage.first - 0.5, stage.last + 0.5, color="#f2f2f2", zorder=0)
    ax.scatter(
        [t.id for t in complete],
        [t.reward for t in complete],
        s=12,
        color=_BLUE,
        alpha=0.6,
        label="trained",
        zorder=2,
    )
    if reused:
        # At the reward they reuse, hollow: visibly there, visibly not a new measurement.
        ax.scatter(
            [t.id for t in reused],
            [t.reward for t in reused],
            s=16,
            facecolors="none",
            edgecolors=_GREY,
            label="reused (seen before; not in the means)",
            zorder=2,
        )
    shown = False
    for stage in stages:
        if stage.mean is None:  # only reused trials: nothing trained to average
            continue
        ax.hlines(
            stage.mean,
            stage.first - 0.5,
            stage.last + 0.5,
            color=_ORANGE,
            linewidth=2.5,
            label=None if shown else STAGE_LABEL,
            zorder=4,
        )
        shown = True
    for stage in stages:
        _label_stage(ax, stage_text(stage), stage.first, stage.last + 1, last_id)
    size = rolling_size(len(run.trained))
    trend = rolling_means(scored, size)
    if trend:
        ax.plot(
            [i for i, _ in trend],
            [m for _, m in trend],
            color=_GREEN,
            linewidth=1.8,
            label=ROLLING_LABEL.format(k=size),
            zorder=5,
        )
    _bottom_edge(ax, failed, "x", _RED, f"failed (reward {_reward(failed)}, drawn at the bottom)")
    _bottom_edge(ax, reused_failed, "x", _GREY, f"reused failure (reward {_reward(reused_failed)})")
    ax.set_xlabel("trial (ask order)")
    ax.set_ylabel("reward")
    ax.set_title(f"reward of every trial ({run.agent}, {run.space} space)")
    ax.grid(alpha=0.3)
    _legend(ax)
    return fig


def learning_curve(run: RunSummary) -> str:
    return _png(learning_curve_figure(run))


def _reward(trials: Sequence[TrialRecord]) -> str:
    return f"{trials[0].reward:g}" if trials and trials[0].reward is not None else "-"


def _bottom_edge(
    ax: Any, trials: Sequence[TrialRecord], marker: str, color: str, label: str
) -> None:
    """Failures are told a constant reward (0) far below the others: drawn on the bottom
    edge so they do not squash the scale of the curve. The means still include the trained
    ones."""
    if not trials:
        return
    ax.scatter(
        [t.id for t in trials],
        [0.015] * len(trials),
        s=30,
        marker=marker,
        color=color,
        transform=ax.get_xaxis_transform(),
        label=label,
        zorder=3,
        clip_on=False,
    )


def _legend(ax: Any) -> None:
    """Below the plot, where it hides no data whatever the curve does."""
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, fontsize=8, frameon=False)


def _label_stage(ax: Any, text: str, start: float, end: float, total: float) -> None:
    """Write a stage's label at the top of its span, vertically, if the span is wide enough
    for the text not to run into its neighbours (the paper's shortest stages are 4% of the
    budget)."""
    if end - start < 0.015 * total:
        return
    ax.text(
        (start + end) / 2,
        0.98,
        text,
        transform=ax.get_xaxis_transform(),
        rotation=90,
        ha="center",
        va="top",
        fontsize=7,
        color="#a04000",
    )


def _stage_bounds(trials: Sequence[TrialRecord]) -> list[tuple[Stage, int, int]]:
    """(stage, start, end) of each epsilon stage as positions in the trained sequence."""
    bounds: list[tuple[Stage, int, int]] = []
    start = 0
    for stage in stage_means(trials):
        bounds.append((stage, start, start + stage.trained))
        start += stage.trained
    return bounds


def comparison_figure(run: RunSummary, baseline: RunSummary) -> Any:
    """Both runs' rewards against the number of candidates trained (the budget spent): the
    mean per iteration of `iteration_size` trained candidates, a rolling mean, and, when
    `run`'s strategy reports an epsilon, the mean per stage of `run` with the baseline
    averaged over the same positions. Either run may lack an epsilon. Long on purpose: one
    figure's matplotlib calls, layer by layer."""
    fig, ax = _figure()
    size = run.iteration_size
    mine, theirs = run.scored, baseline.scored
    k = rolling_size(max(len(run.trained), len(baseline.trained)))
    for name, trials, color in (
        (f"{run.agent} (this run)", mine, _BLUE),
        (f"{baseline.agent} (baseline)", theirs, _GREY),
    ):
        windows = window_means(trials, size)
        n = len(trained_rewards(trials))
        centers = [min((w - 0.5) * size, n) for w, _ in windows]
        ax.plot(
            centers,
            [m for _, m in windows],
            marker="o",
            markersize=4,
            linestyle="none",
            color=color,
            alpha=0.8,
            label=f"{name}: mean per {size} trained",
        )
        means = rolling(trained_rewards(trials), k)
        if means:
            ax.plot(
                range(k, k + len(means)),
                means,
                color=color,
                linewidth=1.5,
                label=f"{name}: {ROLLING_LABEL.format(k=k)}",
            )
    series = (
        (trained_rewards(mine), _ORANGE, f"{run.agent} (this run)"),
        (trained_rewards(theirs), "#555555", f"{baseline.agent} (baseline)"),
    )
    bounds = _stage_bounds(mine)
    for i, (stage, start, end) in enumerate(bounds):
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
        _label_stage(ax, stage_text(stage), start + 0.5, end + 0.5, len(series[0][0]))
    ax.set_xlabel("candidates trained (reused duplicates not counted)")
    ax.set_ylabel("mean reward")
    ax.set_title(f"{run.agent} vs {baseline.agent} ({baseline.run_dir.name})")
    ax.grid(alpha=0.3)
    _legend(ax)
    return fig


def comparison(run: RunSummary, baseline: RunSummary) -> str:
    return _png(comparison_figure(run, baseline))


def accuracy_vs_flops(run: RunSummary) -> str:
    """Validation accuracy against FLOPs (log scale) of every trained candidate, coloured by
    reward; the top candidates carry their rank."""
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


def accuracy_histogram(run: RunSummary) -> str:
    """How the accuracies of the complete trials are distributed, with the best one marked:
    the cost plot's stand-in for spaces whose evaluations measure no FLOPs."""
    fig, ax = _figure()
    values = [float(t.accuracy) for t in run.complete if t.accuracy is not None]
    ax.hist(values, bins=min(40, max(5, len(values) // 4)), color=_BLUE, alpha=0.8)
    if run.top and run.top[0].accuracy is not None:
        best = float(run.top[0].accuracy)
        ax.axvline(best, color=_ORANGE, linewidth=2, label=f"best by reward ({best:.4f})")
        _legend(ax)
    ax.set_xlabel("accuracy")
    ax.set_ylabel(f"complete trials (n = {len(values)})")
    ax.set_title(f"accuracy of every complete trial ({run.space} space)")
    ax.grid(alpha=0.3)
    return _png(fig)
