"""What a topic that carries only messages costs the aggregator (a channel per user): its
bytes stay within a bound over a simulated day of one message a minute, and its counts by
type stay bounded whatever the number of its types.

The bound is the documented one (docs/performance.md, "A topic's cost"): the aggregator's
state of a message-only topic of the default rule (the server's windows and series tiers),
measured with tracemalloc after the drafts are dropped, as a broker drops them once
published."""

from __future__ import annotations

import gc
import tracemalloc

import orjson

from pushsvc.aggregate.aggregator import Aggregator
from pushsvc.config import Settings
from pushsvc.core.event import Event, Message
from pushsvc.stats.message_counts import MAX_TYPES, OTHER, MessageCounts

S = 1_000_000
MINUTE = 60 * S
T0 = 1_795_000_000 * S
TOPICS = 20
BOUND_BYTES = 8_192
"""Aggregator bytes per message-only topic, whatever its age (docs/performance.md)."""


class Wall:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


def _traced_per_topic(before: int) -> float:
    gc.collect()
    return (tracemalloc.get_traced_memory()[0] - before) / TOPICS


def test_a_message_only_topic_stays_within_its_bound_over_a_day() -> None:
    wall = Wall()
    aggregator = Aggregator(rules=Settings.load({}, {}).rules, wall_clock=wall)
    message = Message("shipped", b'{"order":4711}')
    topics = [f"u{i}" for i in range(TOPICS)]
    # What the aggregator makes once for all its topics (the rule's compiled fast paths, on
    # the first event and the first tick) before the measure starts: one topic for a while.
    for minute in range(-90, 0):
        wall.now = T0 + minute * MINUTE
        aggregator.tick()
        aggregator.apply_events("warm", [Event(None, wall.now, None, message)])
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        per_hour: list[float] = []
        for minute in range(24 * 60):
            wall.now = T0 + minute * MINUTE
            aggregator.tick()  # the server's idle ticks slide each topic's windows
            for topic in topics:
                drafted = aggregator.apply_events(topic, [Event(None, wall.now, None, message)])
                assert drafted
            if minute % 60 == 59:
                per_hour.append(_traced_per_topic(before))
    finally:
        tracemalloc.stop()
    assert len(aggregator.topics()) == TOPICS + 1
    assert max(per_hour) < BOUND_BYTES, per_hour
    # Not growing with age: no hour of the day holds much more than the first did (open
    # series buckets of the coarser tier come and go).
    assert max(per_hour) - per_hour[0] < BOUND_BYTES / 4, per_hour


def test_a_topics_counts_by_type_stay_bounded_whatever_its_types() -> None:
    counts = MessageCounts((10 * S, 300 * S), ("10s", "5m"))
    clock = T0
    kinds = 0
    for _ in range(20):  # every second, ten new types: thousands of types within 5 minutes
        for _ in range(10):
            counts.insert(clock, f"type{kinds}", clock)
            kinds += 1
        clock += S
        summary = counts.summary()
        for by_type in summary.values():
            assert len(by_type) <= MAX_TYPES + 1
        assert sum(c["count"] for c in summary["5m"].values()) == kinds  # every one counted
    assert len(summary["5m"]) == MAX_TYPES + 1
    assert summary["5m"][OTHER]["count"] == kinds - MAX_TYPES
    # All seen once: the first by name are named.
    by_name = sorted(f"type{i}" for i in range(kinds))
    assert [k for k in summary["5m"] if k != OTHER] == by_name[:MAX_TYPES]
    # The most frequent are named, whenever they came: a type seen often late displaces one
    # of the first.
    for _ in range(3):
        counts.insert(clock, "often", clock)
    assert summary != counts.summary()
    named = counts.summary()["5m"]
    assert named["often"]["count"] == 3 and by_name[MAX_TYPES - 1] not in named
    assert named[OTHER]["count"] == kinds - MAX_TYPES + 1
    # Once every message has left the widest window nothing is held, and a new type counts on
    # its own.
    counts.advance(clock + 300 * S)
    assert len(counts) == 0 and counts.summary() == {"10s": {}, "5m": {}}
    counts.insert(clock + 301 * S, "fresh", clock + 301 * S)
    assert counts.summary()["5m"] == {"fresh": {"count": 1, "rate": 1 / 300}}


def test_the_types_past_the_bound_reach_an_update_as_other() -> None:
    wall = Wall()
    aggregator = Aggregator(rules=Settings.load({}, {}).rules, wall_clock=wall)
    events = [Event(None, T0 + i, None, Message(f"k{i:03d}", b"1")) for i in range(MAX_TYPES + 5)]
    last = orjson.loads(aggregator.apply_events("u1", events)[-1].body)
    by_type = last["windows"]["10s"]["messages"]
    assert len(by_type) == MAX_TYPES + 1
    assert by_type[OTHER]["count"] == 5
    assert by_type["k000"]["count"] == 1


def test_a_rebuild_from_the_widest_windows_messages_names_the_same_types() -> None:
    """An aggregator rebuilt from the log replays only the messages still in the widest window:
    past `MAX_TYPES` types, its summary names what one that ran all along names."""
    all_along = MessageCounts((10 * S, 60 * S), ("10s", "1m"))
    sent = []
    clock = T0
    for second in range(120):  # 40 types a second for two minutes: the first ones leave
        for k in range(40):
            kind = f"k{(second * 7 + k) % 90:02d}"
            all_along.insert(clock, kind, clock)
            sent.append((clock, kind))
        clock += S
    rebuilt = MessageCounts((10 * S, 60 * S), ("10s", "1m"))
    last = sent[-1][0]
    for ts, kind in sent:
        if ts > last - 60 * S:
            rebuilt.insert(ts, kind, ts)
    assert rebuilt.summary() == all_along.summary()
    assert OTHER in all_along.summary()["1m"]
