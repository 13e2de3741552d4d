"""`blockqnn report`: statistics, page structure, bad input, and a real headless browser.

Runs are real stores filled through the store's own write API with synthetic results (no
training), or by the real search loop with the synthetic evaluator or an nb201 table; the
last test reports a tiny real search when the evaluator exists.
"""

from __future__ import annotations

import base64
import csv
import itertools
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from blockqnn.cli import main
from blockqnn.evaluate.synthetic import SyntheticEvaluator
from blockqnn.execute.synthetic import synthetic_spec
from blockqnn.report import (
    SCORED,
    Stage,
    load_run,
    render_report,
    rolling_means,
    rolling_size,
    stage_means,
    window_means,
    write_report,
)
from blockqnn.report.page import config_toml, inline_svg
from blockqnn.report.plots import (
    ROLLING_LABEL,
    STAGE_LABEL,
    comparison_figure,
    learning_curve_figure,
)
from blockqnn.reward import make_reward, score
from blockqnn.search import run_search
from blockqnn.settings.config import Config, merge
from blockqnn.space.base import make_space
from blockqnn.space.nsc.block import Block
from blockqnn.store.db import AgentState, Store, TrialRecord
from blockqnn.strategy import make_strategy

HAS_DOT = shutil.which("dot") is not None
CHROMIUM = shutil.which("chromium") or next(
    (p for p in ("/usr/bin/chromium",) if os.path.exists(p)), None
)


def make_run(
    run_dir: Path, agent: str = "qlearning", n: int = 40, *, close: bool = True, fail: str = "0"
) -> Store:
    """A run of `n` asks with synthetic results: every 7th ask repeats a trained block
    (recorded reused), hashes starting with a digit in `fail` fail. Returns the open store
    (closed when `close`)."""
    config = merge(
        Config(), {"search": {"budget": n, "agent": agent}, "agent": {"iteration_size": 8}}
    )
    evaluator = SyntheticEvaluator(config, fail_digits=fail)
    reward_of = make_reward(config)
    strategy = make_strategy(agent, make_space(config), n, seed=1, config=config.agent)
    store = Store.create(run_dir, config)
    store.acquire()
    store.begin_session()
    trained: list[int] = []
    seq = 0  # the agent's calls (asks and tells), numbered as the search loop does
    for i in range(1, n + 1):
        info = strategy.info()
        if i % 7 == 0 and trained:
            source = store.trial(trained[0])
            block = source.block
            assert source.reward is not None
            strategy.tell(block, source.reward)
            store.add_reused(block, info, source, seq + 1, seq + 2, AgentState({}, seq + 2))
            seq += 2
            continue
        block = strategy.ask()
        trial_id = store.add_trial(block, info, ask_seq=seq + 1)
        result = score(reward_of, evaluator.evaluate(block))  # as the master scores it
        assert result.reward is not None  # score() always sets it
        reward = result.reward if result.ok else 0.0
        strategy.tell(block, reward)
        store.finish(trial_id, result, reward, "w0", seq + 2, AgentState({}, seq + 2))
        seq += 2
        trained.append(trial_id)
    if close:
        store.end_session("complete")
        store.close()
    return store


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("runs")
    make_run(base / "q", "qlearning", 48)
    make_run(base / "random", "random", 48)
    return base / "q", base / "random"


