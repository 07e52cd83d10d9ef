"""Series corrections against pandas: buckets are published at the lateness and kept until the
grace; a late event within the grace into a published bucket makes its point (and the coarser
points over it) be published again, one revision more, coalesced per second of the clock; the
last revision of every bucket of every tier equals pandas' `resample` of every accepted event
(finest tier exact, coarser percentiles within 1 %), and a state restored from
`durable_state` mid-way and replayed publishes the same points and corrections as an
uninterrupted run."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pushsvc.rules.point import Point
from pushsvc.rules.tiers import parse_tiers
from pushsvc.series.buckets import CORRECTION_STEP_US, SeriesBuckets

S = 1_000_000
LATENESS = 2 * S
GRACE = 40 * S
TIERS = parse_tiers("1s:1h,10s:1h,1m:1d")
T0 = 1_763_700_000 * S + 250_000
Published = list[tuple[str, Point, int]]


@st.composite
def streams(draw: st.DrawFn) -> list[tuple[int, float]]:
    """Events in posting order: mostly on time, late within the grace at every distance,
    ties with an earlier event's time; none past the grace (the broker keeps those out)."""
    clock = T0
    seen = [T0]
    events = [(T0, draw(st.integers(-5, 5).map(float)))]
    for _ in range(draw(st.integers(1, 120))):
        kind = draw(st.sampled_from(["next", "next", "next", "late", "late", "tie", "edge"]))
        if kind == "next":
            ts = clock + draw(st.sampled_from([1, S // 3, S, 3 * S, 12 * S, 70 * S]))
        elif kind == "late":
            ts = clock - draw(st.integers(1, GRACE))
        elif kind == "edge":
            ts = clock - GRACE
        else:
            ts = draw(st.sampled_from(seen))
            if ts < clock - GRACE:
                ts = clock
        value = draw(st.integers(-5, 5).map(float) | st.floats(-1e6, 1e6, allow_nan=False))
        events.append((ts, value))
        seen.append(ts)
        clock = max(clock, ts)
    return events


def _feed(
    series: SeriesBuckets, events: list[tuple[int, float]], clock: int | None = None
) -> tuple[Published, int | None]:
    """As the aggregator: the clock is the largest time so far; what is due closes after
    each event."""
    out: Published = []
    for ts, value in events:
        assert clock is None or ts >= clock - GRACE
        clock = ts if clock is None else max(clock, ts)
        series.insert(ts, value)
        if clock >= series.next_close_us:
            out += series.closed(clock)
    return out, clock


def _last(published: Published) -> dict[tuple[str, int], Point]:
    """The last revision of each bucket, checking that revisions go 0, 1, 2... once each."""
    revisions: dict[tuple[str, int], int] = {}
    last: dict[tuple[str, int], Point] = {}
    for label, point, revision in published:
        key = (label, point.t_us)
        assert revision == revisions.get(key, -1) + 1, (key, revision)
        revisions[key] = revision
        last[key] = point
    return last


def _check_against_pandas(
    events: list[tuple[int, float]], last: dict[tuple[str, int], Point]
) -> None:
    frame = pd.Series(
        [v for _, v in events], index=pd.to_datetime([t for t, _ in events], unit="us")
    ).sort_index(kind="stable")
    for tier in TIERS:
        rule = f"{tier.resolution_us}us"
        table = frame.resample(rule).agg(["count", "sum", "min", "max", "var"])
        table = table[table["count"] > 0]
        starts = [int(t) for t in table.index.as_unit("us").asi8]
        got = sorted(t for label, t in last if label == tier.resolution_label)
        assert got == starts, tier.resolution_label
        for start, row in zip(starts, table.itertuples(), strict=True):
            point = last[(tier.resolution_label, start)]
            assert point.count == row.count
            assert point.sum == pytest.approx(row.sum, rel=1e-9, abs=1e-6)
            assert (point.min, point.max) == (row.min, row.max)
            if row.count > 1:
                assert point.var == pytest.approx(row.var, rel=1e-6, abs=1e-3)
            else:
                assert point.var is None
            values = frame[(frame.index.as_unit("us").asi8 >= start)]
            values = values[values.index.as_unit("us").asi8 < start + tier.resolution_us]
            for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
                got_q = getattr(point, name)
                if tier is TIERS[0]:
                    exact = float(values.quantile(q))
                    assert math.isclose(got_q, exact, rel_tol=1e-12, abs_tol=1e-9), name
                else:
                    # The sketch: within 1 % of the order statistics around the quantile
                    # (pandas' linear interpolation lies between them).
                    low = float(values.quantile(q, interpolation="lower"))
                    high = float(values.quantile(q, interpolation="higher"))
                    assert low - 0.01 * abs(low) - 1e-9 <= got_q, (name, got_q, low)
                    assert got_q <= high + 0.01 * abs(high) + 1e-9, (name, got_q, high)


@settings(max_examples=60, deadline=None)
@given(events=streams())
def test_the_last_revision_of_every_bucket_equals_pandas(events: list[tuple[int, float]]) -> None:
    series = SeriesBuckets(TIERS, LATENESS, grace_us=GRACE)
    published, clock = _feed(series, events)
    assert clock is not None
    published += series.closed(clock + GRACE + 3600 * S)  # everything past its grace
    assert not len(series)
    _check_against_pandas(events, _last(published))


@settings(max_examples=40, deadline=None)
@given(events=streams(), cut=st.floats(0, 1, exclude_max=True))
def test_a_restored_state_publishes_the_same_points_and_corrections(
    events: list[tuple[int, float]], cut: float
) -> None:
    whole = SeriesBuckets(TIERS, LATENESS, grace_us=GRACE)
    # Cut right after a late event where there is one: its correction is then still due.
    late, clock = [], None
    for index, (ts, _) in enumerate(events):
        if clock is not None and ts < clock:
            late.append(index)
        clock = ts if clock is None else max(clock, ts)
    at = late[int(cut * len(late))] if late else int(cut * (len(events) - 1))
    _, clock = _feed(whole, events[: at + 1])
    copy = SeriesBuckets.restored(TIERS, LATENESS, whole.durable_state(), grace_us=GRACE)
    oldest = whole.oldest_open_us
    for ts, value in events[: at + 1]:  # the log keeps the events from the oldest kept bucket
        if oldest is not None and ts >= oldest:
            copy.replayed(ts, value)
    rest, end = _feed(whole, events[at + 1 :], clock)
    again, _ = _feed(copy, events[at + 1 :], clock)
    assert end is not None
    rest += whole.closed(end + GRACE + 3600 * S)
    again += copy.closed(end + GRACE + 3600 * S)
    assert again == rest


def test_late_events_into_a_published_bucket_make_one_correction_a_second() -> None:
    series = SeriesBuckets(TIERS[:2], LATENESS, grace_us=GRACE)
    start = T0 - T0 % S
    published, clock = _feed(series, [(start, 1.0), (start + 3 * S, 2.0)])
    assert [(label, p.t_us, r) for label, p, r in published] == [("1s", start, 0)]
    assert series.next_close_us > clock
    # Three late events into the published bucket at the same clock: nothing yet...
    for value in (5.0, 6.0, 7.0):
        series.insert(start + S // 2, value)
        assert series.next_close_us > clock and series.corrections_due
    # ...then one correction once the clock passes the next whole second.
    due = clock - clock % CORRECTION_STEP_US + CORRECTION_STEP_US
    assert series.next_close_us == due
    assert series.closed(due - 1) == []
    corrected = series.closed(due)
    assert [(label, p.t_us, r) for label, p, r in corrected] == [("1s", start, 1)]
    assert corrected[0][1].count == 4 and corrected[0][1].sum == 19.0
    assert not series.corrections_due


def test_a_coarser_bucket_is_corrected_with_its_finer_bucket() -> None:
    series = SeriesBuckets(TIERS[:2], LATENESS, grace_us=GRACE)
    ten = T0 - T0 % (10 * S)
    published, clock = _feed(series, [(ten, 1.0), (ten + 4 * S, 3.0), (ten + 13 * S, 9.0)])
    assert clock is not None
    assert [(label, p.t_us, r) for label, p, r in published] == [
        ("1s", ten, 0),
        ("1s", ten + 4 * S, 0),
        ("10s", ten, 0),
    ]
    series.insert(ten + 4 * S + 1, 5.0)  # into the 1 s bucket published, in the 10 s one
    series.insert(ten + 7 * S, 2.0)  # into a 1 s bucket without events so far
    corrected = series.closed(clock + CORRECTION_STEP_US)
    assert [(label, p.t_us, r) for label, p, r in corrected] == [
        ("1s", ten + 4 * S, 1),
        ("1s", ten + 7 * S, 0),
        ("10s", ten, 1),
    ]
    assert (corrected[-1][1].count, corrected[-1][1].sum) == (4, 11.0)


def test_without_a_grace_beyond_the_lateness_nothing_is_corrected_nor_saved_anew() -> None:
    plain = SeriesBuckets(TIERS, LATENESS)
    same = SeriesBuckets(TIERS, LATENESS, grace_us=LATENESS)
    events = [(T0 + k * S // 3, float(k % 7)) for k in range(400)]
    assert _feed(plain, events)[0] == _feed(same, events)[0]
    assert plain.durable_state() == same.durable_state()
    assert plain.durable_state()[0] == 1  # the version of before


FINER_AND_FINER = [
    (T0, 1000.0), (T0 + 1, 3000.0), (T0 + 4 * S, 7.0), (T0 + 2, 0.1),
    (T0 + 6 * S, 7.0), (T0 + 3, 1.3e-5), (T0 + 8 * S, 7.0), (T0 + 4, -2.0**-60), (T0 + 10 * S, 1.0),
]  # fmt: skip
"""Late values each finer than the bucket's values so far, a correction apart."""


@settings(max_examples=60, deadline=None)
@given(events=streams())
@example(events=FINER_AND_FINER)
def test_a_corrected_bucket_is_the_same_bit_for_bit_as_one_published_once(
    events: list[tuple[int, float]],
) -> None:
    """A corrected finest bucket adds its late values to what it keeps; its last revision is
    the point of the same values published once, at the grace, after all of them."""
    corrected = SeriesBuckets(TIERS, LATENESS, grace_us=GRACE)
    published, clock = _feed(corrected, events)
    once = SeriesBuckets(TIERS, GRACE, grace_us=GRACE)
    published_once, _ = _feed(once, events)
    assert clock is not None
    published += corrected.closed(clock + GRACE + 3600 * S)
    published_once += once.closed(clock + GRACE + 3600 * S)
    finest = TIERS[0].resolution_label
    last = {key: p for key, p in _last(published).items() if key[0] == finest}
    assert last == {key: p for key, p in _last(published_once).items() if key[0] == finest}


def test_late_events_after_idle_ticks_make_one_correction_at_the_next_second_of_the_clock() -> None:
    """Idle ticks move the clock on without closing a bucket: the late events of one batch,
    at that clock, are one correction at its next whole second, not one at once for the first
    of them (a second of the last close's clock, passed already) and one for the rest."""
    series = SeriesBuckets(TIERS[:1], LATENESS, grace_us=GRACE)
    start = T0 - T0 % S
    published, clock = _feed(series, [(start, 1.0), (start + 3 * S, 2.0)])
    assert [(p.t_us, r) for _, p, r in published] == [(start, 0)]
    clock += S + S // 2  # ticks: nothing closes before start + 6 s
    assert clock < series.next_close_us
    out: Published = []
    for value in (5.0, 6.0, 7.0):  # one batch, at the ticked clock
        series.insert(start + S // 2, value, None, clock)
        if clock >= series.next_close_us:
            out += series.closed(clock)
    assert out == []
    due = clock - clock % CORRECTION_STEP_US + CORRECTION_STEP_US
    assert series.next_close_us == due
    corrected = series.closed(due)
    assert [(p.t_us, r, p.count) for _, p, r in corrected] == [(start, 1, 4)]
