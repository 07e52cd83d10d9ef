"""Top values in series points: each bucket's `top_<tag>` against pandas' `value_counts` of its
events (exact up to m = max(1000, 20 k) different values, within `[c, c + N/m]` and missing no
value that beats the k-th listed count beyond), in the finest tier and in coarser tiers merged
from it; the stored form (points without top lists byte for byte as before, lists read by
tag); the memory store's variable-size records; and the series state: version 3 carries the
summaries (5 with distinct sets that may be sparse), and states of versions 1 and 2 (written
before top values) still restore."""

from __future__ import annotations

import random
import struct
from typing import Any

import pandas as pd
import pytest

from pushsvc.rules.point import PACKED_SIZE, Point, TopList
from pushsvc.rules.tiers import parse_tiers
from pushsvc.series.buckets import SeriesBuckets
from pushsvc.series.store import SeriesStore
from support.tag_oracle import top_problems

S = 1_000_000
LATENESS = 5 * S
T0 = 1_763_700_000 * S
Events = list[tuple[int, float, dict[str, str] | None]]


def _events(n: int, seed: int, values: int, steps: tuple[int, ...]) -> Events:
    """Products skewed (a few frequent, a long tail), some events late within the lateness,
    some without the tag."""
    rng = random.Random(seed)
    clock = T0 + 123_456
    out: Events = []
    for _ in range(n):
        clock += rng.choice(steps)
        ts = clock - rng.choice([0, 0, 0, 2 * S])
        roll = rng.random()
        if roll < 0.05:
            tags = None
        elif roll < 0.4:
            tags = {"product": f"hot{rng.randrange(8)}", "user": "u"}
        else:
            tags = {"product": f"p{rng.randrange(values)}", "user": "u"}
        out.append((ts, 1.0, tags))
    return out


def _feed(series: SeriesBuckets, events: Events, clock: int | None = None) -> Any:
    """As the aggregator does: the clock is the largest time so far; buckets close as it
    passes their end plus the lateness. The points closed, and the clock."""
    closed = []
    for ts, value, tags in events:
        clock = ts if clock is None else max(clock, ts)
        series.insert(ts, value, tags)
        if clock >= series.next_close_us:
            closed += series.close(clock)
    return closed, clock


def _run(series: SeriesBuckets, events: Events, clock: int | None = None) -> list[Any]:
    """Fed, then every bucket closed."""
    closed, clock = _feed(series, events, clock)
    assert clock is not None
    return [*closed, *series.close(clock + 3600 * S)]


def _check_tiers(closed: list[tuple[str, Point]], events: Events, k: int) -> int:
    """Every point's top list against pandas, per tier; how many were approximate."""
    frame = pd.DataFrame(
        {"product": [(t or {}).get("product") for _, _, t in events]},
        index=pd.to_datetime([ts for ts, _, _ in events], unit="us", utc=True),
    )
    approximate = 0
    for label, rule in (("10s", "10s"), ("1m", "1min")):
        points = [p for lab, p in closed if lab == label]
        sizes = frame["product"].resample(rule).size()
        starts = list(sizes[sizes > 0].index.as_unit("us").asi8)
        assert [p.t_us for p in points] == starts
        for point in points:
            start = pd.Timestamp(point.t_us, unit="us", tz="UTC")
            rows = frame[(frame.index >= start) & (frame.index < start + pd.Timedelta(rule))]
            rows = rows.reset_index(drop=True)
            got = point.fields(1_000_000)["top_product"]
            assert top_problems(got, rows, "product", k) == [], (label, point.t_us)
            approximate += any("error" in entry for entry in got)
            # The stored form carries it, read by tag.
            assert Point.unpacked(point.t_us, point.packed(), ("user",), ("product",)) == point
    return approximate


def test_top_values_per_bucket_are_pandas_value_counts_below_the_threshold() -> None:
    tiers = parse_tiers("10s:1h,1m:1d")
    series = SeriesBuckets(tiers, LATENESS, ("user",), (("product", 3),))
    events = _events(3000, seed=1, values=40, steps=(0, 1, 7_000, 40_000, 3 * S))
    closed = _run(series, events)
    assert _check_tiers(closed, events, 3) == 0


def test_beyond_m_values_a_bucket_keeps_the_bound_and_the_membership() -> None:
    """60,000 events over 2 minutes, 4,000 products besides eight frequent ones: each 10 s
    bucket holds about 2,000 of them, more than m = 1,000 (Space-Saving), and each minute
    merges six such buckets."""
    tiers = parse_tiers("10s:1h,1m:1d")
    series = SeriesBuckets(tiers, LATENESS, ("user",), (("product", 10),))
    events = _events(60_000, seed=2, values=4000, steps=(2_000,))
    closed = _run(series, events)
    assert _check_tiers(closed, events, 10) >= 14
    fullest = max((p for label, p in closed if label == "1m"), key=lambda p: p.count)
    (listed,) = fullest.top
    assert listed.error is not None and listed.entries[0][0].startswith("hot")


