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
    M,
    SlidingDistinct,
    SlidingHyperLogLog,
    hash64,
    linear_count,
    place,
    sparse_entry,
)
from pushsvc.stats.state_codec import StateReader, StateWriter
from pushsvc.stats.tagged import TagSpec, TimeTags


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
# or move the edge forward. Keys run from edge + 1 to edge + 40: a ring of 40 keys holds them.
_SPAN = 40
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
    sliding = SlidingHyperLogLog(_SPAN)
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
@given(_steps, st.integers(1, 12), st.integers(0, 20))
def test_the_counter_is_exact_up_to_its_cap_then_sparse_then_dense(
    steps: list[tuple[str, int, int]], cap: int, sparse_cap: int
) -> None:
    counter = SlidingDistinct(_SPAN, exact_up_to=cap, sparse_up_to=sparse_cap)
    held: list[tuple[int, str]] = []
    edge = 0
    floor = 0  # the count when an add last changed the representation, until one leaves
    for kind, a, b in steps:
        before = counter.count(), counter.exact, counter.sparse
        if kind == "add":
            value, key = str(a % 30), edge + b
            counter.add(value, key)
            held.append((key, value))
            if (counter.exact, counter.sparse) != before[1:]:
                floor = before[0]
        else:
            edge += a
            if counter.expire(edge):
                floor = 0
        remaining = sorted({value for key, value in held if key > edge})
        if counter.exact:
            assert counter.count() == len(remaining)
        elif counter.sparse:
            entries = {sparse_entry(hash64(value)) for value in remaining}
            assert counter.count() == max(floor, round(linear_count(len(entries))))
        else:
            assert counter.count() == max(floor, round(_hll(remaining).estimate()))
        # Never more than `cap` different values at all: never left exact.
        if len({value for _, value in held}) <= cap:
            assert counter.exact


def test_exact_again_once_the_window_has_turned_over() -> None:
    counter = SlidingDistinct(_SPAN, exact_up_to=10, sparse_up_to=0)
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
@given(_steps, st.integers(1, 12), st.integers(0, 20))
def test_state_round_trip_continues_identically(
    steps: list[tuple[str, int, int]], cap: int, sparse_cap: int
) -> None:
    one = SlidingDistinct(_SPAN, exact_up_to=cap, sparse_up_to=sparse_cap)
    edge = 0
    for i, (kind, a, b) in enumerate(steps):
        if i == len(steps) // 2:
            out = StateWriter()
            one.write(out)
            source = StateReader(bytes(out))
            two = SlidingDistinct.read(source, _SPAN)
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


def test_a_sliding_sketchs_memory_is_bounded_by_registers_and_span_not_events() -> None:
    sliding = SlidingHyperLogLog(61)
    for i in range(200_000):
        key = i // 1000
        if i % 1000 == 0:
            sliding.expire(key - 61)  # keys key - 60 .. key stay: 61
        sliding.add(hash64(str(i % 50_000)), key)
    assert sliding.used == sum(1 for rho in sliding.registers if rho) > 15_000
    assert len(sliding._ring) == M * 61  # one byte per register and live key, ever


def test_a_key_beyond_the_span_is_refused() -> None:
    sliding = SlidingHyperLogLog(3)
    sliding.add(hash64("a"), 10)
    sliding.add(hash64("b"), 12)
    with pytest.raises(ValueError, match="span more than the ring"):
        sliding.add(hash64("c"), 13)  # the slot of 10, still live
    before = sliding.registers
    sliding.expire(10)
    sliding.add(hash64("c"), 13)  # 10 has left: its slot is free
    assert sliding.registers != before
    assert sliding.registers == _hll(["b", "c"]).registers


def test_two_values_of_one_time_in_one_register_survive_a_state_round_trip() -> None:
    """Events of one time (one key) whose hashes share a register: the larger stands, and
    the state must read back. It did not once: the reader wanted keys strictly ascending,
    so a `--data-dir` restart failed to restore the window."""
    register = 7 << 50  # the register is the hash's top 14 bits
    larger, smaller = register | 1, register | (1 << 40)  # rho: 50, then 10
    sketch = SlidingHyperLogLog(4)
    sketch.add(larger, 5)
    sketch.add(smaller, 5)
    sketch.add(register | (1 << 45), 6)  # rho 5, later
    out = StateWriter()
    sketch.write(out)
    source = StateReader(bytes(out))
    copy = SlidingHyperLogLog.read(source, 4)
    source.done()
    assert copy.registers == sketch.registers and copy.registers[7] == 50
    assert copy.expire(5) == sketch.expire(5) and copy.registers == sketch.registers
    assert copy.registers[7] == 5