class _Page(HTMLParser):
    """Collects what the tests assert on: tags, resource references, rows, text by id."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: dict[str, int] = {}
        self.refs: list[str] = []
        self.img_src: list[str] = []
        self.top_rows = 0
        self.pre: list[str] = []
        self._in_pre = False
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] = self.tags.get(tag, 0) + 1
        values = dict(attrs)
        for name in ("src", "href", "xlink:href"):
            if values.get(name):
                self.refs.append(str(values[name]))
        if tag == "img":
            self.img_src.append(str(values.get("src")))
        if tag == "tr" and values.get("class") == "top-block":
            self.top_rows += 1
        if tag == "pre":
            self._in_pre = True
            self.pre.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "pre":
            self._in_pre = False

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._in_pre:
            self.pre[-1] += data


def parse(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    page.close()
    return page


def _record(i: int, status: str, reward: float | None, eps: float | None) -> TrialRecord:
    return TrialRecord(
        id=i, hash=f"h{i}", candidate="1,1,3,0,0; 2,7,0,0,0", status=status, reward=reward,
        accuracy=reward, flops=1, params=1, density=1.0, result=None, worker="", attempts=1,
        lost=0, error="", reuse_of=None, info={} if eps is None else {"epsilon": eps},
        ask_seq=i, tell_seq=None, created=0.0, started=None, finished=None,
    )  # fmt: skip


def test_stage_means_group_consecutive_epsilons_and_skip_unscored() -> None:
    trials = [
        _record(1, "complete", 0.2, 1.0),
        _record(2, "failed", 0.0, 1.0),
        _record(3, "running", None, 1.0),
        _record(4, "complete", 0.6, 0.9),
        _record(5, "reused", 0.8, 0.9),
        _record(6, "complete", 0.5, 1.0),  # back to 1.0: a new stage, not merged with the first
    ]
    stages = stage_means(trials)
    assert [(s.epsilon, s.first, s.last, s.count, s.trained, s.reused) for s in stages] == [
        (1.0, 1, 2, 2, 2, 0),
        (0.9, 4, 5, 2, 1, 1),
        (1.0, 6, 6, 1, 1, 0),
    ]
    # The reused 0.8 is drawn in its stage but not averaged: the mean is the trained 0.6's.
    assert [s.mean for s in stages] == pytest.approx([0.1, 0.6, 0.5])


def test_reused_trials_do_not_move_the_stage_means() -> None:
    trained = [_record(1, "complete", 0.4, 0.9), _record(3, "failed", 0.0, 0.9)]
    with_reused = [trained[0], _record(2, "reused", 100.0, 0.9), trained[1]]
    with_reused.append(_record(4, "reused", -100.0, 0.9))
    (stage,) = stage_means(with_reused)
    assert (stage.first, stage.last, stage.count, stage.trained, stage.reused) == (1, 4, 4, 2, 2)
    assert stage.mean == pytest.approx(0.2) == stage_means(trained)[0].mean
    # A stage of reused trials only has nothing trained to average.
    (only,) = stage_means([_record(5, "reused", 0.7, 0.5)])
    assert only.mean is None and only.reused == 1


def test_stage_means_of_a_run_with_reused_trials_average_its_trained_trials(
    runs: tuple[Path, Path],
) -> None:
    run = load_run(runs[0])
    with Store.open(runs[0], readonly=True) as store:
        trials = store.trials()
    stages = stage_means(trials)
    assert list(run.stages) == stages  # streamed as the store is read: the same stages
    assert sum(s.reused for s in stages) == run.counts["reused"] > 0
    scored = [t for t in trials if t.status in SCORED and t.reward is not None]
    for s in stages:
        inside = [t for t in scored if s.first <= t.id <= s.last]
        assert s.count == len(inside)
        rewards = [t.reward for t in inside if t.status != "reused"]
        assert s.trained == len(rewards)
        if rewards:
            assert s.mean == pytest.approx(statistics.fmean(r for r in rewards if r is not None))


def _stage_means_as_a_list(trials: list[TrialRecord]) -> list[Stage]:
    """`stage_means` as it was written before it streamed: the reference."""
    stages: list[Stage] = []
    group: list[TrialRecord] = []
    eps: float | None = None

    def close() -> None:
        if not group or eps is None:
            return
        rewards = [float(t.reward) for t in group if t.status != "reused" and t.reward is not None]
        mean = statistics.fmean(rewards) if rewards else None
        reused = sum(1 for t in group if t.status == "reused")
        stages.append(Stage(eps, group[0].id, group[-1].id, mean, len(group), len(rewards), reused))

    for t in trials:
        if t.reward is None or t.status not in SCORED:
            continue
        e = t.info.get("epsilon")
        same = e is not None and eps is not None and math.isclose(e, eps, abs_tol=1e-9)
        if not same:
            close()
            group, eps = [], e
        group.append(t)
    close()
    return stages


_STATUSES = ("complete", "failed", "reused", "running", "queued")


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(_STATUSES),
            st.one_of(st.none(), st.floats(-1, 1)),
            st.sampled_from([None, 1.0, 0.9, 0.9 + 1e-12, 0.5]),
        ),
        max_size=40,
    )
)
def test_streamed_stage_means_are_the_listed_ones(
    trials: list[tuple[str, float | None, float | None]],
) -> None:
    records = [_record(i, s, r, e) for i, (s, r, e) in enumerate(trials, start=1)]
    assert stage_means(records) == _stage_means_as_a_list(records)


def test_learning_curve_draws_every_scored_trial(tmp_path: Path) -> None:
    """The curve's points come from the streamed read (the reused ones as arrays): the same
    points, in the same order, as every trial read as a record gives."""
    store = make_run(tmp_path / "q", "qlearning", 40, close=False, fail="01234567")
    trials = store.trials()
    seq = max(t.tell_seq or 0 for t in trials)
    for status in ("complete", "failed"):  # a reused copy of each kind
        source = next(t for t in trials if t.status == status)
        store.add_reused(source.block, {"epsilon": 0.1}, source, seq + 1, seq + 2)
        seq += 2
    store.end_session("complete")
    store.close()
    with Store.open(tmp_path / "q", readonly=True) as s:
        trials = [t for t in s.trials() if t.status in SCORED and t.reward is not None]
    ok = {t.id: t.result is not None and t.result["status"] == "ok" for t in trials}
    copies = [t for t in trials if t.status == "reused" and not ok[t.id]]
    expected: dict[str, list[tuple[int, float | None]]] = {
        "trained": [(t.id, t.reward) for t in trials if t.status == "complete"],
        "reused (seen": [(t.id, t.reward) for t in trials if t.status == "reused" and ok[t.id]],
        "failed (": [(t.id, 0.015) for t in trials if t.status == "failed"],
        "reused copy": [(t.id, 0.015) for t in copies],
    }  # fmt: skip
    assert all(expected.values()), expected
    ax = learning_curve_figure(load_run(tmp_path / "q")).axes[0]
    drawn = {str(c.get_label()): np.asarray(c.get_offsets()).tolist() for c in ax.collections}
    for start, points in expected.items():
        (label,) = [name for name in drawn if name.startswith(start)]
        assert drawn[label] == [list(p) for p in points], label
    assert f"reward {copies[0].reward:g}, at the bottom" in label


def test_strategies_without_epsilon_have_no_stages() -> None:
    trials = [_record(i, "complete", 0.1 * i, None) for i in range(1, 5)]
    assert stage_means(trials) == []
    # A trial without an epsilon ends a stage; it joins none.
    mixed = [_record(1, "complete", 0.2, 1.0), _record(2, "complete", 0.4, None)]
    mixed.append(_record(3, "complete", 0.6, 1.0))
    assert [(s.first, s.last) for s in stage_means(mixed)] == [(1, 1), (3, 3)]


def test_rolling_means_skip_reused_and_start_at_a_full_window() -> None:
    trials = [_record(i, "complete", float(i), None) for i in range(1, 6)]
    trials.insert(2, _record(9, "reused", 100.0, None))
    trials.insert(4, _record(10, "running", None, None))
    assert rolling_means(trials, 2) == [(2, 1.5), (3, 2.5), (4, 3.5), (5, 4.5)]
    assert rolling_means(trials, 6) == []
    assert [rolling_size(n) for n in (0, 3, 5, 49, 50, 120, 11392)] == [1, 3, 5, 5, 5, 12, 1139]


def test_window_means_count_a_partial_last_window() -> None:
    trials = [_record(i, "complete", float(i), 1.0) for i in range(1, 6)]
    trials.insert(2, _record(9, "queued", None, 1.0))
    assert window_means(trials, 2) == [(1, 1.5), (2, 3.5), (3, 5.0)]
    with pytest.raises(ValueError):
        window_means(trials, 0)


def test_inline_svg_drops_the_prolog_and_prefixes_ids() -> None:
    svg = '<?xml version="1.0"?>\n<!DOCTYPE svg>\n<svg id="graph0"><g id="node1"/></svg>\n'
    assert inline_svg(svg, "b1-") == '<svg id="b1-graph0"><g id="b1-node1"/></svg>\n'


def test_config_toml_round_trips_to_the_same_config() -> None:
    config = merge(Config(), {"search": {"agent": "random"}, "train": {"lr": 0.5}})
    text = config_toml(config.to_dict())
    assert Config.from_dict(tomllib.loads(text)) == config


def test_report_page_structure(runs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    q_run, random_run = runs
    out = q_run.parent / "pages" / "q.html"
    assert main(["report", str(q_run), "--baseline", str(random_run), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    text = out.read_text()
    page = parse(text)
    assert page.tags["img"] == 3  # learning curve, comparison, accuracy vs FLOPs
    for src in page.img_src:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert page.top_rows == 10
    assert page.tags.get("svg", 0) == (10 if HAS_DOT else 0)
    assert not [r for r in page.refs if r.lower().startswith(("http:", "https:", "//"))]
    assert not [r for r in page.refs if not r.startswith("data:")]  # nothing outside the page
    assert "<?xml" not in text and "<!DOCTYPE svg" not in text
    with Store.open(q_run, readonly=True) as store:
        config, counts, best = store.config(), store.counts(), store.top(1)[0]
    # The config block is TOML that reads back to the run's config.
    assert Config.from_dict(tomllib.loads(page.pre[0])) == config
    body = " ".join(page.text)
    assert f"{counts['trained']} trained of a budget of 48" in body
    assert f"{counts['reused']} reused" in body and counts["reused"] > 0
    assert best.hash in body
    assert str(random_run.resolve()) in body


def test_default_out_is_in_the_run_dir_and_written_atomically(runs: tuple[Path, Path]) -> None:
    q_run, _ = runs
    path = write_report(q_run, top_k=3)
    assert path == q_run / "report.html"
    page = parse(path.read_text())
    assert page.top_rows == 3 and page.tags["img"] == 2  # no baseline: no comparison plot
    assert not [p.name for p in q_run.iterdir() if p.name.endswith(".tmp")]
    assert oct(path.stat().st_mode & 0o777) == "0o644"


def test_a_running_search_gives_a_partial_report(tmp_path: Path) -> None:
    store = make_run(tmp_path / "live", n=10, close=False)
    try:
        block = Block.parse("1,1,3,0,0; 2,2,3,1,0; 3,7,0,0,0")
        store.add_trial(block, {"epsilon": 0.5})  # in flight
        text = render_report(tmp_path / "live")
    finally:
        store.close()
    body = " ".join(parse(text).text)
    assert "this report is partial" in body
    assert "1 running" in body


def test_missing_graphviz_gives_a_note_not_a_failure(
    runs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("blockqnn.space.draw.shutil.which", lambda name: None)
    page = parse(render_report(runs[0], top_k=2))
    assert page.top_rows == 2 and "svg" not in page.tags
    assert " ".join(page.text).count("no diagram: drawing needs Graphviz") == 2


def _bad(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["report", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    return err


def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, runs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert "does not exist" in _bad([str(tmp_path / "nope")], capsys)
    (tmp_path / "empty").mkdir()
    assert "not a blockqnn run" in _bad([str(tmp_path / "empty")], capsys)
    make_run(tmp_path / "allfail", n=3, fail="0123456789abcdef")
    assert "no completed trials" in _bad([str(tmp_path / "allfail")], capsys)
    Store.create(tmp_path / "fresh", Config()).close()
    assert "no completed trials" in _bad([str(tmp_path / "fresh")], capsys)
    assert "--baseline" in _bad([str(runs[0]), "--baseline", str(tmp_path / "empty")], capsys)
    assert "is a directory" in _bad([str(runs[0]), "--out", str(tmp_path)], capsys)
    fifo = tmp_path / "pipe.html"
    os.mkfifo(fifo)  # refused before rendering, never opened (opening would block)
    assert "is a FIFO" in _bad([str(runs[0]), "--out", str(fifo)], capsys)
    assert "--top = 0" in _bad([str(runs[0]), "--top", "0"], capsys)
    assert not (tmp_path / "allfail" / "report.html").exists()


# A probe injected into a test copy of the page: it records script errors, console errors and
# failed resource loads, then, after load, the state of every image and inline SVG, into a
# <pre id="probe"> that --dump-dom prints. The canaries prove that the probe itself works.
_PROBE = """<script>
window.__errors = [];
window.addEventListener("error", function (e) {
  window.__errors.push(e.message || ("resource " + (e.target && e.target.id)));
}, true);
var __consoleError = console.error;
console.error = function () {
  window.__errors.push(Array.prototype.join.call(arguments, " "));
  __consoleError.apply(console, arguments);
};
window.addEventListener("load", function () {
  console.error("canary-console");
  var imgs = Array.prototype.slice.call(document.images);
  var svgs = Array.prototype.slice.call(document.querySelectorAll("svg"));
  var probe = document.createElement("pre");
  probe.id = "probe";
  probe.textContent = JSON.stringify({
    errors: window.__errors,
    images: imgs.map(function (i) { return [i.id, i.complete && i.naturalWidth > 0]; }),
    svgs: svgs.map(function (s) {
      var r = s.getBoundingClientRect();
      return r.width > 0 && r.height > 0;
    }),
    cut: Array.prototype.slice.call(document.querySelectorAll(".diagram")).filter(
      function (d) { return d.scrollWidth > d.clientWidth + 1; }).length,
    labels: svgs.map(function (s) {  // the smallest label of each diagram, in pixels
      var texts = Array.prototype.slice.call(s.querySelectorAll("text"));
      return Math.min.apply(null, texts.map(function (t) {
        return t.getBoundingClientRect().height;
      }));
    })
  });
  document.body.appendChild(probe);
});
</script>"""
_CANARY_IMG = '<img id="canary-img" src="data:image/png;base64,AAAA" alt="">'
_CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--enable-logging=stderr",
    "--v=0",
]


def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    return subprocess.run(
        [CHROMIUM, *_CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_report_renders_in_headless_chromium(runs: tuple[Path, Path], tmp_path: Path) -> None:
    from PIL import Image

    q_run, random_run = runs
    path = write_report(q_run, tmp_path / "report.html", baseline=random_run)
    text = path.read_text()
    probe_page = tmp_path / "probe.html"
    probe_page.write_text(
        text.replace("<head>", "<head>\n" + _PROBE, 1).replace(
            "</body>", _CANARY_IMG + "\n</body>", 1
        )
    )
    proc = _chromium(
        ["--window-size=1400,2000", "--dump-dom", probe_page.as_uri()], tmp_path / "profile"
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    probe = parse(proc.stdout)
    start = proc.stdout.index('<pre id="probe">') + len('<pre id="probe">')
    state: dict[str, Any] = json.loads(
        proc.stdout[start : proc.stdout.index("</pre>", start)].replace("&quot;", '"')
    )
    assert probe.tags["img"] == 4
    assert state["errors"] == ["resource canary-img", "canary-console"]
    assert state["images"][:3] == [["", True]] * 3  # the report's own plots all decode
    assert state["images"][3] == ["canary-img", False]  # and a broken one would be seen
    assert len(state["svgs"]) == (10 if HAS_DOT else 0) and all(state["svgs"])
    # Readable diagrams: labels of 11 px, not shrunk with a wide block (they were ~6 px).
    assert all(10 <= h <= 16 for h in state["labels"]), state["labels"]
    assert state["cut"] == 0  # on a 1,400 px screen every diagram is whole, none scrolls
    # Chromium's own log of console messages: the canary only (no "Uncaught ..." errors).
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    assert len(console) == 1 and "canary-console" in console[0], console

    shot = tmp_path / "shot.png"
    proc = _chromium(
        ["--window-size=1100,2400", f"--screenshot={shot}", path.as_uri()], tmp_path / "profile2"
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert ":CONSOLE" not in proc.stderr  # the unmodified page logs nothing either
    with Image.open(shot) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1_000_000)
    assert colours is not None and len(colours) > 100  # plots and diagrams, not a blank page


def test_report_of_a_run_written_by_the_search_loop(tmp_path: Path) -> None:
    """The real search loop and store writer (synthetic evaluator), Q-learning and random."""
    for agent in ("qlearning", "random", "evolution"):
        config = merge(Config(), {"search": {"budget": 12, "agent": agent}})
        run_search(tmp_path / agent, config, spec=lambda c: synthetic_spec(c, fail_digits="0"))
    text = render_report(tmp_path / "qlearning", baseline=tmp_path / "random")
    page = parse(text)
    with Store.open(tmp_path / "qlearning", readonly=True) as store:
        complete = store.counts()["complete"]
    assert page.top_rows == min(10, complete) and page.tags["img"] == 3
    assert "<tr><th>state</th><td>complete</td></tr>" in text  # how the search ended
    assert render_report(tmp_path / "evolution", baseline=tmp_path / "random")


def _texts(fig: Any) -> list[str]:
    return [t.get_text() for t in fig.axes[0].texts]


def _legend(fig: Any) -> list[str]:
    return list(fig.axes[0].get_legend_handles_labels()[1])


def test_learning_curve_with_epsilon_has_labelled_stages_and_a_rolling_mean(
    runs: tuple[Path, Path],
) -> None:
    run = load_run(runs[0])
    stages = run.stages
    fig = learning_curve_figure(run)
    texts = _texts(fig)
    assert len(texts) == len(stages) > 1 and all(t.startswith("ε=") for t in texts)
    # Reused trials are counted in their stage's label, not averaged into its mean.
    assert (
        [t for t in texts if "reused" in t]
        == [f"ε={s.epsilon:g} (+{s.reused} reused)" for s in stages if s.reused]
        != []
    )
    k = rolling_size(len(run.trained))
    assert STAGE_LABEL in _legend(fig) and ROLLING_LABEL.format(k=k) in _legend(fig)
    page = render_report(runs[0])
    assert page.count('<tr class="stage">') == len(stages)


def test_a_run_without_epsilon_has_no_stages_but_a_rolling_mean(
    runs: tuple[Path, Path], tmp_path: Path
) -> None:
    make_run(tmp_path / "evolution", "evolution", 30)
    for run_dir in (runs[1], tmp_path / "evolution"):
        run = load_run(run_dir)
        assert not run.has_epsilon and run.stages == ()
        fig = learning_curve_figure(run)
        assert _texts(fig) == []  # no epsilon labels
        legend = _legend(fig)
        assert STAGE_LABEL not in legend
        assert ROLLING_LABEL.format(k=rolling_size(len(run.trained))) in legend
        text = render_report(run_dir)
        assert '<tr class="stage">' not in text and "ε" not in text
        assert "reports no epsilon, so the curve has no stages" in text
    assert "population 20" in render_report(tmp_path / "evolution")  # its info, in the header


def test_comparison_works_when_either_run_has_no_epsilon(runs: tuple[Path, Path]) -> None:
    q, random = load_run(runs[0]), load_run(runs[1])
    q_first = comparison_figure(q, random)
    assert any(t.startswith("ε=") for t in _texts(q_first))
    random_first = comparison_figure(random, q)
    assert _texts(random_first) == []
    legend = _legend(random_first)
    assert not [label for label in legend if "epsilon" in label]
    assert len([label for label in legend if "rolling mean" in label]) == 2  # both runs
    page = parse(render_report(runs[1], baseline=runs[0]))
    assert page.tags["img"] == 3


# ----- nb201 ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nb201_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An evolution and a random run of the nb201 space over a synthetic table of every cell
    (deterministic made-up accuracies; the real table is not needed to test the report)."""
    from blockqnn.space.nb201 import DATASETS, Cell

    base = tmp_path_factory.mktemp("nb201")
    table = base / "table.csv"
    with table.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*DATASETS.values(), "ArchitectureString"])
        for indices in itertools.product(range(5), repeat=6):
            accuracy = 40.0 + 5.0 * sum(indices) / 3.0  # better with more "later" ops
            writer.writerow([accuracy] * len(DATASETS) + [str(Cell.from_indices(indices))])
    for agent in ("evolution", "random"):
        config = merge(
            Config(),
            {
                "search": {"budget": 24, "agent": agent, "space": "nb201"},
                "data": {"dataset": "cifar10", "table": str(table)},
                "agent": {"population_size": 8, "sample_size": 3},
            },
        )
        run_search(base / agent, config)
    return base / "evolution", base / "random"