def test_points_without_top_lists_pack_as_before() -> None:
    point = Point(T0, 3, 6.5, 6.5 / 3, -1.0, 5.25, None, 1.0, 4.0, 5.2, (("user", 2),))
    head = struct.pack("<q8d", 3, 6.5, 6.5 / 3, -1.0, 5.25, float("nan"), 1.0, 4.0, 5.2)
    assert point.packed() == head + struct.pack("<q", 2)
    assert len(Point(T0, 1, 1.0, 1.0, 1.0, 1.0, None, 1.0, 1.0, 1.0).packed()) == PACKED_SIZE
    # Read with top tags that the point was stored without: none.
    assert Point.unpacked(T0, point.packed(), ("user",), ("product",)) == point


def test_top_lists_follow_the_counts_and_are_read_by_tag() -> None:
    lists = (
        TopList("product", (("tea", 5), ("cake", 2))),
        TopList("city", (("Zürich", 9),), 1.5),
    )
    point = Point(T0, 7, 7.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, (("user", 4),), lists)
    data = point.packed()
    without = Point(T0, 7, 7.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, (("user", 4),)).packed()
    section = data[len(without) : -8]
    assert data.startswith(without)
    assert data[-8:] == struct.pack("<I", len(section)) + b"\xff" * 4
    assert Point.unpacked(T0, data, ("user",), ("product", "city")) == point
    assert point.fields(1_000_000)["top_city"] == [{"value": "Zürich", "count": 9, "error": 1.5}]
    assert point.fields(1_000_000)["top_product"][0] == {"value": "tea", "count": 5}
    # The rule's order, tags it no longer names left out, the head alone for a reader of it.
    assert Point.unpacked(T0, data, ("user",), ("city",)).top == (lists[1],)
    assert Point.unpacked(T0, data, ("user",), ("city", "product")).top == (lists[1], lists[0])
    head_only = Point.unpacked(T0, data)
    assert head_only.top == () and head_only.distinct == () and head_only.count == 7
    # A distinct tag the rule added since: no count for it, the list still found.
    more = Point.unpacked(T0, data, ("user", "country"), ("product",))
    assert more.distinct == (("user", 4),) and more.top == (lists[0],)


def test_the_store_turns_to_variable_size_records_at_the_first_point_of_another_size() -> None:
    store = SeriesStore()

    def packed(n: int) -> bytes:
        listed = (TopList("product", tuple((f"v{i}", 10 - i) for i in range(n))),)
        return Point(0, 1, 1.0, 1.0, 1.0, 1.0, None, 1.0, 1.0, 1.0, (), listed).packed()

    plain = Point(0, 1, 1.0, 1.0, 1.0, 1.0, None, 1.0, 1.0, 1.0).packed()
    assert store.append("k", 10, plain) and store.append("k", 20, plain)
    assert store.bytes_used() == 2 * 80
    sizes = {30: packed(1), 40: packed(3), 50: packed(0), 60: packed(2)}
    for t, data in sizes.items():
        assert store.append("k", t, data)
    assert not store.append("k", 60, packed(1)) and not store.append("k", 20, plain)
    whole = [(10, plain), (20, plain), *sizes.items()]
    assert store.read("k", 0, 100, 100) == (whole, False)
    assert store.read("k", 20, 50, 100) == (whole[1:4], False)
    assert store.read("k", 0, 100, 3) == (whole[:3], True)
    assert store.bytes_used() == sum(16 + len(data) for _, data in whole)
    store.trim("k", 30)
    assert store.read("k", 0, 100, 100) == (whole[3:], False)
    assert store.read("k", 45, 100, 1) == ([whole[4]], True)
    assert store.append("k", 70, plain)
    assert store.read("k", 65, 100, 100) == ([(70, plain)], False)
    store.trim("k", 70)
    assert len(store) == 0 and store.read("k", 0, 100, 10) == ([], False)


def _replayed_run(
    tags: tuple[tuple[str, ...], tuple[tuple[str, int], ...]],
    saved: bytes,
    events: Events,
    at: int,
) -> list[Any]:
    tiers = parse_tiers("10s:1h,1m:1d")
    cold = SeriesBuckets.restored(tiers, LATENESS, saved, *tags)
    for ts, value, event_tags in events[:at]:
        cold.replayed(ts, value, event_tags)
    clock = max(ts for ts, _, _ in events[:at])
    return _run(cold, events[at:], clock)


