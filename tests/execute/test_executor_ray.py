"""The Ray executor with real Ray: a local instance with 2 CPUs, and a two-node cluster on
this machine where one node is removed mid-search. The evaluator is the synthetic one (a
sleep), so the tests exercise scheduling and fault tolerance, not training."""

from __future__ import annotations

import itertools
import signal
from pathlib import Path
from typing import Any

import pytest

from blockqnn.errors import BlockQNNError
from blockqnn.execute.synthetic import synthetic_spec
from blockqnn.search import SearchEvent, run_search
from blockqnn.settings.config import Config, merge
from blockqnn.store.db import Store

ray = pytest.importorskip("ray")
pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def _config(budget: int, workers: int, address: str = "") -> Config:
    search = {"budget": budget, "executor": "ray", "workers": workers, "address": address}
    return merge(Config(), {"search": search, "agent": {"iteration_size": 4}})


def _check_every_trial_once(store: Store, budget: int) -> None:
    trained = [t for t in store.trials() if t.trained]
    assert len(trained) == budget
    assert len({t.hash for t in trained}) == budget  # no hash trained twice
    assert store.counts()["running"] == store.counts()["queued"] == 0


def test_local_ray_two_workers(tmp_path: Path) -> None:
    assert not ray.is_initialized()

    def stop(signum: int, frame: Any) -> None:  # the CLI's orderly stop, as a stand-in
        raise AssertionError("not sent")

    handlers: list[Any] = []
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        summary = run_search(
            tmp_path / "run",
            _config(budget=6, workers=2),
            spec=lambda c: synthetic_spec(c, 0.2),
            on_event=lambda event: handlers.append(signal.getsignal(signal.SIGTERM)),
        )
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert summary.trained == 6
    assert handlers and all(h is stop for h in handlers)  # ray.init's own was undone
    assert not ray.is_initialized()  # the executor started Ray, and stopped it
    with Store.open(tmp_path / "run", readonly=True) as store:
        _check_every_trial_once(store, 6)
        workers = {t.worker for t in store.trials() if t.trained}
        assert len(workers) == 2  # both actors evaluated
        # Asynchronous: some trial started before an earlier-asked one finished.
        spans = [(t.started, t.finished) for t in store.trials() if t.trained]
        times = [(s, f) for s, f in spans if s is not None and f is not None]
        assert len(times) == len(spans)
        assert any(b[0] < a[1] for a, b in itertools.pairwise(times))


@pytest.mark.parametrize(
    ("cpus", "gpus", "needs_data", "threads"),
    [(2.0, 0.0, True, 2), (0.5, 0.0, True, 1), (0.0, 0.0, True, 1), (2.0, 1.0, True, None),
     (2.0, 0.0, False, None)],
)  # fmt: skip
def test_an_actor_training_on_the_cpu_uses_the_cores_it_reserved(
    cpus: float, gpus: float, needs_data: bool, threads: int | None
) -> None:
    from blockqnn.execute.base import EvaluatorSpec
    from blockqnn.execute.ray_executor import actor_threads

    config = merge(Config(), {"search": {"cpus_per_trial": cpus, "gpus_per_trial": gpus}})
    assert actor_threads(EvaluatorSpec(config, needs_data=needs_data)) == threads


def test_unreachable_address_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(BlockQNNError, match=r"cannot reach a Ray cluster at 127\.0\.0\.1:1"):
        run_search(
            tmp_path / "run",
            _config(budget=2, workers=1, address="127.0.0.1:1"),
            spec=lambda c: synthetic_spec(c),
        )
    assert not (tmp_path / "run").exists()


def test_an_evaluator_the_actors_cannot_build_is_bad_input(tmp_path: Path) -> None:
    """As with worker processes: the actor's one-line reason, before the run is created,
    not Ray's restarts ending in a traceback."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    config = merge(_config(budget=2, workers=1), {"train": {"epochs": 1}})
    with pytest.raises(BlockQNNError, match=r"^device 'cuda': CUDA is not available"):
        run_search(tmp_path / "run", config, device="cuda")
    assert not (tmp_path / "run").exists()
    assert not ray.is_initialized()


def test_node_lost_mid_search_reruns_its_trial(tmp_path: Path) -> None:
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    nodes = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    removed: list[Any] = []

    def on_event(e: SearchEvent) -> None:
        if e.kind == "complete" and e.trained == 2 and not removed:
            removed.append(nodes[1])
            cluster.remove_node(nodes[1])  # one node dies with its actor, mid-evaluation

    try:
        summary = run_search(
            tmp_path / "run",
            _config(budget=6, workers=2, address=cluster.address),
            spec=lambda c: synthetic_spec(c, 0.5),
            on_event=on_event,
        )
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()  # type: ignore[no-untyped-call]  # ray leaves it unannotated
    assert removed and summary.trained == 6
    with Store.open(tmp_path / "run", readonly=True) as store:
        _check_every_trial_once(store, 6)
        lost = [t for t in store.trials() if t.lost]
        assert len(lost) == 1 and lost[0].status == "complete" and lost[0].attempts == 2
