"""A serving process's collector thresholds (`pushsvc.ops.collector`): full passes ten times
rarer, the youngest generation collected after 10,000 allocations, a flood of batches
brings no full pass, and what the process made to start is never walked again."""

from __future__ import annotations

import gc
import weakref
from collections import deque
from collections.abc import Iterator

import pytest

from pushsvc.ops import collector


@pytest.fixture
def thresholds() -> Iterator[tuple[int, int, int]]:
    saved = gc.get_threshold()
    yield saved
    gc.set_threshold(*saved)
    gc.unfreeze()  # this test process's objects go back to the collector


def test_the_young_and_the_oldest_generations_are_passed_over_more(
    thresholds: tuple[int, int, int],
) -> None:
    young, middle, oldest = thresholds
    collector.tune_for_streams()
    assert gc.get_threshold() == (collector.YOUNGEST_AFTER, middle, collector.OLDEST_EVERY)
    assert 10 * young <= collector.YOUNGEST_AFTER
    assert 10 * oldest <= collector.OLDEST_EVERY


class _Event:
    __slots__ = ("value",)

    def __init__(self, value: int) -> None:
        self.value = value


def test_a_flood_of_big_batches_brings_no_full_pass(thresholds: tuple[int, int, int]) -> None:
    """100 batches of 10,000 tracked objects, each living while the next 20 come (a backlog
    behind the aggregator), as the embedded server sees them: a million allocations."""
    collector.tune_for_streams()
    gc.collect()
    full_passes: list[int] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start" and info["generation"] == 2:
            full_passes.append(1)

    gc.callbacks.append(count)
    try:
        backlog: deque[list[_Event]] = deque(maxlen=20)
        for _ in range(100):
            backlog.append([_Event(n) for n in range(10_000)])
    finally:
        gc.callbacks.remove(count)
    assert full_passes == []


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def test_what_was_made_before_serving_is_left_out_of_every_pass(
    thresholds: tuple[int, int, int],
) -> None:
    started = _Event(1)  # made while the process starts: the app, its modules, its rules
    garbage = _Cycle()  # a cycle start-up let go of: collected, not frozen with the rest
    let_go = weakref.ref(garbage)
    del garbage
    collector.tune_for_streams()
    serving = _Event(2)  # made once it serves
    walked = gc.get_objects()
    assert not any(o is started for o in walked)
    assert any(o is serving for o in walked)
    assert let_go() is None
    assert gc.get_freeze_count() > 0