@pytest.mark.parametrize(("values", "k"), [(40, 3), (4000, 10)], ids=["exact", "space-saving"])
def test_a_restored_state_with_top_values_continues_exactly(values: int, k: int) -> None:
    tiers = parse_tiers("10s:1h,1m:1d")
    tags = (("user",), (("product", k),))
    events = _events(12_000, seed=3, values=values, steps=(9_000,))
    at = 7_777
    running = SeriesBuckets(tiers, LATENESS, *tags)
    _, clock = _feed(running, events[:at])
    saved = running.durable_state()
    assert saved[0] == 5  # the version that carries top values and sparse distinct sets
    after = _run(running, events[at:], clock)
    again = _replayed_run(tags, saved, events, at)
    assert [(lab, p.t_us, p.packed()) for lab, p in again] == [
        (lab, p.t_us, p.packed()) for lab, p in after
    ]
    assert any(p.top[0].entries for _, p in after)


# Series states written before top values (by the code of that time): tiers 1s:1m,1m:1h, four
# one-second buckets of events 0.0 .. 3.0 (users u0 u1 u2 u0) merged into the open minute.
_V1 = bytes.fromhex(
    "0180f1b688ed84a2060180a0ecffec84a206040000000000001840000000000000f83f00000000000014400000"
    "0000000000000000000000000840010042000042380100000000000000000000000000000000000000000000"
    "000000000000000000000000010000000000000000000000000000000000000001"
)
_V2 = _V1[:1].replace(b"\x01", b"\x02") + _V1[1:] + bytes.fromhex("0003027530027531027532")


@pytest.mark.parametrize(
    ("state", "distinct"), [(_V1, ()), (_V1, ("user",)), (_V2, ("user",))], ids=["v1", "v1+", "v2"]
)
def test_states_from_before_top_values_restore(state: bytes, distinct: tuple[str, ...]) -> None:
    """The open minute comes back with its count and sum (and distinct users where the state
    has them); its top values count only the events from the restore on."""
    tiers = parse_tiers("1s:1m,1m:1h")
    series = SeriesBuckets.restored(tiers, LATENESS, state, distinct, (("product", 2),))
    minute = T0 - T0 % (60 * S)
    for i in range(4, 10):
        series.replayed(T0 + i * S, float(i), {"user": f"u{i % 3}", "product": f"p{i % 4}"})
    closed = series.close(minute + 60 * S + LATENESS)
    point = next(p for label, p in closed if label == "1m")
    assert (point.count, point.sum) == (10, 45.0)
    if state is _V2:
        assert point.distinct == (("user", 3),)
    # Events 4..9 only: p0 p1 p2 p3 p0 p1.
    assert point.fields(1_000_000)["top_product"] == [
        {"value": "p0", "count": 2},
        {"value": "p1", "count": 2},
    ]
    assert series.durable_state()[0] == (5 if distinct else 3)


def test_a_version_3_state_needs_top_tags() -> None:
    tiers = parse_tiers("1s:1m,1m:1h")
    series = SeriesBuckets(tiers, LATENESS, (), (("product", 2),))
    with pytest.raises(ValueError, match="version 3"):
        SeriesBuckets.restored(tiers, LATENESS, series.durable_state(), ("user",))


def test_a_state_whose_open_minute_counts_users_with_a_sketch_restores() -> None:
    """Beyond 1,000 users an open bucket's distinct count is a HyperLogLog (sparse at these
    2,750 users): written and read back as it is, with the top values after it."""
    tiers = parse_tiers("1s:15m,1m:24h")
    tags = (("user",), (("product", 10),))
    running = SeriesBuckets(tiers, LATENESS, *tags)
    rng = random.Random(4)
    second = T0 + 30 * S
    events = [
        (second + i * 250, 1.0, {"user": f"u{rng.randrange(5000)}", "product": "p"})
        for i in range(4000)
    ]
    events.append((second + 7 * S, 1.0, {"user": "u", "product": "p"}))
    for ts, value, event_tags in events:
        running.insert(ts, value, event_tags)
    running.close(second + 7 * S)
    saved = running.durable_state()
    cold = SeriesBuckets.restored(tiers, LATENESS, saved, *tags)
    assert cold.durable_state() == saved
    for ts, value, event_tags in events:  # the log: all but the last second's are merged
        cold.replayed(ts, value, event_tags)
    (want,) = [p for label, p in running.close(T0 + 3600 * S) if label == "1m"]
    (got,) = [p for label, p in cold.close(T0 + 3600 * S) if label == "1m"]
    users = len({t["user"] for _, _, t in events})
    assert got == want and abs(got.distinct[0][1] - users) < 0.04 * users
