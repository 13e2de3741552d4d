"""The report's HTML: one self-contained page (inline CSS, plots as data URIs, diagrams of
blocks and cells as inline SVG), so it opens anywhere with no network and no files beside it.

Owns: page layout, wording per space ("block" for NSC, "candidate" otherwise), escaping, the
config as TOML text and the environment description. Must not read the store (it gets
`RunSummary` values) or reference anything outside the page.
"""

from __future__ import annotations

import html
import importlib.metadata
import json
import os
import platform
import re
import time
from collections.abc import Iterable, Sequence
from typing import Any

from blockqnn.errors import BlockQNNError
from blockqnn.report.data import (
    RunSummary,
    Stage,
    count,
    duration,
    pending_text,
    rolling_size,
)
from blockqnn.report.faster import faster_summary, faster_text
from blockqnn.report.trials import final_accuracy
from blockqnn.store.db import TrialRecord
from blockqnn.train.threads import cpu_name

_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222;
       max-width: 1100px; margin: 24px auto; padding: 0 16px; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 18px; margin-top: 32px;
     border-bottom: 1px solid #ddd; padding-bottom: 4px; }
table { border-collapse: collapse; margin: 8px 0; }
/* a table wider than the screen (a phone) scrolls instead of widening the page */
.wide { overflow-x: auto; max-width: 100%; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f5f5f5; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
code, pre { font: 12px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
pre { background: #f7f7f7; border: 1px solid #e3e3e3; padding: 8px; overflow-x: auto; }
/* on a phone a plot keeps 640 px, two thirds of its size, and scrolls: shrunk to the
   screen its labels would be 4 px */
img.plot { width: 100%; min-width: 640px; max-width: 990px; height: auto; display: block;
           margin: 8px 0; }
/* Diagrams at Graphviz's own size (11-pt labels), each on a row of the table's width under
   its block: a block too wide for the screen (a phone) scrolls inside its box instead of
   being shrunk until its labels cannot be read. */
.diagram { max-width: min(1066px, calc(100vw - 50px)); max-height: 520px; overflow: auto; }
tr.top-diagram td { border-top: none; }
.diagram svg { display: block; }
.note { color: #777; font-style: italic; } .muted { color: #777; }
"""

# Graphviz's SVG starts with an XML prolog, a DOCTYPE and comments: invalid inside HTML.
_SVG_START = re.compile(r"<svg\b", re.IGNORECASE)
_SVG_ID = re.compile(r'\bid="([^"]*)"')


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: float | int | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def inline_svg(svg: str, prefix: str) -> str:
    """An SVG document as an element for an HTML page: prolog dropped, ids prefixed so that
    several diagrams on one page do not share ids."""
    match = _SVG_START.search(svg)
    if match is None:
        raise ValueError("not an SVG document")
    body = svg[match.start() :]
    return _SVG_ID.sub(lambda m: f'id="{prefix}{m.group(1)}"', body)


_SVG_SIZE = re.compile(r'(<svg\b[^>]*?\b(?:width|height)=")([0-9.]+)pt"')


def _points_as_pixels(svg: str) -> str:
    """Graphviz sizes its SVG in points (11-pt labels are 15 px): drawn 1 pt = 1 px, labels
    are 11 px, as readable as the table's text, and a block takes three quarters of the
    room. The viewBox keeps the drawing whole at the new size."""
    for _ in range(2):  # width and height
        svg = _SVG_SIZE.sub(lambda m: f'{m.group(1)}{m.group(2)}px"', svg, count=1)
    return svg


def candidate_diagram(trial: TrialRecord, space: str, prefix: str) -> str:
    """The candidate's Graphviz diagram as inline SVG (an NSC block or a NAS-Bench-201
    cell), or a note when Graphviz is missing or the space has no drawing."""
    from blockqnn.space.draw import block_svg, cell_svg

    try:
        if space == "nsc":
            svg = block_svg(trial.block)
        elif space == "nb201":
            from blockqnn.space.nb201 import Cell

            svg = cell_svg(Cell.parse(trial.candidate))
        else:
            return f'<span class="note">no diagram for the {_e(space)} space</span>'
    except BlockQNNError as exc:  # Graphviz's `dot` is not installed: say so, do not fail
        return f'<span class="note">no diagram: {_e(exc)}</span>'
    return f'<div class="diagram">{inline_svg(_points_as_pixels(svg), prefix)}</div>'


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON string escapes are valid TOML basic strings
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def config_toml(config: dict[str, dict[str, Any]]) -> str:
    """The resolved config as TOML that `Config.from_toml` reads back."""
    parts = []
    for section, values in config.items():
        lines = [f"[{section}]"] + [f"{k} = {_toml_value(v)}" for k, v in values.items()]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def environment() -> list[tuple[str, str]]:
    """Versions and hardware of the machine writing the report."""
    import torch

    from blockqnn import __version__

    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return [
        ("python", platform.python_version()),
        ("torch", torch.__version__),
        ("blockqnn", __version__),
        ("matplotlib", _version("matplotlib")),
        ("platform", platform.platform()),
        ("CPU", f"{cpu_name()} ({os.cpu_count()} logical cores)"),
        ("GPU", ", ".join(gpus) if gpus else "none"),
    ]


def _rows(pairs: Iterable[tuple[str, str]]) -> str:
    return "\n".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in pairs)


def _local_time(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(seconds))


def _final(trial: Any) -> str:
    """'final accuracy X, ' for a pick scored on a proxy whose final accuracy is recorded."""
    value = final_accuracy(trial)
    return "" if value is None else f"final accuracy {_num(value, '.4f')}, "


def header(run: RunSummary) -> str:
    c = run.counts
    cfg = run.config
    rate = run.evaluations_per_hour
    median = run.median_train_seconds
    best = run.top[0] if run.top else None
    created = run.meta.get("created")
    hosts = sorted({str(s.get("host", "")) for s in run.sessions if s.get("host")})
    dataset = cfg.data.dataset + (f" (table {cfg.data.table})" if cfg.data.table else "")
    pairs = [
        ("run dir", f"<code>{_e(run.run_dir.resolve())}</code>"),
        ("state", _e(run.state)),
        ("search space", _e(run.space)),
        ("strategy", _e(cfg.search.agent)),
        ("dataset", _e(dataset)),
        (
            "trials",
            f"{c['trained']} trained of a budget of {cfg.search.budget} "
            f"({c['complete']} complete, {c['failed']} failed); {c['reused']} reused; "
            + _e(pending_text(c, run.active)),
        ),
        ("elapsed", _e(duration(run.elapsed)) + " (search sessions, summed)"),
        ("evaluations per hour", _num(rate, ",.1f")),
        ("median training time", "-" if median is None else _e(duration(median))),
        ("strategy now", _e(info_text(run.info)) + " (its info at the latest ask)"),
        (
            f"best {run.noun}",
            "-"
            if best is None
            else f"reward {_num(best.reward, '.4f')}, accuracy {_num(best.accuracy, '.4f')}, "
            + _final(best)
            + f"<code>{_e(best.candidate)}</code>",
        ),
        *_faster_row(run),
        ("evaluated on", _e(", ".join(run.devices) or "-")),
        ("hosts", _e(", ".join(hosts) or "-")),
        ("started", "-" if created is None else _e(_local_time(float(created)))),
        ("report written", _e(_local_time(run.read_at))),
    ]
    return f'<div class="wide"><table class="summary">\n{_rows(pairs)}\n</table></div>'


def _faster_row(run: RunSummary) -> list[tuple[str, str]]:
    """Early termination and the pre-screen, when the run used them."""
    summary = faster_summary(run.evaluated)
    return [] if summary is None else [("faster search", _e(faster_text(summary)))]


def info_text(info: dict[str, Any]) -> str:
    """A strategy's info as text: 'epsilon 0.9, population 12', or '-' for none."""
    items = [f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in info.items()]
    return ", ".join(items) or "-"


_CANDIDATE_HEAD = {"nsc": "block (NSC)", "nb201": "cell (NAS-Bench-201)"}


def top_table(run: RunSummary) -> str:
    cost = run.has_cost  # spaces evaluated from a table report no FLOPs, params or density
    what = _CANDIDATE_HEAD.get(run.space, "candidate")
    head = (
        "<tr><th>rank</th><th>reward</th><th>accuracy</th>"
        + ("<th>FLOPs</th><th>params</th><th>density</th>" if cost else "")
        + f"<th>{_e(what)} and hash</th></tr>"
    )
    columns = 7 if cost else 4
    rows = []
    for rank, t in enumerate(run.top, start=1):
        costs = (
            f'<td class="num">{_num(t.flops, ",")}</td>'
            f'<td class="num">{_num(t.params, ",")}</td>'
            f'<td class="num">{_num(t.density, ".3f")}</td>'
            if cost
            else ""
        )
        rows.append(
            f'<tr class="top-block"><td class="num">{rank}</td>'
            f'<td class="num">{_num(t.reward, ".4f")}</td>'
            f'<td class="num">{_num(t.accuracy, ".4f")}</td>'
            f"{costs}"
            f"<td><code>{_e(t.candidate)}</code><br>"
            f'<span class="muted">hash <code>{_e(t.hash)}</code>, trial {t.id}</span></td></tr>'
            # its diagram on a row of its own, the table's whole width: in a column beside
            # the numbers a wide block was cut off even on a 1,400 px screen
            f'<tr class="top-diagram"><td colspan="{columns}">'
            f"{candidate_diagram(t, run.space, f'b{rank}-')}</td></tr>"
        )
    return f'<div class="wide"><table class="top">\n{head}\n' + "\n".join(rows) + "\n</table></div>"


def failed_table(run: RunSummary, limit: int = 10) -> str:
    failed = run.failed
    if not failed:
        return "<p>No failed trials.</p>"
    shown = failed[-limit:]
    rows = "\n".join(
        f'<tr><td class="num">{t.id}</td><td><code>{_e(t.candidate)}</code></td>'
        f"<td>{_e(t.error or '-')}</td></tr>"
        for t in shown
    )
    note = f"<p>The last {len(shown)} of {count(len(failed), 'failed trial')}.</p>"
    return (
        f"{note}\n<table><tr><th>trial</th><th>{run.noun}</th><th>error</th></tr>\n{rows}\n</table>"
    )


def stage_table(stages: Sequence[Stage]) -> str:
    """One row per epsilon stage: its trials, how many were trained and reused, its mean."""
    rows = "\n".join(
        f'<tr class="stage"><td class="num">{s.epsilon:g}</td>'
        f'<td class="num">{s.first}-{s.last}</td><td class="num">{s.trained}</td>'
        f'<td class="num">{s.reused}</td><td class="num">{_num(s.mean, ".4f")}</td></tr>'
        for s in stages
    )
    return (
        '<table class="stages"><tr><th>epsilon</th><th>trials</th><th>trained</th>'
        f"<th>reused</th><th>mean reward (trained)</th></tr>\n{rows}\n</table>"
    )


def curve_caption(run: RunSummary, stages: Sequence[Stage]) -> str:
    """What the learning curve shows, and how reused and failed trials count in it."""
    k = rolling_size(len(run.trained))
    parts = [
        "Reward of every finished trial in ask order. The green line is the mean reward of "
        f"the last {k} trained trials (k is a tenth of the trained trials, at least 5): it "
        "rises when the strategy learns to propose better candidates."
    ]
    if stages:
        parts.append(
            "The thick orange segments are the mean reward of each epsilon stage (the paper's "
            "learning curve), over the stage's trained trials; the table below lists them."
        )
    else:
        parts.append(
            f"The {_e(run.agent)} strategy reports no epsilon, so the curve has no stages."
        )
    if run.counts["reused"]:
        parts.append(
            "Reused trials (hollow grey circles, at the reward they reuse) proposed a "
            f"{run.noun} evaluated before, whose stored reward was told again: nothing new was "
            "measured, so they are drawn but left out of every mean"
            + ("; each stage's label and row count them." if stages else ".")
        )
    if run.counts["failed"] or any(t.error for t in run.trained) or run.reused_errors:
        parts.append(
            "Only failures sit on the bottom edge, below the range of the rewards: red "
            "crosses are failed trials, which count in the means at the reward they were "
            f"told; grey crosses are reused trials that proposed a failed {run.noun} again "
            "(in no mean)."
        )
    return "<p>" + " ".join(parts) + "</p>"


def _plot(uri: str, alt: str) -> str:
    return f'<div class="wide"><img class="plot" src="{uri}" alt="{_e(alt)}"></div>'


def render(
    run: RunSummary,
    plots: dict[str, str],
    env: Sequence[tuple[str, str]],
    baseline: RunSummary | None = None,
) -> str:
    """The whole page. `plots` holds data URIs under 'curve', 'flops' (runs with FLOPs) or
    'accuracy' (without) and, with a baseline, 'comparison'. The template reads top to
    bottom as the page does; each section's text is built by the functions below."""
    title = f"blockqnn report: {run.run_dir.resolve().name}"
    noun = run.noun
    stages = run.stages
    partial = (
        '<p class="note">The search is still running: this report is partial; '
        "regenerate it for newer results.</p>"
        if run.state == "running"
        else ""
    )
    return f"""{_page_head(title)}
{partial}
<section id="summary">
{header(run)}
</section>
<section id="learning-curve">
<h2>Learning curve</h2>
{curve_caption(run, stages)}
{_plot(plots["curve"], "reward of every trial with its rolling mean")}
{stage_table(stages) if stages else ""}
</section>
<section id="comparison">
<h2>Against random search</h2>
{_comparison_section(run, plots, baseline, bool(stages))}
</section>
<section id="accuracy-flops">
{_cost_section(run, plots)}
</section>
<section id="top-blocks">
<h2>Top {len(run.top)} {noun}s</h2>
<p>Trained {noun}s by reward (reused duplicates excluded); {_accuracy_note(run)}.</p>
{top_table(run)}
</section>
<section id="failed">
<h2>Failed trials</h2>
{failed_table(run)}
</section>
{_page_end(run, env)}"""


def _page_head(title: str) -> str:
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>{_e(title)}</title>
<style>{_CSS}</style>
</head>
<body>
<h1>{_e(title)}</h1>"""


def _page_end(run: RunSummary, env: Sequence[tuple[str, str]]) -> str:
    """The config and environment sections, and the end of the page."""
    config = config_toml(run.config.to_dict())
    return f"""<section id="config">
<h2>Config</h2>
<p>The run's resolved config (TOML; <code>blockqnn search --config</code> reads it).</p>
<pre>{_e(config)}</pre>
</section>
<section id="environment">
<h2>Environment</h2>
<p>The machine that wrote this report; the run was created by blockqnn
{_e(run.meta.get("blockqnn_version", "?"))}.</p>
<table>
{_rows((k, _e(v)) for k, v in env)}
</table>
</section>
</body>
</html>
"""


def _comparison_section(
    run: RunSummary, plots: dict[str, str], baseline: RunSummary | None, stages: bool
) -> str:
    """The comparison against a baseline run, or how to ask for one."""
    if baseline is None:
        return (
            '<p class="note">No baseline: pass <code>--baseline RANDOM_RUN_DIR</code> '
            "(a run with agent = &quot;random&quot;) to compare.</p>"
        )
    return (
        f"<p>Baseline: <code>{_e(baseline.run_dir.resolve())}</code> "
        f"({_e(baseline.agent)}, {baseline.counts['trained']} trained). Both runs' "
        f"rewards are placed by how many {run.noun}s each had trained (reused duplicates "
        "left out), and averaged over the same positions: per iteration of "
        f"{run.iteration_size}, as a rolling mean"
        + (", and per epsilon stage of this run" if stages else "")
        + ".</p>\n"
        + _plot(plots["comparison"], "mean reward of this run and the baseline")
    )


def _cost_section(run: RunSummary, plots: dict[str, str]) -> str:
    """Accuracy against FLOPs, or, for a space whose evaluations measure none, a histogram."""
    if "flops" in plots:
        return "<h2>Accuracy against FLOPs</h2>\n" + _plot(
            plots["flops"], "validation accuracy against FLOPs, coloured by reward"
        )
    return (
        "<h2>Accuracy</h2>\n"
        f'<p class="note">The evaluations of this run measured no FLOPs (the {_e(run.space)} '
        "space's evaluator reports none): no accuracy-against-cost plot. Instead, how the "
        "accuracies are distributed.</p>\n"
        + _plot(plots["accuracy"], "histogram of the accuracies of the complete trials")
    )


def _accuracy_note(run: RunSummary) -> str:
    """Which accuracy the top table shows."""
    if run.space == "nsc":
        return "accuracy is on the validation split"
    if run.space == "nb201":
        return (
            "accuracy is the NAS-Bench-201 table's 200-epoch test accuracy on "
            f"{_e(run.config.data.dataset)}"
        )
    return "accuracy is as the evaluator measured it"
