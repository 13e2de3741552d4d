"""The search report: one self-contained HTML page describing a run, from its store.

Owns: `render_report` (the page as text) and `write_report` (written atomically). The page
holds the run's progress, the learning curve (a rolling mean, and the mean per epsilon stage
for strategies that report an epsilon), a comparison with a random-search baseline run,
accuracy against FLOPs (or an accuracy histogram for spaces without FLOPs, such as nb201),
accuracy against measured latency with the non-dominated front (runs that measured one),
the top candidates with diagrams (NSC blocks or NAS-Bench-201 cells), the config and the
environment. The raw data behind it, one row per trial, is `trials_table` (`report.trials`).
Everything is read from the store read-only, so the page can be regenerated at any time, also
while a search is running (a partial report). Must not write to the store, train anything or
reference anything outside the page (no network to view it).

Example:
    >>> from blockqnn.report import write_report
    >>> write_report("runs/demo")  # doctest: +SKIP
    PosixPath('runs/demo/report.html')
"""

from __future__ import annotations

from pathlib import Path

from blockqnn.errors import BlockQNNError
from blockqnn.files import HTML, check_replace, write_atomic
from blockqnn.report.data import (
    SCORED,
    RunSummary,
    Stage,
    load_run,
    rolling_means,
    rolling_size,
    stage_means,
    window_means,
)
from blockqnn.report.trials import trial_rows, trials_table
from blockqnn.settings.bounds import MAX_TOP, check, integers

__all__ = [
    "REPORT_NAME",
    "SCORED",
    "RunSummary",
    "Stage",
    "load_run",
    "render_report",
    "rolling_means",
    "rolling_size",
    "stage_means",
    "trial_rows",
    "trials_table",
    "window_means",
    "write_report",
]

REPORT_NAME = "report.html"  # default file name, in the run dir


def render_report(run_dir: str | Path, baseline: str | Path | None = None, top_k: int = 10) -> str:
    """The report of the run in `run_dir` as HTML text, optionally against a `baseline` run
    (usually a random-search run). Raises `BlockQNNError` when either is not a run or has no
    completed trial."""
    try:
        import matplotlib  # noqa: F401 - an optional dependency: fail early, in one line
    except ImportError:
        raise BlockQNNError("the report needs matplotlib: pip install 'blockqnn[report]'") from None
    from blockqnn.report import page, plots

    check("--top", top_k, integers(1, MAX_TOP))
    run = load_run(run_dir, top_k)
    base = None
    if baseline is not None:
        try:
            base = load_run(baseline, top_k)
        except BlockQNNError as exc:
            raise BlockQNNError(f"--baseline: {exc}") from None
    if base is not None and base.space != run.space:
        raise BlockQNNError(
            f"--baseline: {baseline} searched the {base.space} space, this run the "
            f"{run.space} space: their rewards are not comparable"
        )
    figures = {"curve": plots.learning_curve(run)}
    if run.has_cost:
        figures["flops"] = plots.accuracy_vs_flops(run)
    else:
        figures["accuracy"] = plots.accuracy_histogram(run)
    if base is not None:
        figures["comparison"] = plots.comparison(run, base)
    text = page.render(run, figures, page.environment(), base)
    return _with_latency(run, text)


def _with_latency(run: RunSummary, text: str) -> str:
    """The accuracy-latency section (runs that measured a latency), before the top blocks;
    inserted here so that the page's layout stays page.py's."""
    from blockqnn.report import latency

    if not latency.has_latency(run):
        return text
    section = latency.latency_section(run, latency.latency_plot(run))
    anchor = '<section id="top-blocks">'
    return text.replace(anchor, section + anchor, 1)


def write_report(
    run_dir: str | Path,
    out: str | Path | None = None,
    baseline: str | Path | None = None,
    top_k: int = 10,
) -> Path:
    """Write the report (default `RUN_DIR/report.html`) atomically: a reader never sees half
    a page. Returns the path written."""
    path = Path(out) if out is not None else Path(run_dir) / REPORT_NAME
    # a directory, FIFO, device or a file that is no HTML page: refused before the rendering
    check_replace(path, "--out", "an HTML page", HTML)
    text = render_report(run_dir, baseline, top_k)  # fails before anything is written
    write_atomic(path, text, "--out")
    return path
