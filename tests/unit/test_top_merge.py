"""Merged Space-Saving summaries (`pushsvc.stats.top.MergedTop`), as series buckets merge their
finer buckets' top values: over any split of a stream into buckets and any order or tree of
merges, every counter within `[c, c + N/m]`, every value with `c > N/m` monitored, the top k
missing no value that beats the k-th listed count, exact while the values merged number at most
m and no bucket replaced one; and the state reads back as written."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pushsvc.stats.state_codec import StateReader, StateWriter
from pushsvc.stats.top import MergedTop, SpaceSaving


def _bucket(values: list[str], capacity: int) -> MergedTop:
    summary = SpaceSaving(capacity)
    for value in values:
        summary.add(value)
    return MergedTop.of(summary)


def _promise(merged: MergedTop, seen: Counter[str], k: int) -> None:
    n = sum(seen.values())
    assert merged.n == n
    excess = sum(count - merged.floor for count in merged.counts.values())
    assert excess + merged.capacity * merged.floor <= n  # hence floor <= N/m
    assert len(merged.counts) <= merged.capacity
    for value, count in seen.items():
        estimate = merged.counts.get(value)
        if estimate is None:
            assert count <= merged.floor
        else:
            assert count <= estimate <= count + merged.floor
    assert not set(merged.counts) - set(seen)
    listed = merged.top(k)
    assert listed == sorted(listed, key=lambda item: (-item[1], item[0]))
    names = {value for value, _ in listed}
    bar = listed[-1][1] if len(listed) == k else merged.error
    assert all(value in names for value, count in seen.items() if count > bar)


# Values skewed towards small numbers, so that some beat N/m and many do not.
_buckets = st.lists(
    st.lists(st.integers(0, 60).map(lambda v: f"v{v * v % 61}"), max_size=80), max_size=12
)


@settings(max_examples=300, deadline=None)
@given(_buckets, st.integers(1, 12), st.integers(1, 5), st.randoms(use_true_random=False))
def test_merging_buckets_in_any_order_keeps_the_bound_and_the_membership(
    buckets: list[list[str]], capacity: int, k: int, rng: random.Random
) -> None:
    parts = [(_bucket(values, capacity), Counter(values)) for values in buckets]
    for summary, seen in parts:
        _promise(summary, seen, k)
    # Merge random pairs until one is left (a tree, not only left to right).
    while len(parts) > 1:
        a = parts.pop(rng.randrange(len(parts)))
        b = parts.pop(rng.randrange(len(parts)))
        a[0].merge(b[0])
        joined = (a[0], a[1] + b[1])
        _promise(*joined, k)
        parts.append(joined)


@settings(max_examples=200, deadline=None)
@given(_buckets, st.integers(1, 12), st.integers(1, 5))
def test_merged_left_to_right_as_a_coarser_bucket_does(
    buckets: list[list[str]], capacity: int, k: int
) -> None:
    merged = MergedTop(capacity)
    seen: Counter[str] = Counter()
    replaced = False
    for values in buckets:
        part = _bucket(values, capacity)
        replaced |= not part.exact
        merged.merge(part)
        seen.update(values)
        _promise(merged, seen, k)
        if not replaced and len(seen) <= capacity:
            assert merged.exact and merged.counts == dict(seen)


def test_merging_past_m_values_raises_the_floor_to_the_next_estimate() -> None:
    a = _bucket(["a"] * 5 + ["b"] * 3 + ["c"], 3)
    b = _bucket(["a"] * 2 + ["d"] * 4 + ["e"], 3)
    assert a.exact and b.exact
    a.merge(b)
    # Estimates a 7, d 4, b 3, c 1, e 1: the 4th largest, 1, is the floor; c and e go. The
    # error each entry publishes is that floor, tighter than N/m (16 / 3).
    assert (a.counts, a.floor, a.n, a.error) == ({"a": 7, "d": 4, "b": 3}, 1, 16, 1)
    assert a.top(1) == [("a", 7)]


def test_a_floor_stands_in_for_a_value_the_other_summary_does_not_monitor() -> None:
    replaced = _bucket(["x", "y", "z", "x"], 2)  # z replaced y: {x: 2, z: 2}, floor 2
    assert (replaced.counts, replaced.floor) == ({"x": 2, "z": 2}, 2)
    exact = _bucket(["w", "x"], 2)
    exact.merge(replaced)
    assert (exact.counts, exact.floor) == ({"w": 3, "x": 3}, 2)
    assert exact.top(5) == [("w", 3), ("x", 3)]


@settings(max_examples=100, deadline=None)
@given(_buckets, st.integers(1, 12))
def test_the_state_reads_back_as_written(buckets: list[list[str]], capacity: int) -> None:
    merged = MergedTop(capacity)
    for values in buckets:
        merged.merge(_bucket(values, capacity))
    out = StateWriter()
    merged.write(out)
    source = StateReader(bytes(out))
    back = MergedTop.read(source, capacity)
    source.done()
    assert (back.counts, back.floor, back.n) == (merged.counts, merged.floor, merged.n)


@pytest.mark.parametrize(
    "fields",
    [
        [3, 2, 1, "a", 1],  # a counter below the floor
        [2, 0, 2, "a", 1, "a", 1],  # a value twice
        [3, 0, 3, "a", 1, "b", 1, "c", 1],  # more counters than m = 2
    ],
)
def test_a_bad_state_is_refused(fields: list[int | str]) -> None:
    out = StateWriter()
    for field in fields:
        if isinstance(field, str):
            out.text(field)
        else:
            out.uint(field)
    with pytest.raises(ValueError, match="top state"):
        MergedTop.read(StateReader(bytes(out)), 2)
