"""The suite's own scheduler (tests/conftest.py, `_ByFileButPure`), driven through the calls
pytest-xdist makes: a test file goes whole to one worker, the file that builds Docker's images
before any other; the last of three or more workers (the filler) takes only the tests that
start nothing, one at a time; the others take those once no file is left."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from conftest import _ByFileButPure

COLLECTION = [
    *(f"tests/system/test_many.py::test_{i}" for i in range(6)),
    *(f"tests/system/test_docker_stack.py::test_{i}" for i in range(2)),
    *(f"tests/system/test_few.py::test_{i}" for i in range(3)),
    *(f"tests/system/test_{name}.py::test_0" for name in ("one", "two", "three")),
    "tests/unit/test_pure.py::test_a",
    "tests/unit/test_pure.py::test_b",
    "tests/simulation/test_sim.py::test_slice[0]",
]


class _Worker:
    """What the scheduler asks of an xdist worker: its id, and to run tests by index."""

    def __init__(self, workerid: str, count: int) -> None:
        self.workerinput = {"workerid": workerid, "workercount": count}
        self.gateway = SimpleNamespace(id=workerid)
        self.shutting_down = False
        self.sent: list[str] = []

    def send_runtest_some(self, indexes: list[int]) -> None:
        self.sent += [COLLECTION[i] for i in indexes]

    def shutdown(self) -> None:
        self.shutting_down = True


def _scheduled(count: int) -> tuple[_ByFileButPure, list[_Worker]]:
    config = SimpleNamespace(
        getvalue=lambda name: [f"{count}*popen"],
        option=SimpleNamespace(loadscopereorder=True),
    )
    scheduler = _ByFileButPure(cast(Any, config))
    workers = [_Worker(f"gw{i}", count) for i in range(count)]
    for worker in workers:
        scheduler.add_node(cast(Any, worker))
        scheduler.add_node_collection(cast(Any, worker), COLLECTION)
    scheduler.schedule()
    return scheduler, workers


def _finish(scheduler: _ByFileButPure, worker: _Worker) -> None:
    """The worker reports each test it was sent as done; the scheduler hands out more."""
    done = 0
    while done < len(worker.sent) and not worker.shutting_down:
        scheduler.mark_test_complete(cast(Any, worker), COLLECTION.index(worker.sent[done]))
        done += 1


def _files(sent: list[str]) -> list[str]:
    return list(dict.fromkeys(nodeid.split("::")[0] for nodeid in sent))


def _pure(nodeid: str) -> bool:
    return nodeid.startswith(("tests/unit/", "tests/simulation/"))


def _each_test_once_and_each_file_on_one_worker(workers: list[_Worker]) -> None:
    sent = [nodeid for worker in workers for nodeid in worker.sent]
    assert sorted(sent) == sorted(COLLECTION)
    files = [f for worker in workers for f in _files(worker.sent) if not _pure(f)]
    assert len(files) == len(set(files))


def test_the_docker_file_first_then_the_most_tests_and_the_filler_only_pure_tests() -> None:
    scheduler, workers = _scheduled(3)
    first, second, filler = workers
    assert first.sent[0].startswith("tests/system/test_docker_stack.py::")
    assert second.sent[0].startswith("tests/system/test_many.py::")
    assert filler.sent and all(_pure(nodeid) for nodeid in filler.sent)
    for worker in (filler, first, second):
        _finish(scheduler, worker)
    assert all(_pure(nodeid) for nodeid in filler.sent)
    assert not any(_pure(nodeid) for nodeid in first.sent + second.sent)  # the filler took them
    _each_test_once_and_each_file_on_one_worker(workers)


def test_a_file_worker_takes_pure_tests_only_once_no_file_is_left() -> None:
    scheduler, workers = _scheduled(3)
    first, second, filler = workers
    for worker in (first, second):  # the filler is busy with its first
        _finish(scheduler, worker)
    for worker in (first, second):
        kinds = [_pure(nodeid) for nodeid in worker.sent]
        assert kinds == sorted(kinds), worker.sent  # files, then pure tests
    assert any(_pure(nodeid) for nodeid in first.sent + second.sent)
    _finish(scheduler, filler)
    _each_test_once_and_each_file_on_one_worker(workers)


def test_with_two_workers_there_is_no_filler() -> None:
    scheduler, workers = _scheduled(2)
    first, second = workers
    assert first.sent[0].startswith("tests/system/test_docker_stack.py::")
    assert not _pure(second.sent[0])
    for worker in workers:
        _finish(scheduler, worker)
    _each_test_once_and_each_file_on_one_worker(workers)
