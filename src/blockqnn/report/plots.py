"""The report's plots, drawn with matplotlib's Agg renderer into base64 PNG data URIs.

Owns: the learning curve, the comparison against a baseline run, and accuracy against FLOPs
(or, for spaces without FLOPs, a histogram of accuracies). Each plot has a `*_figure`
function returning the `Figure` (which tests inspect) and a function returning its data URI.
Uses `matplotlib.figure.Figure` directly, never pyplot: no global figure state, no GUI
backend, safe to call from any thread. Must not read the store or write files. The shared
pieces (`figure`, `png`, `legend`, `title_above_labels`, the colours) are public: the
latency section's plot (`report.latency`) is drawn with them.

What is drawn (see `report.data` for why reused trials are not averaged): every scored
trial as a point; the mean of each epsilon stage (strategies that report an epsilon only)
and a rolling mean of the last k trained trials, k = `data.rolling_size(n)` = a tenth of the
n trained trials, at least 5, both over trained trials only.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from blockqnn.report.data import (
    RunSummary,
    Stage,
    rolling,
    rolling_means,
    rolling_size,
    trained_rewards,
    window_means,
)
from blockqnn.store.db import COMPLETE, FAILED

DPI = 110  # pixels per inch of the PNGs: sharp on ordinary screens, ~50-100 kB per plot
SIZE = (9.0, 4.2)  # inches: fills a 1000 px column
_BLUE, ORANGE, _RED, GREY = "#1f77b4", "#ff7f0e", "#d62728", "#9a9a9a"
_GREEN = "#2ca02c"
STAGE_LABEL = "mean per epsilon stage (trained trials)"  # legend entries tests look for
ROLLING_LABEL = "rolling mean of the last {k} trained"


def figure() -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=SIZE, dpi=DPI, layout="constrained")
    return fig, fig.add_subplot()


def png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def stage_text(stage: Stage) -> str:
    """A stage's label on the plots: its epsilon and, if any, how many trials were reused."""
    return f"ε={stage.epsilon:g}" + (f" (+{stage.reused} reused)" if stage.reused else "")


def learning_curve_figure(run: RunSummary) -> Any:
    """Reward of every scored trial in ask order, the mean per epsilon stage (if the strategy
    reports an epsilon) and a rolling mean over the trained trials; failed trials marked."""
    fig, ax = figure()
    stages = run.stages
    for i, stage in enumerate(stages):
        if i % 2:  # shade every other stage so the boundaries read at a glance
            ax.axvspan(stage.first - 0.5, stage.last + 0.5, color="#f2f2f2", zorder=0)
    _trial_points(ax, run)
    _stage_means(ax, stages)
    size = rolling_size(len(run.trained))
    trend = rolling_means(run.trained, size)
    if trend:
        ax.plot(
            [i for i, _ in trend],
            [m for _, m in trend],
            color=_GREEN,
            linewidth=1.8,
            label=ROLLING_LABEL.format(k=size),
            zorder=5,
        )
    failed = [t for t in run.trained if t.status == FAILED]
    label = f"failed (reward {_reward([t.reward for t in failed])}, drawn at the bottom)"
    _bottom_edge(ax, [t.id for t in failed], "x", _RED, label)
    copies, copied = run.reused.points(failure=True)
    _bottom_edge(
        ax,
        copies,
        "x",
        GREY,
        f"reused copy of a failure (reward {_reward(copied)}, at the bottom, in no mean)",
    )
    # last: the x range is final once every point is drawn
    _label_stages(ax, [(stage_text(stage), stage.first, stage.last + 1) for stage in stages])
    ax.set_xlabel("trial (ask order)")
    ax.set_ylabel("reward")
    title_above_labels(fig, ax, f"reward of every trial ({run.agent}, {run.space} space)")
    ax.grid(alpha=0.3)
    legend(ax)
    return fig


def _trial_points(ax: Any, run: RunSummary) -> None:
    """Every trained trial as a point; reused ones hollow, at the reward they reuse."""
    complete = [t for t in run.trained if t.status == COMPLETE]
    reused, rewards = run.reused.points(failure=False)
    ax.scatter(
        [t.id for t in complete],
        [t.reward for t in complete],
        s=12,
        color=_BLUE,
        alpha=0.6,
        label="trained",
        zorder=2,
    )
    if len(reused):
        # At the reward they reuse, hollow: visibly there, visibly not a new measurement.
        ax.scatter(
            reused,
            rewards,
            s=16,
            facecolors="none",
            edgecolors=GREY,
            label="reused (seen before; not in the means)",
            zorder=2,
        )