def _write_version_1(out: StateWriter, counter: _Lists) -> None:
    """What the code before the ring wrote for a ``SlidingDistinct`` (version 1): the sketch
    as each register's list of possible future maxima, ``(key, rho)`` entries."""
    out.uint(1)
    out.uint(counter.cap)
    for optional in (counter.newest, counter.since):
        if optional is None:
            out.uint(0)
        else:
            out.uint(1)
            out.sint(optional)
    out.uint(0)  # the exact values: none here
    out.uint(1)
    lists = [(register, entries) for register, entries in enumerate(counter.lists) if entries]
    out.uint(len(lists))
    for register, entries in lists:
        out.uint(register)
        out.uint(len(entries))
        for key, rho in entries:
            out.sint(key)
            out.uint(rho)


class _Lists:
    """The lists of possible future maxima as the code before the ring kept them (a model:
    each register's entries, keys ascending, rho strictly decreasing)."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.newest: int | None = None
        self.since: int | None = None
        self.lists: list[list[tuple[int, int]]] = [[] for _ in range(M)]

    def add(self, value: str, key: int) -> None:
        register, rho = place(hash64(value))
        entries = self.lists[register]
        if any(k > key and r >= rho for k, r in entries):
            return  # a later entry as large: never the maximum
        kept = [(k, r) for k, r in entries if not (k <= key and r <= rho)]
        # Keys ascending, rho descending (an entry of one key with a larger rho stays first).
        self.lists[register] = sorted([*kept, (key, rho)], key=lambda e: (e[0], -e[1]))
        self.newest = key if self.newest is None else max(self.newest, key)
        self.since = self.newest


def test_a_version_1_state_reads_into_the_same_registers_and_continues_identically() -> None:
    rng = random.Random(3)
    old = _Lists(cap=10)
    fresh = SlidingDistinct(_SPAN, exact_up_to=10, sparse_up_to=0)  # dense, as version 1
    values = [f"v{rng.randrange(5_000)}" for _ in range(3_000)]
    for i, value in enumerate(values):
        key = 100 + i // 100 - rng.randrange(3)  # keys 98..129, some late
        old.add(value, key)
        fresh.add(value, key)
    out = StateWriter()
    _write_version_1(out, old)
    source = StateReader(bytes(out))
    restored = SlidingDistinct.read(source, _SPAN)
    source.done()
    assert not restored.exact and restored.count() == fresh.count()
    assert isinstance(restored._sketch, SlidingHyperLogLog)
    assert isinstance(fresh._sketch, SlidingHyperLogLog)
    assert restored._sketch.registers == fresh._sketch.registers
    edge = 97
    for step in range(40):
        edge += 1
        assert restored.expire(edge) == fresh.expire(edge)
        for j in range(20):
            value, key = f"w{step}-{j}", edge + 1 + rng.randrange(_SPAN)
            restored.add(value, key)
            fresh.add(value, key)
        assert (restored.exact, restored.count()) == (fresh.exact, fresh.count())


def test_a_version_1_state_with_keys_beyond_the_span_is_refused() -> None:
    old = _Lists(cap=1)
    old.add("a", 0)
    old.add("b", 0)
    for value in ("c", "d", "e"):
        old.add(value, _SPAN)
    out = StateWriter()
    _write_version_1(out, old)
    with pytest.raises(ValueError, match="span more than the ring"):
        SlidingDistinct.read(StateReader(bytes(out)), _SPAN)


_RING_SPAN = 6

# A step: add a hash (register 0..7, so values share registers; its low 50 bits shifted
# right for rho up to 51) at the edge plus 1..6 (late keys and one key again), or expire.
_ring_steps = st.lists(
    st.one_of(
        st.tuples(
            st.just("add"),
            st.integers(0, 7),
            st.integers(0, (1 << 50) - 1),
            st.integers(0, 50),
            st.integers(1, _RING_SPAN),
        ),
        st.tuples(st.just("expire"), st.integers(0, 4), st.just(0), st.just(0), st.just(0)),
    ),
    max_size=200,
)


def _maxima(held: list[tuple[int, int]], edge: int) -> list[int]:
    """Each of the first 8 registers' largest rho over the entries with a key above the edge."""
    out = [0] * 8
    for key, h in held:
        if key > edge:
            register, rho = place(h)
            out[register] = max(out[register], rho)
    return out


