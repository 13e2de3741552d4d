"""The report's accuracy-latency section: every block with a measured latency, the
non-dominated front marked, and the front's blocks listed.

Owns: `latency_figure` / `latency_plot` and `latency_section` (HTML). Shown only for runs
that measured a latency (`[reward] latency_device` or a latency reward). Must not read the
store: it gets a `RunSummary`.
"""

from __future__ import annotations

import html
from typing import Any

from blockqnn.final.pick import pareto_front, trial_latency
from blockqnn.report.data import RunSummary

FRONT_LABEL = "non-dominated front (faster or more accurate than every other)"


def has_latency(run: RunSummary) -> bool:
    return any(trial_latency(t) is not None for t in run.complete)


def latency_figure(run: RunSummary) -> Any:
    from blockqnn.report.plots import GREY, ORANGE, figure, legend

    fig, ax = figure()
    done = [t for t in run.complete if trial_latency(t) is not None and t.accuracy is not None]
    front = pareto_front(done)
    ax.scatter(
        [trial_latency(t) for t in done],
        [t.accuracy for t in done],
        color=GREY,
        s=16,
        edgecolors="none",
        label=f"complete {run.noun}s (n = {len(done)})",
    )
    ax.step(
        [trial_latency(t) for t in front],
        [t.accuracy for t in front],
        where="post",
        color=ORANGE,
        marker="o",
        markersize=6,
        label=FRONT_LABEL,
    )
    for rank, t in enumerate(front, start=1):
        ax.annotate(
            str(rank),
            (trial_latency(t), t.accuracy or 0.0),
            textcoords="offset points",
            xytext=(4, 3),
            fontsize=8,
        )
    ax.set_xscale("log")
    ax.set_xlabel(f"latency, ms (batch 1, {_runtime(run)}, deployment-size network)")
    ax.set_ylabel("validation accuracy")
    ax.set_title("accuracy against measured latency (numbers: the front, fastest first)")
    ax.grid(alpha=0.3, which="both")
    legend(ax)
    return fig


def latency_plot(run: RunSummary) -> str:
    from blockqnn.report.plots import png

    return png(latency_figure(run))


def _runtime(run: RunSummary) -> str:
    from blockqnn.evaluate.latency import settings_of

    settings = settings_of(run.config)
    return settings.runtime if settings is not None else "?"


def latency_section(run: RunSummary, uri: str) -> str:
    """The section's HTML: the plot and the front's blocks, fastest first."""
    e = html.escape
    front = pareto_front(run.complete)
    network = run.config.network
    r = run.config.reward
    filters = r.latency_filters or network.filters
    blocks = r.latency_blocks_per_stage or network.blocks_per_stage
    rows = "\n".join(
        f'<tr class="front-block"><td class="num">{i}</td>'
        f'<td class="num">{trial_latency(t):.3f}</td>'
        f'<td class="num">{(t.accuracy or 0.0):.4f}</td>'
        f'<td class="num">{(t.reward or 0.0):.4f}</td>'
        f"<td><code>{e(t.candidate)}</code><br>"
        f'<span class="muted">hash <code>{e(t.hash)}</code>, trial {t.id}</span></td></tr>'
        for i, t in enumerate(front, start=1)
    )
    return f"""<section id="accuracy-latency">
<h2>Accuracy against latency</h2>
<p>Measured inference latency (median of repeated passes at batch 1, {e(_runtime(run))}) of
each {e(run.noun)}'s deployment-size network (F = {filters}, N = {blocks}) against its
validation accuracy. The front holds the {e(run.noun)}s that no other beats on both; train
one with <code>blockqnn train RUN --pick pareto:K</code> or
<code>--max-latency-ms MS</code>.</p>
<img class="plot" src="{uri}" alt="validation accuracy against latency, front marked">
<table class="front">
<tr><th>front</th><th>latency ms</th><th>accuracy</th><th>reward</th><th>{e(run.noun)}
and hash</th></tr>
{rows}
</table>
</section>
"""
