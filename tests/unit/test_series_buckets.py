"""Series buckets against pandas: every point of every tier is `resample(resolution)` of the
events in it (percentiles: the finest tier exactly pandas' linear quantile, coarser tiers within
1 %), closed exactly when the clock passes its end plus the lateness; a state restored from
`durable_state` and replayed continues exactly as an uninterrupted run; tiers are validated; the
memory store and the `auto` planner keep their bounds."""

from __future__ import annotations

import itertools
import math
import random

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pushsvc.rules.point import Point
from pushsvc.rules.tiers import SeriesTier, parse_tiers
from pushsvc.series.buckets import SeriesBuckets
from pushsvc.series.plan import plan_segments
from pushsvc.series.store import SeriesStore

S = 1_000_000
LATENESS = 5 * S
T0 = 1_763_700_000 * S + 123_456


def _run(
    series: SeriesBuckets, events: list[tuple[int, float]], clock: int | None = None
) -> tuple[list[tuple[str, Point]], int | None]:
    """Feed events as the aggregator does (the clock is the largest time so far; a bucket
    closes when the clock passes its end plus the lateness)."""
    out = []
    for ts, value in events:
        clock = ts if clock is None else max(clock, ts)
        series.insert(ts, value)
        if clock >= series.next_close_us:
            out += series.close(clock)
    return out, clock


def _events(draw: st.DrawFn) -> list[tuple[int, float]]:
    clock = T0
    events = []
    for step, late, value in draw(
        st.lists(
            st.tuples(
                st.integers(0, 90 * S),
                st.integers(0, LATENESS),
                st.floats(-1e6, 1e6, allow_nan=False, allow_subnormal=False),
            ),
            min_size=1,
            max_size=300,
        )
    ):
        clock += step if step > 30 * S else step // 20  # mostly dense, sometimes a gap
        ts = clock - late if late < LATENESS // 2 else clock
        events.append((ts, value))
    return events


events_strategy = st.composite(_events)


def _pandas(events: list[tuple[int, float]], resolution: str) -> pd.DataFrame:
    series = pd.Series(
        [v for _, v in events], index=pd.to_datetime([t for t, _ in events], unit="us", utc=True)
    ).sort_index(kind="stable")
    table = series.resample(resolution).agg(["count", "sum", "mean", "min", "max", "var", "std"])
    table["p50"] = series.resample(resolution).quantile(0.5)
    table["p90"] = series.resample(resolution).quantile(0.9)
    table["p99"] = series.resample(resolution).quantile(0.99)
    return table[table["count"] > 0]


def _check(points: list[Point], want: pd.DataFrame, *, exact_quantiles: bool) -> None:
    assert [p.t_us for p in points] == list(want.index.as_unit("us").asi8)
    for point, (_, row) in zip(points, want.iterrows(), strict=True):
        assert point.count == row["count"]
        scale = max(abs(row["min"]), abs(row["max"]), 1.0) * point.count
        assert point.sum == pytest.approx(row["sum"], rel=1e-12, abs=1e-12 * scale)
        assert point.mean == pytest.approx(row["mean"], rel=1e-12, abs=1e-12 * scale)
        assert (point.min, point.max) == (row["min"], row["max"])
        if point.count == 1:
            assert point.var is None and point.fields(1_000_000)["stddev"] is None
        else:
            assert point.var == pytest.approx(row["var"], rel=1e-9, abs=1e-9 * scale * scale)
        for name in ("p50", "p90", "p99"):
            ours, exact = getattr(point, name), row[name]
            if exact_quantiles:
                assert ours == exact
            else:
                assert abs(ours - exact) <= 0.01 * abs(exact) + 1e-12 or _straddles_zero(row)


def _straddles_zero(row: pd.Series) -> bool:
    # The sketch's bound is relative to the neighbours' magnitudes when a quantile falls
    # between a negative and a positive value (pushsvc.stats.sketch's module doc).
    return bool(row["min"] < 0 < row["max"])


