"""Distinct counts (`pushsvc.stats.distinct`): the HyperLogLog's error against the true
count, the sliding sketch's state after expiry against a sketch of only the remaining
entries, merge against the sketch of the union, and the exact-then-sketch counter against a
set, including its return to exact once the window has turned over."""

from __future__ import annotations

import random
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pushsvc.stats.distinct import (
    HyperLogLog,
    SlidingDistinct,
    SlidingHyperLogLog,
    hash64,
)
from pushsvc.stats.state_codec import StateReader, StateWriter


def _hll(values: list[str]) -> HyperLogLog:
    sketch = HyperLogLog()
    for value in values:
        sketch.add(value)
    return sketch


@pytest.mark.parametrize("n", [1, 10, 1_000, 5_000, 20_000, 50_000, 150_000])
def test_one_estimate_is_within_four_percent(n: int) -> None:
    values = [f"user-{i}" for i in range(n)]
    assert abs(_hll(values).estimate() - n) <= 0.04 * n


def test_mean_relative_error_over_many_cardinalities_is_within_one_and_a_half_percent() -> None:
    # One sketch read at 60 cardinalities from 2,000 to 120,000: what a stream of answers is.
    rng = random.Random(7)
    sketch = HyperLogLog()
    errors = []
    added = 0
    for target in range(2_000, 120_001, 2_000):
        while added < target:
            sketch.add(f"{rng.getrandbits(64):x}")
            added += 1
        errors.append(abs(sketch.estimate() - added) / added)
    assert statistics.fmean(errors) <= 0.015
    assert max(errors) <= 0.04


@given(
    st.lists(st.integers(0, 400), max_size=200),
    st.lists(st.integers(0, 400), max_size=200),
)
def test_merge_is_the_sketch_of_the_union(left: list[int], right: list[int]) -> None:
    a = _hll([str(v) for v in left])
    b = _hll([str(v) for v in right])
    a.merge(b)
    union = _hll([str(v) for v in left + right])
    assert a.registers == union.registers
    assert a.estimate() == union.estimate()


# A step: add value v at key (the edge plus an offset: late entries land before newer ones),
# or move the edge forward.
_steps = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(0, 3_000), st.integers(1, 40)),
        st.tuples(st.just("expire"), st.integers(0, 30), st.just(0)),
    ),
    max_size=300,
)


@settings(max_examples=150)
@given(_steps)
def test_sliding_state_after_expiry_is_the_sketch_of_the_remaining_entries(
    steps: list[tuple[str, int, int]],
) -> None:
    sliding = SlidingHyperLogLog()
    held: list[tuple[int, str]] = []
    edge = 0
    for kind, a, b in steps:
        if kind == "add":
            value, key = str(a), edge + b
            sliding.add(hash64(value), key)
            held.append((key, value))
        else:
            edge += a
            sliding.expire(edge)
        remaining = [value for key, value in held if key > edge]
        assert sliding.registers == _hll(remaining).registers
        assert sliding.estimate() == _hll(remaining).estimate()


@settings(max_examples=150)
@given(_steps, st.integers(1, 12))
def test_the_counter_is_exact_up_to_its_cap_and_the_sketch_beyond(
    steps: list[tuple[str, int, int]], cap: int
) -> None:
    counter = SlidingDistinct(exact_up_to=cap)
    held: list[tuple[int, str]] = []
    edge = 0
    for kind, a, b in steps:
        if kind == "add":
            value, key = str(a % 30), edge + b
            counter.add(value, key)
            held.append((key, value))
        else:
            edge += a
            counter.expire(edge)
        remaining = {value for key, value in held if key > edge}
        if counter.exact:
            assert counter.count() == len(remaining)
        else:
            assert counter.count() == round(_hll(sorted(remaining)).estimate())
        # Never more than `cap` different values at all: never left exact.
        if len({value for _, value in held}) <= cap:
            assert counter.exact


def test_exact_again_once_the_window_has_turned_over() -> None:
    counter = SlidingDistinct(exact_up_to=10)
    for i in range(50):
        counter.add(f"v{i}", 100)
    assert not counter.exact
    assert counter.count() == round(_hll([f"v{i}" for i in range(50)]).estimate())
    for i in range(5):
        counter.add(f"w{i}", 200)  # the window still holds 55 values here
    counter.expire(150)
    assert not counter.exact  # five values left, but they came while it held 55
    for i in range(3):
        counter.add(f"x{i}", 300)
    counter.expire(250)  # everything from before the last time it held over 10 is gone
    assert counter.exact and counter.count() == 3


@settings(max_examples=60)
@given(_steps, st.integers(1, 12))
def test_state_round_trip_continues_identically(
    steps: list[tuple[str, int, int]], cap: int
) -> None:
    one = SlidingDistinct(exact_up_to=cap)
    edge = 0
    for i, (kind, a, b) in enumerate(steps):
        if i == len(steps) // 2:
            out = StateWriter()
            one.write(out)
            source = StateReader(bytes(out))
            two = SlidingDistinct.read(source)
            source.done()
        if kind == "add":
            one.add(str(a), edge + b)
        else:
            edge += a
            one.expire(edge)
    if len(steps) < 1:
        return
    # Replay the second half on the copy.
    edge = 0
    for kind, a, _ in steps[: len(steps) // 2]:
        if kind == "expire":
            edge += a
    for kind, a, b in steps[len(steps) // 2 :]:
        if kind == "add":
            two.add(str(a), edge + b)
        else:
            edge += a
            two.expire(edge)
    assert (two.exact, two.count()) == (one.exact, one.count())


def test_a_sliding_sketchs_memory_is_bounded_by_registers_not_events() -> None:
    sliding = SlidingHyperLogLog()
    for key in range(200_000):
        sliding.add(hash64(str(key % 50_000)), key)
        if key % 1000 == 0:
            sliding.expire(key - 100_000)
    # Each register's list holds at most one entry per rho (1..51); on average far fewer.
    assert sliding.entries() <= 16_384 * 20


def test_two_values_of_one_time_in_one_register_survive_a_state_round_trip() -> None:
    """Events of one time (one key) whose hashes share a register: both entries stand (the
    one with the larger value first), and the state must read back. It did not: its reader
    wanted keys strictly ascending, so a `--data-dir` restart failed to restore the window."""
    register = 7 << 50  # the register is the hash's top 14 bits
    larger, smaller = register | 1, register | (1 << 40)  # rho: 50, then 10
    sketch = SlidingHyperLogLog()
    sketch.add(larger, 5)
    sketch.add(smaller, 5)
    sketch.add(register | (1 << 45), 6)  # rho 5, later: three entries in the register
    assert sketch.entries() == 3
    out = StateWriter()
    sketch.write(out)
    source = StateReader(bytes(out))
    copy = SlidingHyperLogLog.read(source)
    source.done()
    assert copy.registers == sketch.registers and copy.entries() == 3
    assert copy.expire(5) == sketch.expire(5) and copy.registers == sketch.registers
