"""Series points count a topic's messages by type, against pandas: through the aggregator (the
series-only path and the staged one, plain events, messages with and without a value, ticks,
late events within the lateness), every point of every tier carries `messages` equal to
`groupby([resample, type]).size()` of the accepted messages, and `count` and `sum` of the
events that have a value (a bucket of messages only is a point of count 0, its other
statistics null). The state round trips, an older state (written before buckets counted
messages) restores and counts from then on, and stored points with messages unpack exactly."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import orjson
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pushsvc.aggregate.aggregator import Aggregator
from pushsvc.core.event import Event, Message
from pushsvc.core.updates import Kind, UpdateDraft
from pushsvc.rules.analytics import Rule, Rules, default_rule
from pushsvc.rules.point import Point, TopList
from pushsvc.rules.tiers import parse_tiers
from pushsvc.series.buckets import SeriesBuckets

S = 1_000_000
LATENESS = 5 * S
T0 = 1_763_700_000 * S
TIERS = "1s:15m,10s:1h,1m:24h"
STATS = ("count", "sum", "mean", "min", "max", "var", "stddev", "p50", "p90", "p99")
TYPES = ("shipped", "error", "a.b:c-d")

# A state of `SeriesBuckets` as the code before message counts wrote it (tiers 1s:1m,10s:10m,
# lateness 5 s; values 1.0, 2.5 at T0 and 4.0 a second later, -1.0 two seconds later; closed at
# T0 + 7 s): version 1, its open 10 s bucket holding the two closed seconds.
OLD_STATE = bytes.fromhex(
    "0180dfc286ed84a2060180a0ecffec84a206030000000000001e40000000000000044000000000000012400000"
    "00000000f03f0000000000001040000042000042470100000000000000000000000000000000000000000000"
    "000000000000000000000000000000000000000000000001000000000000000000000000000000000000000000"
    "000001"
)

# One step: what comes (a value, a message with a value, a message alone, or a tick), how far
# the clock moves first, how late the event is, its value and its message's type.
step = st.tuples(
    st.sampled_from(["value", "both", "message", "message", "tick"]),
    st.integers(0, 40 * S),
    st.integers(0, LATENESS // 2),
    st.floats(-1e6, 1e6, allow_nan=False, allow_subnormal=False),
    st.sampled_from(TYPES),
)


def _rules(grace_us: int | None = None) -> Rules:
    tiers = parse_tiers(TIERS)
    return Rules(
        [
            # A grouping rule: its events go through the stages (`_staged`), and its groups
            # keep series of their own, which count no messages (a group's windows count none).
            Rule(1, ("staged",), (2 * S, 10 * S), (), STATS, ("k",), 4, series=tiers,
                 grace_us=grace_us),
            # Series only: the inlined path.
            Rule(2, ("plain",), (2 * S, 10 * S), (), STATS, series=tiers, grace_us=grace_us),
        ],
        default_rule((2 * S, 10 * S), STATS, tiers),
    )  # fmt: skip


def _points(drafts: Sequence[UpdateDraft]) -> list[dict[str, Any]]:
    return [orjson.loads(d.body) for d in drafts if d.kind is Kind.POINT]


def _feed(
    topic: str, drawn: list[tuple[str, int, int, float, str]], grace_us: int | None = None
) -> tuple[list[dict[str, Any]], list[Event], int]:
    """The drawn steps through an aggregator: the points it drafted (the topic's and its
    groups'), the events accepted, and the final clock (where every bucket has closed)."""
    aggregator = Aggregator(rules=_rules(grace_us), wall_clock=lambda: 0, lateness_us=LATENESS)
    clock = T0
    points: list[dict[str, Any]] = []
    accepted: list[Event] = []
    for n, (kind, ahead, late, value, message_type) in enumerate(drawn):
        clock += ahead if ahead > 20 * S else ahead // 40  # mostly dense, sometimes a gap
        if kind == "tick":
            points += _points(aggregator.apply_ticks({topic: clock}))
            continue
        message = None if kind == "value" else Message(message_type, b'{"n":%d}' % n)
        event = Event(
            None if kind == "message" else value, clock - late, {"k": str(n % 3)}, message
        )
        accepted.append(event)
        points += _points(aggregator.apply_events(topic, [event], (1, n)))
    end = clock + 3600 * S + 60 * S + max(LATENESS, grace_us or 0)  # every bucket closes
    points += _points(aggregator.apply_ticks({topic: end}))
    return points, accepted, end


def _frame(events: list[Event]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "value": [math.nan if e.value is None else e.value for e in events],
            "type": [None if e.message is None else e.message.type for e in events],
        },
        index=pd.to_datetime([e.ts_us for e in events], unit="us", utc=True),
    )