def _fake_dot(tmp_path: Path) -> str:
    """A stand-in for Graphviz's `dot`: an SVG with one <text class="edge"> per labelled
    edge of the DOT text it reads, so a test can check what the page drew without Graphviz."""
    script = tmp_path / "dot"
    script.write_text(
        f"#!{sys.executable}\n"
        "import html, re, sys\n"
        "dot = sys.stdin.read()\n"
        'labels = re.findall(r\'-> \\d+ \\[label="([^"]*)"\', dot)\n'
        "print('<?xml version=\"1.0\"?>')\n"
        'print(\'<svg xmlns="http://www.w3.org/2000/svg" width="90" height="90">\')\n'
        "for label in labels:\n"
        "    print('<text class=\"edge\">' + html.escape(label) + '</text>')\n"
        "print('</svg>')\n"
    )
    script.chmod(0o755)
    return str(script)


def test_cell_dot_labels_edges_and_omits_none() -> None:
    from blockqnn.space.draw import cell_dot
    from blockqnn.space.nb201 import Cell

    cell = Cell.parse(
        "|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|avg_pool_3x3~1|nor_conv_1x1~2|"
    )
    dot = cell_dot(cell)
    edges = [line.strip() for line in dot.splitlines() if "->" in line]
    assert [e.split(" [")[0] for e in edges] == ["0 -> 1", "0 -> 3", "1 -> 3", "2 -> 3"]
    assert [e.split(", ")[0].split("[")[1] for e in edges] == [
        'label="conv 3x3"',
        'label="skip"',
        'label="avg pool 3x3"',
        'label="conv 1x1"',
    ]
    assert "none" not in dot
    # Node 2 is fed by none edges only: no signal of the input passes it, drawn dashed.
    assert '2 [label="2: node 2", fillcolor="#c7e9c0", style="rounded,filled,dashed"]' in dot
    assert '1 [label="1: node 1", fillcolor="#c7e9c0", style="rounded,filled"]' in dot


