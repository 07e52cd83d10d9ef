"""No jump at the switch (docs/design.md, "Distinct counts and top values"): adding an event
to a window from which nothing expires never lowers its distinct count, on every window kind,
across the switch from exact counting to the sketch and from the sparse sketch to the dense
one; and the first estimate past the exact range is within 0.5 % of the exact count. The
oracle is pandas: `nunique` of every prefix of the stream (as a cumulative count of first
occurrences) and of the whole."""

from __future__ import annotations

import random
from itertools import pairwise

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pushsvc.stats.distinct import EXACT_UP_TO, SPARSE_UP_TO, DistinctSet, SlidingDistinct
from pushsvc.stats.state_codec import StateReader, StateWriter
from pushsvc.stats.tagged import CountTags, ExactTags, TagSpec, TimeTags

S = 1_000_000
START = 1_700_000_000 * S
HOUR = 3_600 * S
SPEC = TagSpec(("user",), ())


def _stream(prefix: str, values: int, rng: random.Random) -> list[tuple[int, str | None]]:
    """`values` different values, each one to three times, and some events without the tag,
    shuffled, at times over 50 s in any order (late ones too): all inside an hour."""
    events: list[tuple[int, str | None]] = []
    for i in range(values):
        events += [(0, f"{prefix}{i}")] * rng.choice((1, 1, 2, 3))
    events += [(0, None)] * (values // 20)
    rng.shuffle(events)
    return [(START + rng.randrange(50 * S), value) for _, value in events]


def _counts(events: list[tuple[int, str | None]]) -> dict[str, list[int]]:
    """Each window kind's `distinct_user` after every event: an exact time window, a count
    window and a long window of an hour, a count window longer than the stream; nothing
    leaves any of them."""
    exact = ExactTags((HOUR,), ("exact",), SPEC)
    long = TimeTags((HOUR,), ("long",), SPEC)
    last = CountTags((100_000,), SPEC)
    windows: dict[str, dict[str, object]] = {"exact": {}, "long": {}, "last100000": {}}
    got: dict[str, list[int]] = {label: [] for label in windows}
    clock = START
    for ts, value in events:
        clock = max(clock, ts)
        tags = None if value is None else {"user": value}
        for kind in (exact, long, last):
            kind.insert(ts, tags, clock)
        exact.fill(windows)
        long.fill(windows)
        last.fill(windows)
        for label, window in windows.items():
            count = window["distinct_user"]
            assert isinstance(count, int)
            got[label].append(count)
    return got


def _check(events: list[tuple[int, str | None]]) -> None:
    users = pd.Series([value for _, value in events], dtype="object")
    truth = (users.notna() & ~users.duplicated()).cumsum().tolist()  # nunique of each prefix
    assert truth[-1] == users.nunique()
    got = _counts(events)
    for label, counts in got.items():
        lowered = [(i, a, b) for i, (a, b) in enumerate(pairwise(counts)) if b < a]
        assert not lowered, (label, lowered[:3])
    assert got["exact"] == truth
    assert got["last100000"] == truth
    long = got["long"]
    first_past = truth.index(EXACT_UP_TO + 1)
    assert long[:first_past] == truth[:first_past]  # exact up to 1,000 values
    assert abs(long[first_past] - truth[first_past]) <= 0.005 * truth[first_past]
    assert all(abs(c - t) <= 0.04 * t for c, t in zip(long, truth, strict=True))


@settings(max_examples=40)
@given(
    prefix=st.text(min_size=0, max_size=8),
    values=st.integers(EXACT_UP_TO + 1, EXACT_UP_TO + 300),
    seed=st.integers(0, 2**32),
)
def test_adding_without_expiry_never_lowers_the_count_across_the_exact_range(
    prefix: str, values: int, seed: int
) -> None:
    _check(_stream(prefix, values, random.Random(seed)))


@settings(max_examples=8)
@given(
    prefix=st.text(min_size=0, max_size=8),
    values=st.integers(SPARSE_UP_TO + 50, SPARSE_UP_TO + 400),
    seed=st.integers(0, 2**32),
)
def test_adding_without_expiry_never_lowers_the_count_across_the_dense_switch(
    prefix: str, values: int, seed: int
) -> None:
    _check(_stream(prefix, values, random.Random(seed)))


def test_the_1001st_value_keeps_a_long_windows_count_within_half_a_percent() -> None:
    """`customer-0` to `customer-1000`: a dense HyperLogLog of these 1,001 values says 995,
    so a long window's count fell from 1,000 to 995 when the 1,001st came."""
    _check([(START + i, f"customer-{i}") for i in range(EXACT_UP_TO + 1)])


@settings(max_examples=300)
@given(
    cap=st.integers(1, 20),
    sparse_cap=st.integers(0, 40),
    adds=st.lists(st.tuples(st.integers(0, 200), st.integers(0, 9)), max_size=150),
)
def test_a_counter_never_falls_while_nothing_leaves_whatever_its_caps(
    cap: int, sparse_cap: int, adds: list[tuple[int, int]]
) -> None:
    """Small caps put both switches, and many values past them, in a short stream; keys in
    any order within the span, the edge never moving."""
    counter = SlidingDistinct(10, exact_up_to=cap, sparse_up_to=sparse_cap)
    last = 0
    for value, key in adds:
        counter.add(str(value), key)
        count = counter.count()
        assert count >= last
        last = count


def _set(values: list[str]) -> DistinctSet:
    counted = DistinctSet()
    for value in values:
        counted.add(value)
    return counted


@settings(max_examples=30)
@given(
    prefix=st.text(min_size=0, max_size=8),
    values=st.integers(EXACT_UP_TO + 1, EXACT_UP_TO + 100),
)
def test_a_series_buckets_first_estimate_past_the_exact_range_is_within_half_a_percent(
    prefix: str, values: int
) -> None:
    names = [f"{prefix}{i}" for i in range(values)]
    want = pd.Series(names).nunique()
    assert abs(_set(names).count() - want) <= 0.005 * want


@settings(max_examples=25)
@given(
    sizes=st.lists(st.integers(0, 3_000), min_size=1, max_size=5),
    overlap=st.integers(0, 2_000),
    order=st.randoms(use_true_random=False),
)
def test_merged_sets_count_as_the_set_of_the_union(
    sizes: list[int], overlap: int, order: random.Random
) -> None:
    """Buckets exact, sparse or dense (up to 15,000 values together), their values
    overlapping, merged in any order as a coarser bucket merges its finer ones: the count of
    one set of every value, read back from its state as written."""
    parts = []
    start = 0
    for size in sizes:
        parts.append([f"u{i}" for i in range(start, start + size)])
        start += max(0, size - overlap)
    order.shuffle(parts)
    merged = DistinctSet()
    for part in parts:
        merged.merge(_set(part))
    union = [value for part in parts for value in part]
    assert merged.count() == _set(union).count()
    out = StateWriter()
    merged.write(out)
    source = StateReader(bytes(out))
    assert DistinctSet.read(source).count() == merged.count()
    source.done()
    want = pd.Series(union).nunique()
    assert abs(merged.count() - want) <= 0.04 * max(want, 1)


def test_a_sparse_set_in_a_state_from_before_the_sparse_form_is_refused() -> None:
    out = StateWriter()
    _set([f"u{i}" for i in range(EXACT_UP_TO + 1)]).write(out)
    assert DistinctSet.read(StateReader(bytes(out))).count() == EXACT_UP_TO + 1
    with pytest.raises(ValueError, match="another kind"):
        DistinctSet.read(StateReader(bytes(out)), sparse=False)


def test_a_counter_restored_from_a_version_2_state_goes_sparse_at_its_switch() -> None:
    """A checkpoint written before the sparse sketch (version 2: the exact dict, no sketch)
    counts on as a new counter would: its 1,001st value is within 0.5 %."""
    out = StateWriter()
    out.uint(2)
    out.uint(EXACT_UP_TO)
    out.uint(1)
    out.sint(7)  # the newest key
    out.uint(0)  # no restart: the dict holds the window
    out.uint(EXACT_UP_TO)
    for i in range(EXACT_UP_TO):
        out.text(f"customer-{i}")
        out.sint(7)
    out.uint(0)  # no sketch
    source = StateReader(bytes(out))
    counter = SlidingDistinct.read(source, 10)
    source.done()
    assert counter.exact and counter.count() == EXACT_UP_TO
    counter.add(f"customer-{EXACT_UP_TO}", 8)
    assert counter.sparse and abs(counter.count() - 1001) <= 0.005 * 1001