@settings(max_examples=150)
@given(_ring_steps)
def test_the_ring_agrees_with_the_largest_rho_per_register_of_the_remaining_entries(
    steps: list[tuple[str, int, int, int, int]],
) -> None:
    sliding = SlidingHyperLogLog(_RING_SPAN)
    held: list[tuple[int, int]] = []  # (key, hash)
    edge = 0
    expected = _maxima(held, edge)
    for kind, a, low, shift, b in steps:
        if kind == "add":
            h = a << 50 | low >> shift
            sliding.add(h, edge + b)
            held.append((edge + b, h))
            expected = _maxima(held, edge)
        else:
            edge += a
            before, expected = expected, _maxima(held, edge)
            assert sliding.expire(edge) == (before != expected)
        registers = sliding.registers
        assert list(registers[:8]) == expected and registers[8:] == bytes(M - 8)
        assert sliding.used == sum(1 for rho in expected if rho)


def test_a_long_window_whose_width_is_no_multiple_of_the_sub_buckets_spans_62_keys() -> None:
    """Width 605 µs: sub-buckets of 10 µs, so at clock 1001 the edge is sub-bucket 38 and
    events from 391 µs (sub-bucket 39) to 1001 µs (sub-bucket 100) count: 62 live keys, one
    more than the 61 a width that is a multiple of 60 gives. The ring must hold them."""
    tags = TimeTags((605,), ("w",), TagSpec(("user",), ()))
    tags.insert(1001, {"user": "first"}, 1001)
    for ts in range(391, 1001):
        for j in range(3):
            tags.insert(ts, {"user": f"u{ts}-{j}"}, 1001)
    windows: dict[str, dict[str, object]] = {"w": {}}
    tags.fill(windows)
    count = windows["w"]["distinct_user"]
    assert isinstance(count, int) and abs(count - 1_831) <= 0.04 * 1_831


def test_a_full_ring_written_and_read_back_answers_as_the_original_through_expiry() -> None:
    """Many values over every key, so registers hold bytes in many keys: the state keeps
    only each register's possible future maxima (a byte that a newer key matches or beats is
    written as 0), and the copy must answer as the original as keys leave and late entries
    come. Compressed, it is a fraction of the ring."""
    span = 62
    rng = random.Random(3)
    sketch = SlidingHyperLogLog(span)
    for key in range(span):
        for _ in range(3_000):
            sketch.add(hash64(str(rng.randrange(10**9))), key)
    out = StateWriter()
    sketch.write(out)
    state = bytes(out)
    assert len(state) < M * span // 4
    source = StateReader(state)
    copy = SlidingHyperLogLog.read(source, span)
    source.done()
    assert copy.registers == sketch.registers
    for edge in range(-1, span):
        late = hash64(f"late-{edge}")
        for each in (sketch, copy):
            each.expire(edge)
            each.add(late, edge + 1 + edge % 3)
        assert copy.registers == sketch.registers
        assert copy.estimate() == sketch.estimate()


def test_a_long_windows_distinct_count_takes_no_event_from_behind_its_edge() -> None:
    """An event whose clock is behind the one the window slid to (a caller out of step) is
    older than the window: it is not counted, and it cannot reach the ring's slot of a live
    sub-bucket (which would refuse it)."""
    second = 1_000_000
    tags = TimeTags((60 * second,), ("1m",), TagSpec(("user",), ()))
    start = 1_700_000_000 * second
    for i in range(3_000):  # 50 an s over 60 s: a sketch past 1,000 values, every slot live
        ts = start + i * 20_000
        tags.insert(ts, {"user": f"u{i}"}, ts)
    windows: dict[str, dict[str, object]] = {"1m": {}}
    tags.fill(windows)
    before = windows["1m"]["distinct_user"]
    old = start - 30 * second  # 90 s before the clock: behind the edge
    tags.insert(old, {"user": "late"}, old)
    tags.fill(windows)
    assert windows["1m"]["distinct_user"] == before
