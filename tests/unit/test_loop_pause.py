"""Pauses on the loop (`pushsvc.loop_pause`): the embedded aggregator's (`let_others_run`),
after which the process's other greenlets have run and nothing of the pausing caller outlives
its call, and the turns that streams primed together take (`take_turns`)."""

from __future__ import annotations

import gc
import time
import weakref
from collections import Counter
from collections.abc import Iterator

import gevent
import greenlet
import pytest

from pushsvc.loop_pause import HOLD_S, let_others_run, take_turns


class _Batch:
    """Stands for what a batch's frames hold (its events, drafts and updates)."""


def _hold_the_loop() -> None:
    """Run without yielding for longer than `HOLD_S`, as a batch being applied does."""
    until = time.monotonic() + 1.5 * HOLD_S
    while time.monotonic() < until:
        pass


@pytest.fixture
def busy_loop() -> Iterator[list[int]]:
    """A greenlet that is always ready: the loop is never idle, so a pause ends on its bound.
    Yields its turns so far."""
    turns = [0]

    def spin() -> None:
        while True:
            turns[0] += 1
            gevent.sleep(0)

    spinner = gevent.spawn(spin)
    gevent.sleep(0)
    yield turns
    spinner.kill()


def test_a_pause_lets_the_ready_greenlets_run(busy_loop: list[int]) -> None:
    _hold_the_loop()
    before = busy_loop[0]
    let_others_run()
    assert busy_loop[0] > before


def test_a_pause_leaves_nothing_of_its_caller_for_the_collector(busy_loop: list[int]) -> None:
    """A pause that ends on its bound raised a timeout once, whose traceback kept the caller's
    frame, and what it held, until the collector's next full pass."""

    def apply(batch: _Batch) -> None:
        _hold_the_loop()
        let_others_run()

    gc.disable()
    try:
        batch = _Batch()
        gone = weakref.ref(batch)
        apply(batch)
        del batch
        assert gone() is None
    finally:
        gc.enable()


def test_greenlets_taking_turns_share_each_turn_of_the_loop_up_to_the_hold() -> None:
    """64 greenlets ready at once, each with work of at least a third of `HOLD_S` (streams
    primed together): a turn of the loop runs at most the first and those that start within
    `HOLD_S` of it, and every one of them runs."""
    work_s = HOLD_S / 3
    turn = [0]
    went_in: list[int] = []

    def count_turn() -> None:
        turn[0] += 1

    def prime() -> None:
        take_turns()
        went_in.append(turn[0])
        until = time.monotonic() + work_s
        while time.monotonic() < until:
            pass

    prepare = gevent.get_hub().loop.prepare()  # runs once a turn, before the loop polls
    prepare.start(count_turn)
    try:
        gevent.joinall([gevent.spawn(prime) for _ in range(64)], raise_error=True)
    finally:
        prepare.close()
    assert len(went_in) == 64
    # The first, then at most those starting before HOLD_S has passed: 3 of them, at most.
    assert max(Counter(went_in).values()) <= 4, Counter(went_in)


def test_greenlets_in_line_are_woken_only_to_go() -> None:
    """300 greenlets ready at once, more than a turn holds: each is switched to a few times
    (its start, its turn), not once a turn to look again. Woken every turn, 2,000 streams
    reconnecting at once spent the turns on waking each other."""
    work_s = HOLD_S / 20
    workers: set[greenlet.greenlet] = set()
    switched_to: Counter[greenlet.greenlet] = Counter()

    def trace(event: str, args: tuple[greenlet.greenlet, greenlet.greenlet]) -> None:
        if event in ("switch", "throw") and args[1] in workers:
            switched_to[args[1]] += 1

    def prime() -> None:
        take_turns()
        until = time.monotonic() + work_s
        while time.monotonic() < until:
            pass

    spawned = [gevent.spawn(prime) for _ in range(300)]
    workers.update(spawned)
    previous = greenlet.settrace(trace)
    try:
        gevent.joinall(spawned, raise_error=True)
    finally:
        greenlet.settrace(previous)
    assert len(switched_to) == 300
    assert max(switched_to.values()) <= 3, switched_to.most_common(3)
