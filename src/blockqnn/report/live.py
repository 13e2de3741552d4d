"""The live dashboard: several runs side by side on one page, served on this machine.

Owns: reading each run's store (read-only, at every request, so the page follows searches
that are running), the page (inline CSS and a hand-written SVG of every trained reward and
the best so far per run: no plotting library, no network) and the HTTP server (the standard
library's `ThreadingHTTPServer`). The page reloads itself every `refresh` seconds. Must not
write to any run: a dashboard may watch a search while it runs.
"""

from __future__ import annotations

import errno
import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from blockqnn.errors import BlockQNNError, clip
from blockqnn.store.db import TRAINED, Store, TrialRecord

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2")
TOP = 5  # best candidates listed per run

_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; color: #222; margin: 16px; }
h1 { font-size: 20px; margin: 0 0 8px; } h2 { font-size: 16px; margin: 4px 0; }
.runs { display: grid; grid-template-columns: repeat(auto-fit, minmax(320px, 1fr)); gap: 12px; }
.run { border: 1px solid #ddd; border-top-width: 4px; padding: 8px; overflow-x: auto; }
table { border-collapse: collapse; } td, th { padding: 2px 6px; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
code { font: 12px ui-monospace, Menlo, Consolas, monospace; word-break: break-all; }
.muted { color: #777; } .error { color: #b00; }
"""


@dataclass
class RunView:
    """What the page shows of one run, read from its store."""

    path: str
    error: str = ""
    space: str = ""
    agent: str = ""
    dataset: str = ""
    budget: int = 0
    running: bool = False
    counts: dict[str, int] = field(default_factory=dict)
    rewards: list[float] = field(default_factory=list)  # trained trials, in ask order
    top: list[TrialRecord] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def best(self) -> float | None:
        return max(self.rewards) if self.rewards else None

    def to_json(self) -> dict[str, Any]:
        return {
            "run": self.path,
            "error": self.error,
            "space": self.space,
            "agent": self.agent,
            "dataset": self.dataset,
            "budget": self.budget,
            "running": self.running,
            "counts": self.counts,
            "best": self.best,
            "info": self.info,
            "top": [
                {"trial": t.id, "reward": t.reward, "candidate": t.candidate} for t in self.top
            ],
        }


def read_run(path: str | Path) -> RunView:
    """One run as the page shows it; a run that cannot be read is shown with its error.
    One pass over the trials, every row verified, none kept but the trained rewards."""
    view = RunView(str(path))
    try:
        with Store.open(path, readonly=True) as store, store.reading() as reading:
            config = store.config()
            view.counts = store.counts()
            view.running = store.active()
            view.top = store.top(TOP)
            for t in reading.scan():
                if t.status in TRAINED and t.reward is not None:
                    view.rewards.append(t.reward)
                if t.ask_seq > 0:
                    view.info = t.info
    except BlockQNNError as exc:
        return RunView(str(path), error=str(exc))
    except Exception as exc:  # a run being written must not stop the server
        return RunView(str(path), error=f"cannot read the run now ({clip(str(exc))})")
    view.space, view.agent = config.search.space, config.search.agent
    view.dataset, view.budget = config.data.dataset, config.search.budget
    view.info = dict(view.info)  # its own copy: the reading shares decoded values
    return view


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _svg(views: Sequence[RunView], width: int = 760, height: int = 300) -> str:
    """Every trained reward (dots) and the best so far (a line) per run, by trained trial."""
    series = [(v, COLOURS[i % len(COLOURS)]) for i, v in enumerate(views) if v.rewards]
    if not series:
        return '<p class="muted">no trained trials yet</p>'
    values = [r for v, _ in series for r in v.rewards if math.isfinite(r)]
    low, high = min(values), max(values)
    if high - low < 1e-9:
        low, high = low - 0.5, high + 0.5
    n = max(len(v.rewards) for v, _ in series)
    left, bottom, pad = 48, 24, 8

    def xy(i: int, r: float) -> tuple[float, float]:
        x = left + (width - left - pad) * (i / max(1, n - 1))
        y = pad + (height - bottom - pad) * (1 - (r - low) / (high - low))
        return round(x, 1), round(y, 1)

    parts = [
        f'<svg id="rewards" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img">',
        f'<rect x="{left}" y="{pad}" width="{width - left - pad}" '
        f'height="{height - bottom - pad}" fill="none" stroke="#ccc"/>',
        f'<text x="2" y="{pad + 10}" font-size="11">{high:.3f}</text>',
        f'<text x="2" y="{height - bottom}" font-size="11">{low:.3f}</text>',
        f'<text x="{left}" y="{height - 6}" font-size="11">trained trials 1 .. {n}: '
        "reward (dots), best so far (lines)</text>",
    ]
    for v, colour in series:
        best, points = -math.inf, []
        for i, r in enumerate(v.rewards):
            if not math.isfinite(r):
                continue
            x, y = xy(i, r)
            parts.append(f'<circle cx="{x}" cy="{y}" r="2" fill="{colour}" opacity="0.45"/>')
            best = max(best, r)
            points.append("{},{}".format(*xy(i, best)))
        parts.append(
            f'<polyline class="best" data-run="{_e(v.path)}" fill="none" stroke="{colour}" '
            f'stroke-width="2" points="{" ".join(points)}"/>'
        )
    parts.append("</svg>")
    return "\n".join(parts)


def _column(v: RunView, colour: str) -> str:
    head = f'<div class="run" style="border-top-color:{colour}"><h2>{_e(v.path)}</h2>'
    if v.error:
        return head + f'<p class="error">{_e(v.error)}</p></div>'
    c = v.counts
    state = "running" if v.running else "stopped"
    info = "  ".join(
        f"{k} {val:.2f}" if isinstance(val, float) else f"{k} {val}" for k, val in v.info.items()
    )
    best = "-" if v.best is None else f"{v.best:.4f}"
    rows = "".join(
        f'<tr><td class="num">{t.id}</td><td class="num">{t.reward or 0:.4f}</td>'
        f"<td><code>{_e(t.candidate)}</code></td></tr>"
        for t in v.top
    )
    return (
        head + f'<p><span class="state">{state}</span> · {_e(v.agent)} on {_e(v.space)} '
        f"({_e(v.dataset)}) {_e(info)}</p>"
        + f'<p class="progress">trained <b class="trained">{c.get("trained", 0)}</b> of '
        f"{v.budget} · failed {c.get('failed', 0)} · reused {c.get('reused', 0)} · "
        f"running {c.get('running', 0)} · best <b>{best}</b></p>"
        + "<table><tr><th>trial</th><th>reward</th><th>candidate</th></tr>"
        + rows
        + "</table></div>"
    )


def page(views: Sequence[RunView], refresh: float) -> str:
    """The dashboard page (reloads itself every `refresh` seconds; 0: never)."""
    meta = f'<meta http-equiv="refresh" content="{refresh:g}">' if refresh > 0 else ""
    columns = "\n".join(_column(v, COLOURS[i % len(COLOURS)]) for i, v in enumerate(views))
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"{meta}<title>blockqnn dashboard</title><style>{_CSS}</style></head><body>"
        f"<h1>blockqnn dashboard: {len(views)} run{'s' if len(views) != 1 else ''}</h1>"
        f'{_svg(views)}\n<div class="runs">{columns}</div>'
        '<p class="muted">read-only; <a href="runs.json">runs.json</a> has the same data</p>'
        "</body></html>"
    )


def make_server(
    runs: Sequence[str | Path], host: str = "127.0.0.1", port: int = 8765, refresh: float = 5.0
) -> ThreadingHTTPServer:
    """The server, bound (port 0: a free one); `serve_forever()` runs it. Every run is
    checked to be a readable run first; a port in use is refused. BlockQNNError for both."""
    for run in runs:
        Store.open(run, readonly=True).close()
    paths = [str(r) for r in runs]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            route = self.path.split("?", 1)[0]
            views = [read_run(p) for p in paths]
            if route in ("/", "/index.html"):
                body, kind = page(views, refresh).encode(), "text/html; charset=utf-8"
            elif route == "/runs.json":
                body = json.dumps([v.to_json() for v in views], indent=2).encode()
                kind = "application/json"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: the terminal shows where the page is, not every request

    try:
        return ThreadingHTTPServer((host, port), Handler)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise BlockQNNError(
                f"port {port} on {host} is in use; choose another with --port"
            ) from None
        raise BlockQNNError(f"cannot serve on {host}:{port}: {exc.strerror}") from None
    except (TypeError, UnicodeError):  # a name IDNA cannot encode (a label over 63 characters)
        raise BlockQNNError(f"--host {clip(host)}: not a usable host name") from None