def test_nb201_report_draws_cells_and_has_no_flops_plot(
    nb201_runs: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from blockqnn.space.nb201 import Cell

    monkeypatch.setattr("blockqnn.space.draw.shutil.which", lambda name: _fake_dot(tmp_path))
    evolution, random = nb201_runs
    text = render_report(evolution, baseline=random)
    page = parse(text)
    run = load_run(evolution)
    assert run.space == "nb201" and not run.has_cost
    assert page.tags["img"] == 3  # learning curve, comparison, accuracy histogram
    assert "Accuracy against FLOPs" not in text and "measured no FLOPs" in text
    assert f"Top {len(run.top)} candidates" in text and "Top 10 blocks" not in text
    assert "<th>FLOPs</th>" not in text and "cell (NAS-Bench-201) and hash" in text
    assert "reports no epsilon" in text
    rows = text.split('<tr class="top-block">')[1:]
    assert len(rows) == page.top_rows == len(run.top) > 0
    assert page.tags.get("svg", 0) == len(rows)
    for row, trial in zip(rows, run.top, strict=True):
        cell = Cell.parse(trial.candidate)
        assert f"<code>{cell}</code>" in row
        # One labelled edge per op that is not `none`; `none` edges are left out.
        assert row.count('<text class="edge">') == sum(op != "none" for op in cell.ops)
        assert '<text class="edge">none</text>' not in row


def test_a_baseline_of_another_space_is_refused(
    nb201_runs: tuple[Path, Path], runs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    err = _bad([str(nb201_runs[0]), "--baseline", str(runs[1])], capsys)
    assert "--baseline" in err and "not comparable" in err


def test_report_of_a_tiny_real_search(tmp_path: Path) -> None:
    pytest.importorskip("blockqnn.evaluate.early_stop")

    config = merge(
        Config(),
        {
            "search": {"budget": 3},
            "data": {"dataset": "digits", "train_samples": 200},
            "network": {"filters": 4},
            "train": {"epochs": 1},
        },
    )
    run_search(tmp_path / "run", config, device="cpu")
    page = parse(render_report(tmp_path / "run"))
    with Store.open(tmp_path / "run", readonly=True) as store:
        complete = store.counts()["complete"]
    assert complete >= 1
    assert page.top_rows == complete and page.tags["img"] == 2


def test_cli_json_output(runs: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    proc = subprocess.run(
        [sys.executable, "-m", "blockqnn", "report", str(runs[0]), "--out", str(out), "--json"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"report": str(out), "bytes": out.stat().st_size}


def test_stage_labels_keep_apart_on_the_final_axis() -> None:
    from matplotlib.figure import Figure

    from blockqnn.report.plots import LABEL_GAP, _label_stages

    ax = Figure().add_subplot()
    ax.plot([0, 1000], [0, 1])  # a baseline's longer axis
    stages = [(f"ε={i}", 10.0 + i, 11.0 + i) for i in range(40)]  # forty one-trial stages
    _label_stages(ax, stages)
    xs = [t.get_position()[0] for t in ax.texts]
    low, high = ax.get_xlim()
    assert xs[0] == 10.5 and 1 < len(xs) < 40
    assert all(b - a >= LABEL_GAP * (high - low) for a, b in itertools.pairwise(xs))
    wide = Figure().add_subplot()
    wide.plot([0, 40], [0, 1])
    _label_stages(wide, stages[:10])  # stages 2.5% of the axis wide: every one labelled
    assert len(wide.texts) == 10


def test_stage_labels_sit_between_the_plot_and_its_title_at_a_small_budget(
    tmp_path: Path,
) -> None:
    make_run(tmp_path / "q", "qlearning", 12)  # stages of one or two trials
    make_run(tmp_path / "r", "random", 12)
    q, random = load_run(tmp_path / "q"), load_run(tmp_path / "r")
    for fig in (learning_curve_figure(q), comparison_figure(q, random)):
        fig.draw_without_rendering()
        ax = fig.axes[0]
        plot_area, title = ax.get_window_extent(), ax.title.get_window_extent()
        labels = [t.get_window_extent() for t in ax.texts]
        assert len(labels) > 3
        # above the plot area (they covered its best points) and below the title
        assert all(b.y0 >= plot_area.y1 and b.y1 <= title.y0 for b in labels)
        assert not any(a.overlaps(b) for i, a in enumerate(labels) for b in labels[i + 1 :])


def test_rank_numbers_do_not_overlap() -> None:
    from matplotlib.figure import Figure

    from blockqnn.report.plots import _rank_labels

    fig = Figure(figsize=(9.0, 4.2), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    points = [(1e6 * (1 + i / 1000), 0.85) for i in range(10)]  # ten near-identical points
    ax.scatter([x for x, _ in points], [y for _, y in points])
    ax.set_xscale("log")
    _rank_labels(fig, ax, points)
    fig.draw_without_rendering()
    boxes = [t.get_window_extent() for t in ax.texts]
    assert [t.get_text() for t in ax.texts] == [str(i) for i in range(1, 11)]
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])