@pytest.mark.parametrize("tiers", ["1s:15m,1m:24h", "10s:1h,1m:6h,1h:1d", "1m:1d"], ids=lambda t: t)
@settings(max_examples=40, deadline=None)
@given(events=events_strategy())
def test_every_point_is_pandas_resample(tiers: str, events: list[tuple[int, float]]) -> None:
    parsed = parse_tiers(tiers)
    series = SeriesBuckets(parsed, LATENESS)
    closed, clock = _run(series, events)
    assert clock is not None
    for index, tier in enumerate(parsed):
        label = tier.resolution_label
        points = [p for lab, p in closed if lab == label]
        want = _pandas(events, f"{tier.resolution_us // S}s")
        done = want.index.as_unit("us").asi8 + tier.resolution_us + LATENESS <= clock
        _check(points, want[done], exact_quantiles=index == 0)
    # Closing is ordered: the finest tier first, each ascending.
    labels = [lab for lab, _ in closed]
    assert len(set(labels)) <= len(parsed)


def test_a_bucket_closes_when_the_clock_passes_its_end_plus_the_lateness() -> None:
    series = SeriesBuckets(parse_tiers("1s:1m,1m:1h"), LATENESS)
    start = T0 - T0 % S
    series.insert(start + 10, 1.0)
    series.insert(start + 20, 3.0)
    assert series.next_close_us == start + S + LATENESS
    assert series.close(start + S + LATENESS - 1) == []
    closed = series.close(start + S + LATENESS)
    assert [(label, p.t_us, p.count, p.sum) for label, p in closed] == [("1s", start, 2, 4.0)]
    minute = start - start % (60 * S)
    assert series.next_close_us == minute + 60 * S + LATENESS
    # An idle clock (a tick) closes the minute with the second it holds.
    closed = series.close(minute + 60 * S + LATENESS)
    assert [(label, p.t_us, p.count) for label, p in closed] == [("1m", minute, 2)]
    assert len(series) == 0 and series.oldest_open_us is None


@settings(max_examples=60, deadline=None)
@given(events=events_strategy(), cut=st.floats(0, 1))
def test_a_restored_state_replayed_continues_exactly(
    events: list[tuple[int, float]], cut: float
) -> None:
    tiers = parse_tiers("1s:15m,10s:1h,1m:24h")
    at = int(len(events) * cut)
    running = SeriesBuckets(tiers, LATENESS)
    _, clock = _run(running, events[:at])
    saved = running.durable_state()
    after, _ = _run(running, events[at:], clock)
    cold = SeriesBuckets.restored(tiers, LATENESS, saved)
    for ts, value in events[:at]:  # the log's entries up to the checkpoint
        cold.replayed(ts, value)
    again, _ = _run(cold, events[at:], clock)
    assert [(lab, p.t_us, p.packed()) for lab, p in again] == [
        (lab, p.t_us, p.packed()) for lab, p in after
    ]


