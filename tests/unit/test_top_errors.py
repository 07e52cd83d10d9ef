"""Each entry of an approximate top list carries its own error (docs/design.md, "Top
values"): how far its count may exceed the true one, the tightest bound the Space-Saving
counters know -- the sum of the floors of the sub-buckets in the window -- never more than
N/m (the bound every entry carried before). The oracle is pandas `value_counts`:
`count - error <= true <= count` for every listed value; the floors come from Space-Saving
summaries of each sub-bucket fed apart."""

from __future__ import annotations

import random
from typing import Any

import orjson
from hypothesis import event, given, settings
from hypothesis import strategies as st

from pushsvc.stats.tagged import TagSpec, TimeTags
from pushsvc.stats.top import BucketedTop, SpaceSaving, counters_for
from support.tag_oracle import Kind, frame, held, top_problems

S = 1_000_000
START = 1_700_000_000 * S
MINUTE = 60 * S  # sub-buckets of a second


def _floors(rows: list[tuple[int, str]], first: int, step: int, m: int) -> int:
    """The sum of the floors of the sub-buckets from `first` on, each a Space-Saving summary
    of its events in arrival order."""
    subs: dict[int, SpaceSaving] = {}
    for ts, value in rows:
        b = (ts - 1) // step
        if b >= first:
            subs.setdefault(b, SpaceSaving(m)).add(value)
    return sum(sub.floor for sub in subs.values())


@settings(max_examples=20)
@given(
    seconds=st.integers(1, 2),
    events=st.integers(2_500, 5_000),
    values=st.integers(3_000, 10_000),
    skew=st.floats(1.0, 2.0),
    k=st.integers(1, 60),
    later=st.integers(0, 62),
    seed=st.integers(0, 2**32),
)
def test_each_listed_count_is_within_its_own_error_of_value_counts(
    seconds: int, events: int, values: int, skew: float, k: int, later: int, seed: int
) -> None:
    """More different values a second than a sub-bucket's m counters, skewed so that some
    lead, then one event `later` seconds on (past 60, the first sub-buckets have left the
    1m window): each entry's error is the sum of the floors of the sub-buckets still in the
    window, at most N/m, and the true count lies within it."""
    rng = random.Random(seed)
    tags = TimeTags((MINUTE,), ("1m",), TagSpec((), (("product", k),)))
    rows = []
    for i in range(events):
        ts = START + 1 + i * (seconds * S) // events
        rows.append((ts, f"p{int(values * rng.random() ** skew)}"))
    rows.append((START + later * S + 1, "p0"))
    clock = START
    for ts, value in rows:
        clock = max(clock, ts)
        tags.insert(ts, {"product": value}, clock)
    windows: dict[str, dict[str, object]] = {"1m": {}}
    tags.fill(windows)
    entries: list[dict[str, Any]] = orjson.loads(orjson.dumps(windows))["1m"]["top_product"]
    data = frame([(ts, {"product": value}) for ts, value in rows], ("product",))
    inside = held(data, clock, Kind("1m", MINUTE, long=True))
    assert not top_problems(entries, inside, "product", k)
    m = counters_for(k)
    step = MINUTE // 60
    floors = _floors(rows, (clock - MINUTE) // step, step, m)
    event("approximate" if floors else "exact")
    true = inside["product"].value_counts()
    assert entries
    for entry in entries:
        if floors:
            assert entry["error"] == floors <= len(inside) / m
            assert entry["count"] - entry["error"] <= true.get(entry["value"], 0)
        else:
            assert "error" not in entry
        assert true.get(entry["value"], 0) <= entry["count"]


_steps = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(0, 40), st.integers(0, 3)),
        st.tuples(st.just("next"), st.just(0), st.just(0)),
    ),
    max_size=400,
)


@settings(max_examples=200)
@given(_steps, st.integers(1, 6), st.integers(1, 4))
def test_a_windows_error_is_the_sum_of_its_sub_buckets_floors(
    steps: list[tuple[str, int, int]], capacity: int, span: int
) -> None:
    """Few counters, so that floors rise, and sub-buckets leave (`next`): after every step
    the error is the floors of the sub-buckets in the window, fed apart, and bounds every
    listed count's excess."""
    window = BucketedTop(capacity)
    rows: list[tuple[int, str]] = []
    now = 0
    for kind, v, back in steps:
        if kind == "next":
            now += 1
            window.evict(now - span + 1)
        else:
            bucket = now - back
            if bucket < now - span + 1:
                continue
            value = f"v{v % (1 + v // 4)}"
            window.add(bucket, value)
            rows.append((bucket + 1, value))  # a sub-bucket of one: b = ts - 1
        first = now - span + 1
        inside = [value for ts, value in rows if ts - 1 >= first]
        assert window.error == _floors(rows, first, 1, capacity) <= len(inside) / capacity
        assert window.exact == (window.error == 0)
        for value, count in window.top(5):
            assert count - window.error <= inside.count(value) <= count
