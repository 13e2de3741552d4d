"""`blockqnn dashboard`: several runs on one page, served read-only on 127.0.0.1, followed
live in headless Chromium while a real search process runs."""

from __future__ import annotations

import json
import re
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.report.test_report import CHROMIUM, _chromium
from tests.search.test_resume import DRIVER
from tests.strategies import write_nb201_table

from blockqnn.cli import main
from blockqnn.report.live import COLOURS, TOP, make_server, read_run
from blockqnn.store.db import Store


@pytest.fixture
def two_runs(tmp_path: Path) -> tuple[Path, Path]:
    table = write_nb201_table(tmp_path / "t.csv.gz")
    nb = ["--space", "nb201", "--table", str(table), "--dataset", "cifar10", "--json"]
    q, random = tmp_path / "q", tmp_path / "random"
    assert main(["search", *nb, "--budget", "20", "--run-dir", str(q)]) == 0
    assert (
        main(["search", *nb, "--budget", "12", "--agent", "random", "--run-dir", str(random)]) == 0
    )
    return q, random


@pytest.fixture
def served(two_runs: tuple[Path, Path]) -> Iterator[str]:
    server = make_server(list(two_runs), port=0, refresh=2)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as response:
        return str(response.read().decode())


def test_runs_side_by_side(served: str, two_runs: tuple[Path, Path]) -> None:
    page = _get(served + "/")
    assert '<meta http-equiv="refresh" content="2">' in page
    for run in two_runs:
        assert f"<h2>{run}</h2>" in page
    assert page.count('class="best"') == 2  # a best-so-far line per run
    assert "qlearning on nb201" in page and "random on nb201" in page
    data = json.loads(_get(served + "/runs.json"))
    assert [d["counts"]["trained"] for d in data] == [20, 12]
    assert [d["budget"] for d in data] == [20, 12]
    with Store.open(two_runs[0], readonly=True) as s:
        assert data[0]["best"] == s.top(1)[0].reward
    with pytest.raises(urllib.error.HTTPError):
        _get(served + "/nothing")


def test_a_runs_view_is_what_its_trials_say(two_runs: tuple[Path, Path]) -> None:
    """The view comes from one streamed pass: the same as every trial read as a record."""
    for run in two_runs:
        view = read_run(run)
        with Store.open(run, readonly=True) as s:
            trials = s.trials()
            assert view.counts == s.counts() and view.top == s.top(TOP)
        assert view.rewards == [t.reward for t in trials if t.trained and t.reward is not None]
        assert view.info == [t for t in trials if t.ask_seq > 0][-1].info
    conn = sqlite3.connect(two_runs[1] / "blockqnn.sqlite")
    conn.execute("UPDATE trials SET reward = 0.5 WHERE id = 3")  # unsealed: damage
    conn.commit()
    conn.close()
    damaged = read_run(two_runs[1])
    assert "damaged: trial 3 does not match its checksum" in damaged.error
    assert damaged.counts == {} and damaged.rewards == [] and damaged.top == []


def test_port_in_use_exits_2_naming_it(
    two_runs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["dashboard", str(two_runs[0]), "--port", str(port)]) == 2
    assert f"port {port} on 127.0.0.1 is in use" in capsys.readouterr().err


def test_not_a_run_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dashboard", str(tmp_path), "--port", "0"]) == 2
    assert "not a blockqnn run" in capsys.readouterr().err
    assert main(["dashboard", str(tmp_path), "--port", "70000"]) == 2


def _trained_in(dom: str) -> list[int]:
    return [int(n) for n in re.findall(r'<b class="trained">(\d+)</b>', dom)]


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_dashboard_follows_a_running_search_in_chromium(
    two_runs: tuple[Path, Path], tmp_path: Path
) -> None:
    from PIL import Image

    live = tmp_path / "live"
    search = subprocess.Popen(  # a real search process: 40 synthetic evaluations of 0.15 s
        [sys.executable, "-c", DRIVER, "0.15", "search", "--budget", "40", "--dataset",
         "digits", "--run-dir", str(live)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    dashboard = None
    try:
        deadline = time.monotonic() + 60
        while not (live / "blockqnn.sqlite").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        runs = [str(live), *map(str, two_runs)]
        dashboard = subprocess.Popen(
            [sys.executable, "-m", "blockqnn", "dashboard", *runs, "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert dashboard.stdout is not None
        url = re.search(r"http://\S+/", dashboard.stdout.readline())
        assert url is not None
        first = _chromium(["--dump-dom", url.group(0)], tmp_path / "p1")
        assert first.returncode == 0, first.stderr[-2000:]
        seen = _trained_in(first.stdout)
        assert seen[1:] == [20, 12] and seen[0] < 40
        assert '<span class="state">running</span>' in first.stdout
        search.wait(timeout=120)
        assert search.returncode == 0, search.stderr.read() if search.stderr else ""
        second = _chromium(["--dump-dom", url.group(0)], tmp_path / "p2")
        assert _trained_in(second.stdout) == [40, 20, 12]
        assert '<span class="state">running</span>' not in second.stdout
        shot = tmp_path / "shot.png"
        third = _chromium(
            ["--window-size=1000,900", f"--screenshot={shot}", url.group(0)], tmp_path / "p3"
        )
        assert third.returncode == 0, third.stderr[-2000:]
        with Image.open(shot) as image:
            pixels = {rgb for _, rgb in image.convert("RGB").getcolors(maxcolors=1_000_000) or []}
        for colour in COLOURS[:3]:  # every run's line is drawn in its colour
            assert tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5)) in pixels, colour
    finally:
        for proc in (search, dashboard):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)