def _expected(frame: pd.DataFrame, seconds: int) -> dict[int, dict[str, Any]]:
    """Per bucket start (µs): pandas' count and sum of the values and the messages' counts by
    type, for the buckets that hold an event."""
    rule = f"{seconds}s"
    values = frame["value"].resample(rule).agg(["count", "sum"])
    typed = frame.dropna(subset=["type"])
    by_type = typed.groupby([pd.Grouper(freq=rule), "type"]).size()
    out: dict[int, dict[str, Any]] = {}
    for start, row in values.iterrows():
        out[pd.Timestamp(start).value // 1000] = {
            "count": int(row["count"]),
            "sum": float(row["sum"]),
            "messages": {},
        }
    for (start, kind), n in by_type.items():
        out[pd.Timestamp(start).value // 1000]["messages"][kind] = int(n)
    return {t: b for t, b in out.items() if b["count"] or b["messages"]}


@pytest.mark.parametrize("topic", ["plain", "staged"])
@settings(max_examples=60, deadline=None)
@given(drawn=st.lists(step, min_size=1, max_size=120))
def test_every_points_message_counts_are_pandas_per_type(
    topic: str, drawn: list[tuple[str, int, int, float, str]]
) -> None:
    points, accepted, _ = _feed(topic, drawn)
    frame = _frame(accepted)
    for tier in parse_tiers(TIERS):
        label, seconds = tier.resolution_label, tier.resolution_us // S
        got = [p for p in points if p["resolution"] == label and "group" not in p]
        want = _expected(frame, seconds)
        assert [round(p["point"]["t"] * S) for p in got] == list(want), label
        for drafted in got:
            point = drafted["point"]
            bucket = want[round(point["t"] * S)]
            counts = {k: c["count"] for k, c in point.get("messages", {}).items()}
            assert counts == bucket["messages"], (label, point["t"])
            for entry in point.get("messages", {}).values():
                assert entry["rate"] == entry["count"] / seconds
            # Values: messages without one are no values.
            assert point["count"] == bucket["count"]
            scale = max([1.0, *(abs(v) for v in frame["value"].dropna())])
            assert point["sum"] == pytest.approx(bucket["sum"], abs=1e-9 * scale * len(frame))
            if not bucket["count"]:
                assert all(point[s] is None for s in STATS if s not in ("count", "sum"))
    # A group's buckets count no messages, as its windows do not; their values are its own.
    assert all("messages" not in p["point"] for p in points if "group" in p)
    if topic == "staged":
        valued = frame["value"].notna()
        grouped = sum(
            p["point"]["count"] for p in points if "group" in p and p["resolution"] == "1s"
        )
        assert grouped == int(valued.sum())


GRACE = 60 * S
late_step = st.tuples(
    st.sampled_from(["value", "both", "message", "message", "tick"]),
    st.integers(0, 40 * S),
    st.sampled_from([0, 0, 0, S // 3, 7 * S, 30 * S, GRACE - 1]),
    st.floats(-1e6, 1e6, allow_nan=False, allow_subnormal=False),
    st.sampled_from(TYPES),
)


@pytest.mark.parametrize("topic", ["plain", "staged"])
@settings(max_examples=40, deadline=None)
@given(drawn=st.lists(late_step, min_size=1, max_size=80))
def test_late_messages_within_a_grace_correct_their_buckets_counts(
    topic: str, drawn: list[tuple[str, int, int, float, str]]
) -> None:
    # A rule's grace beyond the lateness: buckets are published at the lateness and corrected
    # by what comes late within the grace; the last point of each bucket is pandas'.
    points, accepted, _ = _feed(topic, drawn, GRACE)
    frame = _frame(accepted)
    for tier in parse_tiers(TIERS):
        label, seconds = tier.resolution_label, tier.resolution_us // S
        last: dict[int, dict[str, Any]] = {}
        for drafted in points:
            if drafted["resolution"] == label and "group" not in drafted:
                last[round(drafted["point"]["t"] * S)] = drafted["point"]
        want = _expected(frame, seconds)
        assert sorted(last) == list(want), label
        for start, point in last.items():
            counts = {k: c["count"] for k, c in point.get("messages", {}).items()}
            assert counts == want[start]["messages"], (label, start)
            assert point["count"] == want[start]["count"], (label, start)


def test_a_bucket_of_messages_only_is_a_point_of_count_zero() -> None:
    series = SeriesBuckets(parse_tiers("1s:1m,1m:1h"), LATENESS, ("user",))
    second = T0 + 3 * S
    series.message(second + 10, "shipped")
    series.message(second + 20, "error")
    series.message(second + 30, "shipped")
    assert series.next_close_us == second + S + LATENESS
    (closed,) = series.close(second + S + LATENESS)
    label, point = closed
    assert (label, point.count, point.sum, point.var) == ("1s", 0, 0.0, None)
    assert point.messages == (("error", 1), ("shipped", 2)) and point.distinct == (("user", 0),)
    fields = point.fields(S)
    assert fields["messages"] == {
        "error": {"count": 1, "rate": 1.0},
        "shipped": {"count": 2, "rate": 2.0},
    }
    assert fields["count"] == 0 and fields["sum"] == 0.0 and fields["distinct_user"] == 0
    assert all(fields[s] is None for s in STATS if s not in ("count", "sum"))
    # Merged into a minute with a second of values: the values' statistics are theirs alone.
    series.insert(T0 + 10 * S, 4.0, {"user": "u"})
    series.insert(T0 + 10 * S + 1, 6.0, {"user": "v"})
    series.message(T0 + 10 * S + 2, "shipped")
    minute = T0 - T0 % (60 * S)
    closed = series.close(minute + 60 * S + LATENESS)
    (coarse,) = [p for lab, p in closed if lab == "1m"]
    assert (coarse.count, coarse.sum, coarse.mean, coarse.min, coarse.max) == (
        2,
        10.0,
        5.0,
        4.0,
        6.0,
    )
    assert coarse.var == pytest.approx(2.0) and coarse.distinct == (("user", 2),)
    assert coarse.messages == (("error", 1), ("shipped", 3))
    assert Point.unpacked(coarse.t_us, coarse.packed(), ("user",)) == coarse
    back = Point.unpacked(point.t_us, point.packed(), ("user",))
    assert back.fields(S) == fields


@settings(max_examples=60, deadline=None)
@given(drawn=st.lists(step, min_size=1, max_size=120), cut=st.floats(0, 1))
def test_a_restored_state_with_message_counts_continues_exactly(
    drawn: list[tuple[str, int, int, float, str]], cut: float
) -> None:
    tiers = parse_tiers("1s:15m,10s:1h,1m:24h")
    events: list[tuple[int, float | None, str | None]] = []
    clock = T0
    for kind, ahead, late, value, message_type in drawn:
        clock += ahead if ahead > 20 * S else ahead // 40
        if kind != "tick":
            events.append((clock - late, None if kind == "message" else value,
                           None if kind == "value" else message_type))  # fmt: skip

    def run(
        series: SeriesBuckets, part: list[tuple[int, float | None, str | None]], at: int | None
    ) -> tuple[list[tuple[str, bytes]], int | None]:
        out: list[tuple[str, bytes]] = []
        for ts, value, kind in part:
            at = ts if at is None else max(at, ts)
            if value is not None:
                series.insert(ts, value)
            if kind is not None:
                series.message(ts, kind)
            if at >= series.next_close_us:
                out += [(lab, p.packed()) for lab, p in series.close(at)]
        return out, at

    at = int(len(events) * cut)
    running = SeriesBuckets(tiers, LATENESS)
    _, clock_at = run(running, events[:at], None)
    saved = running.durable_state()
    after, end = run(running, events[at:], clock_at)
    cold = SeriesBuckets.restored(tiers, LATENESS, saved)
    for ts, value, kind in events[:at]:  # the log's entries up to the checkpoint
        if value is not None:
            cold.replayed(ts, value)
        if kind is not None:
            cold.message_replayed(ts, kind)
    again, _ = run(cold, events[at:], clock_at)
    assert again == after
    if end is not None:
        last = end + 3600 * S
        assert [(lab, p.packed()) for lab, p in cold.close(last)] == [
            (lab, p.packed()) for lab, p in running.close(last)
        ]


def test_a_state_without_messages_is_written_as_before_and_an_old_one_restores() -> None:
    tiers = parse_tiers("1s:1m,10s:10m")
    series = SeriesBuckets(tiers, LATENESS)
    for dt, value in [(0, 1.0), (300_000, 2.5), (1_200_000, 4.0), (2_100_000, -1.0)]:
        series.insert(T0 + dt, value)
    series.close(T0 + 7 * S)
    assert series.durable_state() == OLD_STATE  # no message: the old reader's version 1
    # The old state restores; its open 10 s bucket counts messages from then on.
    cold = SeriesBuckets.restored(tiers, LATENESS, OLD_STATE)
    cold.replayed(T0 + 2_100_000, -1.0)
    cold.message(T0 + 3 * S, "shipped")
    cold.message(T0 + 3 * S + 1, "shipped")
    closed = cold.close(T0 + 20 * S)
    (ten,) = [p for lab, p in closed if lab == "10s"]
    assert (ten.count, ten.sum, ten.messages) == (4, 6.5, (("shipped", 2),))
    # With messages in an open coarser bucket: version 11, over version 1, and back exactly.
    series.message(T0 + 3 * S, "error")
    series.close(T0 + 9 * S)
    state = series.durable_state()
    assert state[:2] == b"\x0b\x01"
    back = SeriesBuckets.restored(tiers, LATENESS, state)
    assert back.durable_state() == state
    assert [(lab, p) for lab, p in back.close(T0 + 20 * S)] == series.close(T0 + 20 * S)


def test_a_tagged_state_with_messages_round_trips_and_a_wrong_one_is_refused() -> None:
    tiers = parse_tiers("1s:1m,10s:10m")
    series = SeriesBuckets(tiers, LATENESS, ("user",), (("p", 2),))
    series.insert(T0, 1.0, {"user": "u", "p": "tea"})
    series.message(T0 + 1, "shipped")
    series.message(T0 + S, "error")
    series.close(T0 + 7 * S)
    state = series.durable_state()
    assert state[:2] == b"\x0b\x05"
    back = SeriesBuckets.restored(tiers, LATENESS, state, ("user",), (("p", 2),))
    assert back.close(T0 + 20 * S) == series.close(T0 + 20 * S)
    with pytest.raises(ValueError, match="version 11 over 11"):
        SeriesBuckets.restored(tiers, LATENESS, b"\x0b\x0b" + state[2:])
    with pytest.raises(ValueError, match="version 5"):
        SeriesBuckets.restored(tiers, LATENESS, state)  # no distinct nor top tags: not its own


def test_stored_points_with_messages_unpack_with_every_other_section() -> None:
    point = Point(
        T0, 3, 6.5, 6.5 / 3, -1.0, 5.25, None, 1.0, 4.0, 5.2,
        (("user", 2),), (TopList("p", (("tea", 2),)),), 0.75, True,
        (("error", 1), ("shipped", 12)),
    )  # fmt: skip
    back = Point.unpacked(T0, point.packed(), ("user",), ("p",))
    assert back == point
    assert back.fields(60 * S)["messages"] == {
        "error": {"count": 1, "rate": 1 / 60},
        "shipped": {"count": 12, "rate": 0.2},
    }
    # A point stored before message counts: none, and every other section as it was.
    older = Point(T0, 1, 1.0, 1.0, 1.0, 1.0, None, 1.0, 1.0, 1.0, (("user", 1),), (), 0.5, False)
    assert Point.unpacked(T0, older.packed(), ("user",)) == older
    assert "messages" not in older.fields(S)