def _stage_means(ax: Any, stages: Sequence[Stage]) -> None:
    """Each epsilon stage's mean reward as a thick segment across the stage."""
    shown = False
    for stage in stages:
        if stage.mean is None:  # only reused trials: nothing trained to average
            continue
        ax.hlines(
            stage.mean,
            stage.first - 0.5,
            stage.last + 0.5,
            color=ORANGE,
            linewidth=2.5,
            label=None if shown else STAGE_LABEL,
            zorder=4,
        )
        shown = True


def learning_curve(run: RunSummary) -> str:
    return png(learning_curve_figure(run))


def _reward(rewards: Sequence[float | None] | np.ndarray) -> str:
    """The first of the rewards (failures are all told the same), or '-'."""
    return f"{float(rewards[0]):g}" if len(rewards) and rewards[0] is not None else "-"


def _bottom_edge(
    ax: Any, ids: Sequence[int] | np.ndarray, marker: str, color: str, label: str
) -> None:
    """Failures are told a constant reward (0) far below the others: drawn on the bottom
    edge so they do not squash the scale of the curve. The means still include the trained
    ones."""
    if not len(ids):
        return
    ax.scatter(
        ids,
        [0.015] * len(ids),
        s=30,
        marker=marker,
        color=color,
        transform=ax.get_xaxis_transform(),
        label=label,
        zorder=3,
        clip_on=False,
    )


def legend(ax: Any) -> None:
    """Below the plot, where it hides no data whatever the curve does."""
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, fontsize=8, frameon=False)


LABEL_GAP = 0.015  # of the x range, ~13 px of a 9-inch plot: a 7-pt label turned upright


def _label_stages(ax: Any, labels: Sequence[tuple[str, float, float]]) -> None:
    """Write each stage's label (text, start, end) at the top of its span, upright, left to
    right, leaving out a label whose centre is closer than `LABEL_GAP` of the axis to the
    last one written: narrow neighbouring stages would print on top of each other (the
    paper's shortest stages are 4% of the budget; small runs have stages of one trial). The
    gap is measured on the axis's final range, which a baseline run may make longer."""
    low, high = ax.get_xlim()
    gap = LABEL_GAP * (high - low)
    last = -math.inf
    for text, start, end in labels:
        centre = (start + end) / 2
        if centre - last < gap:
            continue
        last = centre
        ax.text(
            centre,
            1.01,  # above the plot area: a label inside it covered the best points
            text,
            transform=ax.get_xaxis_transform(),
            rotation=90,
            ha="center",
            va="bottom",
            fontsize=7,
            color="#a04000",
            clip_on=False,
        )


def title_above_labels(fig: Any, ax: Any, title: str) -> None:
    """The axes' title, raised above any labels written over the plot area (the epsilon
    stages'): at its usual place the title and the labels were drawn over each other."""
    pad = 6.0  # points: matplotlib's default title pad
    if ax.texts:
        fig.draw_without_rendering()  # lays the figure out: the labels' extents are final
        top = max(t.get_window_extent().y1 for t in ax.texts)
        above = top - ax.get_window_extent().y1  # pixels the labels reach over the axes
        pad += max(0.0, above) * 72 / fig.dpi
    ax.set_title(title, pad=pad)


def _stage_bounds(stages: Sequence[Stage]) -> list[tuple[Stage, int, int]]:
    """(stage, start, end) of each epsilon stage as positions in the trained sequence."""
    bounds: list[tuple[Stage, int, int]] = []
    start = 0
    for stage in stages:
        bounds.append((stage, start, start + stage.trained))
        start += stage.trained
    return bounds


