"""The --threads setting: policies, parsing, precedence, the split between local workers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from blockqnn.cli import main
from blockqnn.errors import BlockQNNError
from blockqnn.execute.pool import Placement, place_workers
from blockqnn.settings.config import Config
from blockqnn.settings.threads import DEFAULT as DEFAULT_THREADS
from blockqnn.settings.threads import parse as parse_threads
from blockqnn.train import threads


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    threads.reset()
    yield
    threads.reset()


def test_policies_resolve_from_the_machine() -> None:
    def on8(setting: str, busy: float = 0.0) -> int:  # 8 cores, 4 physical, no OMP_*
        return threads.resolve(setting, cores=8, physical=4, busy=busy, environ={})

    assert on8("all", 0.0) == 8
    assert on8("physical", 0.0) == 4
    assert on8("minus-one", 0.0) == 7
    assert on8("3", 0.0) == 3
    # auto: the idle cores, at most the physical ones, at least one
    assert on8("auto", 0.0) == 4
    assert on8("auto", 5.2) == 3
    assert on8("auto", 8.0) == 1
    # the machine: 2 cores, one busy with another job -> 1 thread
    assert threads.resolve("auto", cores=2, physical=2, busy=1.0, environ={}) == 1
    assert threads.resolve("minus-one", cores=1, physical=1, busy=0.0, environ={}) == 1


def test_auto_takes_omp_num_threads_and_the_others_do_not() -> None:
    env = {"OMP_NUM_THREADS": "3"}
    assert threads.resolve("auto", cores=8, physical=8, busy=0.0, environ=env) == 3
    assert threads.resolve("all", cores=8, physical=8, busy=0.0, environ=env) == 8


@pytest.mark.parametrize(
    "bad", ["0", "-1", "many", "", "1.5", "5000", "1_0", "٢", "１", "2\n3", "9" * 5000]
)
def test_bad_settings_are_one_line_errors(bad: str) -> None:
    with pytest.raises(BlockQNNError, match="--threads"):
        parse_threads(bad)


@pytest.mark.parametrize("bad", ["1_0", "٢"])
def test_cli_refuses_int_forms_that_are_not_ascii_digits(
    capsys: pytest.CaptureFixture[str], bad: str
) -> None:
    # int() takes both (10 and 2 threads): refused as any other bad value, exit 2; no
    # --run-dir, refused next, so that an accepted value never starts a search
    assert main(["search", "--threads", bad]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--threads = '{bad}'" in err and "Traceback" not in err
    with pytest.raises(BlockQNNError, match=r"train\.threads"):  # a config's, the same
        Config.from_dict({"train": {"threads": bad}})


def test_omp_num_threads_that_is_not_ascii_digits_is_ignored() -> None:
    env = {"OMP_NUM_THREADS": "²"}  # str.isdigit() is true, int() raises
    assert threads.resolve("auto", cores=8, physical=4, busy=0.0, environ=env) == 4


def test_config_accepts_names_and_toml_integers(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[train]\nthreads = 2\n")
    assert Config.from_toml(path).train.threads == "2"
    path.write_text('[train]\nthreads = "Physical"\n')
    assert Config.from_toml(path).train.threads == "physical"
    path.write_text('[train]\nthreads = "lots"\n')
    with pytest.raises(BlockQNNError, match=r"train\.threads"):
        Config.from_toml(path)
    path.write_text("[train]\nthreads = true\n")
    with pytest.raises(BlockQNNError, match=r"train\.threads"):
        Config.from_toml(path)
    assert Config().train.threads == DEFAULT_THREADS


def test_the_command_line_wins_over_a_config() -> None:
    threads.choose("2", override=True)
    threads.choose("all")  # a config read later (an executor) cannot replace --threads
    assert threads.current() == "2"
    assert threads.count() == 2
    threads.reset()
    threads.choose("1")
    assert threads.current() == "1"
    assert threads.count() == 1


def test_configure_threads_applies_the_setting() -> None:
    import torch

    before = torch.get_num_threads()
    try:
        threads.choose("1", override=True)
        assert threads.configure_threads() == 1
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_local_workers_divide_the_threads() -> None:
    assert threads.share(8, 3) == 2
    assert threads.share(2, 4) == 1  # at least one each
    # the pool divides the setting's count, not every core
    assert place_workers(2, "cpu", 0.0, 0, threads.resolve("6")) == [Placement("cpu", 3)] * 2


def test_physical_cores_reads_the_topology(tmp_path: Path) -> None:
    import os

    try:
        ids = sorted(os.sched_getaffinity(0))
    except AttributeError:
        pytest.skip("no CPU affinity here")
    for cpu in ids:  # every visible CPU a hyper-thread sibling of CPU 0's core
        topo = tmp_path / f"cpu{cpu}" / "topology"
        topo.mkdir(parents=True)
        (topo / "physical_package_id").write_text("0\n")
        (topo / "core_id").write_text(f"{cpu // 2}\n")
    assert threads.physical_cores(tmp_path) == len({cpu // 2 for cpu in ids})
    assert threads.physical_cores(tmp_path / "missing") == len(ids)  # unreadable: visible


def test_proc_stat_parsing(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    stat.write_text(
        "cpu  10 0 10 80 0 0 0 0 0 0\ncpu0 5 0 5 40 0 0 0 0 0 0\ncpu1 1 0 1 90 8 0 0 0 0 0\n"
        "intr 1 2 3\n"
    )
    assert threads._cpu_times(stat) == {0: (40, 50), 1: (98, 100)}


def test_cli_refuses_a_bad_threads_value(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["evaluate", "1,1,3,0,0", "--threads", "zero"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "train.threads" in err
