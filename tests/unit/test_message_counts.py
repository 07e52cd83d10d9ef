"""Messages counted by type per window, against pandas: after every event and tick, each window
counts the messages with `ts` in `(T - w, T]` on the topic's clock `T` (the largest time seen),
late ones (within the lateness) included in their place. And the statistics of values are
those of the events that have a value, whatever messages come between them."""

from __future__ import annotations

from typing import Any

import orjson
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from pushsvc.aggregate.aggregator import Aggregator
from pushsvc.core.event import Event, Message
from pushsvc.rules.analytics import Rules, default_rule
from pushsvc.stats import STAT_KEYS
from pushsvc.stats.message_counts import MessageCounts

S = 1_000_000
T0 = 1_795_000_000 * S
WIDTHS = (2 * S, 10 * S)
LABELS = ("2s", "10s")

steps = st.lists(
    st.one_of(
        # a message: its time as an offset from the clock (late within 5 s, or ahead), its type
        st.tuples(
            st.just("message"),
            st.integers(-5 * S, 3 * S),
            st.sampled_from(["shipped", "error", "x.y"]),
        ),
        # a tick: the clock moves ahead
        st.tuples(st.just("tick"), st.integers(0, 4 * S), st.just("")),
    ),
    max_size=60,
)


def _expected(seen: list[tuple[int, str]], clock: int) -> dict[str, dict[str, int]]:
    frame = pd.DataFrame(seen, columns=["ts", "type"])
    counts: dict[str, dict[str, int]] = {}
    for label, width in zip(LABELS, WIDTHS, strict=True):
        inside = frame[(frame["ts"] > clock - width) & (frame["ts"] <= clock)]
        counts[label] = {str(k): int(v) for k, v in inside.groupby("type").size().items()}
    return counts


def _counted(counts: MessageCounts) -> dict[str, dict[str, int]]:
    return {
        label: {kind: entry["count"] for kind, entry in by_type.items()}
        for label, by_type in counts.summary().items()
    }


@settings(max_examples=200, deadline=None)
@given(steps)
def test_counts_per_type_and_window_equal_pandas(drawn: list[tuple[str, int, str]]) -> None:
    counts = MessageCounts(WIDTHS, LABELS)
    clock = T0
    seen: list[tuple[int, str]] = []
    for kind, offset, message_type in drawn:
        if kind == "tick":
            clock += offset
            counts.advance(clock)
        else:
            ts = clock + offset
            clock = max(clock, ts)
            counts.insert(ts, message_type, clock)
            seen.append((ts, message_type))
        assert _counted(counts) == _expected(seen, clock)
    for label, width in zip(LABELS, WIDTHS, strict=True):
        for entry in counts.summary()[label].values():
            assert entry["rate"] == entry["count"] * S / width


def _run(events: list[Event]) -> list[dict[str, Any]]:
    aggregator = Aggregator(
        rules=Rules((), default_rule((10 * S, 60 * S), STAT_KEYS)), wall_clock=lambda: 0
    )
    return [orjson.loads(d.body) for d in aggregator.apply_events("t", events)]


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(-1e6, 1e6), st.integers(0, 2 * S), st.booleans()),
        min_size=1,
        max_size=40,
    )
)
def test_messages_between_values_leave_the_statistics_of_values_unchanged(
    drawn: list[tuple[float, int, bool]],
) -> None:
    valued: list[Event] = []
    mixed: list[Event] = []
    ts = T0
    for value, step, message_first in drawn:
        ts += step
        event = Event(value, ts)
        valued.append(event)
        # A value-less message at the same time as the value (the clock goes where the value
        # takes it either way), before or after it.
        message = Event(None, ts, None, Message("note", b'{"v":1}'))
        mixed += [message, event] if message_first else [event, message]
    plain = _run(valued)
    with_messages = [u for u in _run(mixed) if "value" in u["event"]]
    assert len(with_messages) == len(plain)
    for alone, beside in zip(plain, with_messages, strict=True):
        for label, window in alone["windows"].items():
            stats = dict(beside["windows"][label])
            stats.pop("messages", None)
            assert stats == window


def test_a_topic_without_messages_carries_no_messages_member() -> None:
    updates = _run([Event(1.0, T0), Event(2.0, T0 + S)])
    assert all("messages" not in window for u in updates for window in u["windows"].values())


def test_a_message_is_echoed_with_its_type_and_data_and_no_value_when_it_has_none() -> None:
    (update,) = _run([Event(None, T0, {"a": "b"}, Message("shipped", b'{"order":4711}'))])
    assert update["event"] == {
        "ts": T0 / S,
        "tags": {"a": "b"},
        "type": "shipped",
        "data": {"order": 4711},
    }
    assert update["windows"]["10s"]["count"] == 0
    assert update["windows"]["10s"]["messages"] == {"shipped": {"count": 1, "rate": 0.1}}


def test_a_message_leaves_a_window_exactly_when_the_clock_is_its_time_plus_the_width() -> None:
    counts = MessageCounts(WIDTHS, LABELS)
    counts.insert(T0, "shipped", T0)
    counts.advance(T0 + 2 * S - 1)
    assert _counted(counts) == {"2s": {"shipped": 1}, "10s": {"shipped": 1}}
    counts.advance(T0 + 2 * S)  # (T - 2s, T] no longer holds T0
    assert _counted(counts) == {"2s": {}, "10s": {"shipped": 1}}


def test_a_topics_first_message_in_a_batch_its_windows_take_whole_leaves_them_in_time() -> None:
    """The counts are made before the windows take the batch (all at once, for a batch of
    values): made at the clock after it, they counted its first message in the 10 s window at
    the batch's end, 11 s later."""
    batch = [Event(1.0, T0 + S, None, Message("shipped", b"{}")), Event(2.0, T0 + 12 * S)]
    *_, last = _run([Event(0.0, T0), *batch])
    assert "messages" not in last["windows"]["10s"]
    assert last["windows"]["1m"]["messages"] == {"shipped": {"count": 1, "rate": 1 / 60}}