def comparison_figure(run: RunSummary, baseline: RunSummary) -> Any:
    """Both runs' rewards against the number of candidates trained (the budget spent): the
    mean per iteration of `iteration_size` trained candidates, a rolling mean, and, when
    `run`'s strategy reports an epsilon, the mean per stage of `run` with the baseline
    averaged over the same positions. Either run may lack an epsilon."""
    fig, ax = figure()
    size = run.iteration_size
    k = rolling_size(max(len(run.trained), len(baseline.trained)))
    for name, trials, color in (
        (f"{run.agent} (this run)", run.trained, _BLUE),
        (f"{baseline.agent} (baseline)", baseline.trained, GREY),
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
    _compared_stage_means(ax, run, baseline)
    ax.set_xlabel("candidates trained (reused duplicates not counted)")
    ax.set_ylabel("mean reward")
    title_above_labels(fig, ax, f"{run.agent} vs {baseline.agent} ({baseline.run_dir.name})")
    ax.grid(alpha=0.3)
    legend(ax)
    return fig


def _compared_stage_means(ax: Any, run: RunSummary, baseline: RunSummary) -> None:
    """The mean of each of `run`'s epsilon stages, and the baseline's over the same
    positions of its trained sequence; the stages shaded and labelled."""
    series = (
        (trained_rewards(run.trained), ORANGE, f"{run.agent} (this run)"),
        (trained_rewards(baseline.trained), "#555555", f"{baseline.agent} (baseline)"),
    )
    labels = []
    for i, (stage, start, end) in enumerate(_stage_bounds(run.stages)):
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
        labels.append((stage_text(stage), start + 0.5, end + 0.5))
    _label_stages(ax, labels)


def comparison(run: RunSummary, baseline: RunSummary) -> str:
    return png(comparison_figure(run, baseline))


def accuracy_vs_flops(run: RunSummary) -> str:
    """Validation accuracy against FLOPs (log scale) of every trained candidate, coloured by
    reward; the top candidates carry their rank."""
    fig, ax = figure()
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
    ax.set_xscale("log")
    ax.margins(y=0.1)  # room above the best points for their numbers
    _rank_labels(fig, ax, [(t.flops, t.accuracy or 0.0) for t in run.top if t.flops])
    ax.set_xlabel("FLOPs per image (forward, search-time network)")
    ax.set_ylabel("validation accuracy")
    ax.set_title("accuracy against cost (numbers: rank by reward)")
    ax.grid(alpha=0.3, which="both")
    return png(fig)


# Where a rank's number may go around its point, in points (x right, y up), nearest first.
_OFFSETS = [(4, 3), (4, -11), (-11, 3), (-11, -11), (4, 12), (-11, 12), (10, -4), (-17, -4)]
_OFFSETS += [(4, 21), (4, -20), (-11, 21), (-11, -20), (16, 8), (-23, 8), (16, -14), (-23, -14)]


def _rank_labels(fig: Any, ax: Any, points: Sequence[tuple[float, float]]) -> None:
    """Number the points 1, 2, ... where no two numbers overlap: each takes the first place
    around its point (`_OFFSETS`) whose box is clear of the numbers placed so far, in
    display pixels; a number with no clear place goes to the least crowded one, joined to
    its point by a thin line. A greedy placement written here (matplotlib has none; the
    adjustText package would be a dependency for ten labels)."""
    fig.draw_without_rendering()  # lays the figure out: data -> pixel transforms are final
    scale = fig.dpi / 72  # pixels per point
    placed: list[tuple[float, float, float, float]] = []

    def overlap(box: tuple[float, float, float, float]) -> float:
        x0, y0, x1, y1 = box
        return sum(
            max(0.0, min(x1, b[2]) - max(x0, b[0])) * max(0.0, min(y1, b[3]) - max(y0, b[1]))
            for b in placed
        )

    for rank, (x, y) in enumerate(points, start=1):
        px, py = ax.transData.transform((x, y))
        width, height = (5.0 * len(str(rank)) + 1) * scale, 8.0 * scale  # 8-pt digits
        best: tuple[float, tuple[int, int], tuple[float, float, float, float]] | None = None
        for dx, dy in _OFFSETS:
            x0, y0 = px + dx * scale, py + dy * scale
            box = (x0, y0, x0 + width, y0 + height)
            crowd = overlap(box)
            if best is None or crowd < best[0]:
                best = (crowd, (dx, dy), box)
            if crowd == 0:
                break
        assert best is not None
        crowd, offset, box = best
        placed.append(box)
        far = abs(offset[0]) > 11 or abs(offset[1]) > 12
        ax.annotate(
            str(rank),
            (x, y),
            textcoords="offset points",
            xytext=offset,
            fontsize=8,
            va="bottom",
            ha="left",
            arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "#555555"} if far else None,
        )


def accuracy_histogram(run: RunSummary) -> str:
    """How the accuracies of the complete trials are distributed, with the best one marked:
    the cost plot's stand-in for spaces whose evaluations measure no FLOPs."""
    fig, ax = figure()
    values = [float(t.accuracy) for t in run.complete if t.accuracy is not None]
    ax.hist(values, bins=min(40, max(5, len(values) // 4)), color=_BLUE, alpha=0.8)
    if run.top and run.top[0].accuracy is not None:
        best = float(run.top[0].accuracy)
        ax.axvline(best, color=ORANGE, linewidth=2, label=f"best by reward ({best:.4f})")
        legend(ax)
    ax.set_xlabel("accuracy")
    ax.set_ylabel(f"complete trials (n = {len(values)})")
    ax.set_title(f"accuracy of every complete trial ({run.space} space)")
    ax.grid(alpha=0.3)
    return png(fig)