def test_points_pack_and_unpack_exactly() -> None:
    point = Point(T0, 3, 6.5, 6.5 / 3, -1.0, 5.25, None, 1.0, 4.0, 5.2)
    back = Point.unpacked(T0, point.packed())
    assert back == point and back.fields(1_000_000)["var"] is None
    fields = Point(T0, 2, 2.0, 1.0, 0.0, 2.0, 2.0, 1.0, 1.8, 1.98).fields(1_000_000)
    assert fields["stddev"] == math.sqrt(2.0) and fields["t"] == T0 / S


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2s:15m,7s:1h", "whole multiple"),
        ("1s:15m,1s:1h", "given twice"),
        ("1m:30s", "less than one bucket"),
        ("500ms:1m", ">= 1s"),
        ("1m", "resolution:retention"),
        ("1m:1h,", "resolution:retention"),
        ("1m:soon", "1m:soon"),
        ("1s:1m,2s:1m,4s:1m,8s:1m,16s:1m,32s:1m,64s:1h", "at most 6"),
    ],
)
def test_bad_tiers_are_one_clear_line(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as raised:
        parse_tiers(text)
    assert "\n" not in str(raised.value)


def test_tiers_parse_finest_first_and_none_is_none() -> None:
    assert parse_tiers("1m:24h, 1s:15m") == (
        SeriesTier(S, 15 * 60 * S),
        SeriesTier(60 * S, 24 * 3600 * S),
    )
    assert parse_tiers("none") == ()


def test_the_store_keeps_order_trims_and_reads_bounds() -> None:
    store = SeriesStore()
    packed = Point(0, 1, 1.0, 1.0, 1.0, 1.0, None, 1.0, 1.0, 1.0).packed()
    for t in (10, 20, 30, 40):
        assert store.append("k", t, packed)
    assert not store.append("k", 40, packed) and not store.append("k", 20, packed)
    assert store.read("k", 20, 40, 10) == ([(20, packed), (30, packed)], False)
    assert store.read("k", 0, 100, 2) == ([(10, packed), (20, packed)], True)
    store.trim("k", 20)
    assert [t for t, _ in store.read("k", 0, 100, 10)[0]] == [30, 40]
    assert store.bytes_used() == 2 * 80
    store.trim("k", 40)
    assert len(store) == 0 and store.read("k", 0, 100, 10) == ([], False)


def test_the_store_inserts_a_late_bucket_and_replaces_a_point_by_a_later_revision() -> None:
    store = SeriesStore()

    def packed(count: int) -> bytes:
        return Point(0, count, 1.0, 1.0, 1.0, 1.0, None, 1.0, 1.0, 1.0).packed()

    for t in (10, 30, 40):
        assert store.append("k", t, packed(1))
    # A late event's bucket, published after later ones: in its place, once.
    assert store.append("k", 20, packed(2)) and not store.append("k", 20, packed(2))
    # A correction replaces the point of its start, once per revision, never an older one.
    assert store.append("k", 30, packed(3), revision=1)
    assert not store.append("k", 30, packed(9), revision=1)
    assert not store.append("k", 30, packed(9))
    assert store.append("k", 30, packed(4), revision=2)
    assert not store.append("k", 30, packed(9), revision=1)
    assert store.read("k", 0, 100, 10) == (
        [(10, packed(1)), (20, packed(2)), (30, packed(4)), (40, packed(1))],
        False,
    )
    # Of another size (top lists vary): the series turns to variable-size records.
    bigger = packed(5) + b"[]" + bytes([2, 0, 0, 0]) + b"\xff" * 4
    assert store.append("k", 20, bigger, revision=1) and store.append("k", 15, bigger)
    assert [p for _, p in store.read("k", 0, 100, 10)[0]] == [
        packed(1), bigger, bigger, packed(4), packed(1)
    ]  # fmt: skip
    store.trim("k", 30)
    assert store.read("k", 0, 100, 10) == ([(40, packed(1))], False)
    assert store.append("k", 40, packed(6), revision=1)
    assert store.read("k", 0, 100, 10) == ([(40, packed(6))], False)


def test_auto_takes_the_coarsest_tier_giving_half_the_points_and_fills_the_recent_part() -> None:
    tiers = parse_tiers("1s:15m,1m:24h,1h:30d")
    clock = 1_763_700_000 * S
    hour = 3600 * S
    # 6 hours, 300 points wanted: 1h gives 6 (< 150), 1m gives 360: the minute tier.
    segments = plan_segments(tiers, clock - 6 * hour, clock + 1, clock, 300, LATENESS)
    assert [t.resolution_label for t, _, _ in segments] == ["1m", "1s"]
    assert segments[0][1] == clock - 6 * hour and segments[-1][2] == clock + 1
    assert segments[0][2] == segments[1][1] == (clock - LATENESS) - (clock - LATENESS) % (60 * S)
    # 30 days, 300 points: the hour tier (720), then minutes, then seconds.
    long = plan_segments(tiers, clock - 720 * hour, clock + 1, clock, 300, LATENESS)
    assert [t.resolution_label for t, _, _ in long] == ["1h", "1m", "1s"]
    assert all(a[2] == b[1] for a, b in itertools.pairwise(long))
    # Nothing coarse enough: the finest tier alone; no data: the finest tier.
    short = plan_segments(tiers, clock - 60 * S, clock + 1, clock, 300, LATENESS)
    assert [t.resolution_label for t, _, _ in short] == ["1s"]
    assert plan_segments(tiers, 0, 10, None, 300, LATENESS) == [(tiers[0], 0, 10)]
    assert plan_segments((), 0, 10, clock, 300, LATENESS) == []


def _tagged_events(
    n: int, users: int, seed: int, steps: tuple[int, ...] = (0, 1, 7_000, 40_000, 3 * S)
) -> list[tuple[int, float, dict[str, str] | None]]:
    rng = random.Random(seed)
    clock = T0
    out: list[tuple[int, float, dict[str, str] | None]] = []
    for _ in range(n):
        clock += rng.choice(steps)
        ts = clock - rng.choice([0, 0, 0, 2 * S])  # some late, within the lateness
        tags = None if rng.random() < 0.05 else {"user": f"u{rng.randrange(users)}"}
        out.append((ts, 1.0, tags))
    return out


@pytest.mark.parametrize(
    ("n", "users", "steps"), [(3000, 40, (0, 1, 7_000, 40_000, 3 * S)), (60_000, 100_000, (3000,))]
)
def test_distinct_counts_per_bucket_are_pandas_nunique(
    n: int, users: int, steps: tuple[int, ...]
) -> None:
    """Each point of each tier counts the different users of its bucket: exactly when there
    are at most 1,000 (the finest tier, and coarser ones merged from it), within 4 % beyond
    (60,000 events over 3 minutes: a HyperLogLog per 10 s bucket, merged into each minute)."""
    tiers = parse_tiers("10s:1h,1m:1d")
    series = SeriesBuckets(tiers, LATENESS, ("user",))
    events = _tagged_events(n, users, seed=n, steps=steps)
    closed: list[tuple[str, Point]] = []
    clock = None
    for ts, value, tags in events:
        clock = ts if clock is None else max(clock, ts)
        series.insert(ts, value, tags)
        if clock >= series.next_close_us:
            closed += series.close(clock)
    assert clock is not None
    closed += series.close(clock + 3600 * S)
    frame = pd.DataFrame(
        {"user": [(t or {}).get("user") for _, _, t in events]},
        index=pd.to_datetime([ts for ts, _, _ in events], unit="us", utc=True),
    )
    sketched = 0
    for label, resolution in (("10s", "10s"), ("1m", "1min")):
        want = frame["user"].resample(resolution).nunique()
        counts = frame["user"].resample(resolution).size()
        want = want[counts > 0]
        points = [p for lab, p in closed if lab == label]
        assert [p.t_us for p in points] == list(want.index.as_unit("us").asi8)
        for point, expected in zip(points, want, strict=True):
            ((tag, got),) = point.distinct
            assert tag == "user"
            if expected <= 1000:
                assert got == expected, (label, point.t_us)
            else:
                assert abs(got - expected) <= 0.04 * expected, (label, got, expected)
                sketched += 1
            assert point.fields(1_000_000)["distinct_user"] == got
            # The stored form carries it.
            assert Point.unpacked(point.t_us, point.packed(), ("user",)) == point
    assert sketched or users < 1000


def test_distinct_series_state_round_trips() -> None:
    tiers = parse_tiers("10s:1h,1m:1d")
    events = _tagged_events(4000, 3000, seed=5)
    whole = SeriesBuckets(tiers, LATENESS, ("user",))
    points: list[tuple[str, Point]] = []
    restored_points: list[tuple[str, Point]] = []
    clock = None
    half = len(events) // 2
    copy: SeriesBuckets | None = None
    for i, (ts, value, tags) in enumerate(events):
        clock = ts if clock is None else max(clock, ts)
        whole.insert(ts, value, tags)
        if copy is not None:
            copy.insert(ts, value, tags)
        if clock >= whole.next_close_us:
            got = whole.close(clock)
            points += got
            if copy is not None:
                restored_points += copy.close(clock)
        if i == half:
            copy = SeriesBuckets.restored(tiers, LATENESS, whole.durable_state(), ("user",))
            for ts2, value2, tags2 in events[: half + 1]:
                copy.replayed(ts2, value2, tags2)
            mark = len(points)
    assert restored_points and restored_points == points[mark:]
