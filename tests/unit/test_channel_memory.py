"""What a topic that carries only messages costs the aggregator (a channel per user): its
bytes stay within a bound over a simulated day of one message a minute, its counts by type
stay bounded whatever the number of its types, and it keeps no windows of values and no
series of the server's tiers until its first value (made then, and made again by a rebuild
at the same log entry). `--max-topics` as a memory budget refuses a topic past it, and
admits one again once a topic is deleted or forgotten.

The bound is the documented one (docs/performance.md, "A topic's cost"): the aggregator's
state of a message-only topic of the default rule (the server's windows and series tiers),
measured with tracemalloc after the drafts are dropped, as a broker drops them once
published."""

from __future__ import annotations

import gc
import tracemalloc

import orjson
import pytest
from harness.live import PushsvcProcess, post, request, wait_until

from conftest import MakeApp
from pushsvc.aggregate.aggregator import Aggregator
from pushsvc.config import TOPIC_BYTES, Settings
from pushsvc.core.checkpoint import Checkpoint
from pushsvc.core.event import Event, Message
from pushsvc.core.positions import LogPosition
from pushsvc.errors import ConfigError
from pushsvc.rules.analytics import Rule, Rules, default_rule
from pushsvc.rules.tiers import parse_tiers
from pushsvc.stats.compiled import CompiledRule
from pushsvc.stats.message_counts import MAX_TYPES, OTHER, MessageCounts

S = 1_000_000
MINUTE = 60 * S
T0 = 1_795_000_000 * S
TOPICS = 20
BOUND_BYTES = 4_096
"""Aggregator bytes per message-only topic, whatever its age (docs/performance.md)."""
VALUED_BYTES = 1_024
"""At least what a topic's first value adds: its windows of values and its series."""


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
            # The server's idle ticks slide each topic's windows; no draft is a series point,
            # and an event's only draft is its update (none kept: a broker drops them).
            assert all(d.series is None for d in aggregator.tick())
            for topic in topics:
                event = Event(None, wall.now, None, message)
                assert len(aggregator.apply_events(topic, [event])) == 1
            if minute % 60 == 59:
                per_hour.append(_traced_per_topic(before))
    finally:
        tracemalloc.stop()
    assert len(aggregator.topics()) == TOPICS + 1
    for topic in topics:  # nothing the log cannot give back: no checkpoint kept
        assert not aggregator.durable(topic)
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


def _message(ts_us: int, kind: str = "shipped") -> Event:
    return Event(None, ts_us, None, Message(kind, b"{}"))


def test_a_topic_keeps_windows_and_series_from_its_first_value_on() -> None:
    """Before its first value a topic's checkpoint holds no windows and no series, and its
    bytes are a message-only topic's; the log entry of its first value makes both (a message
    before the value in that entry counted in its series), and they cost more than the
    topic did."""
    wall = Wall()
    aggregator = Aggregator(rules=Settings.load({}, {}).rules, wall_clock=wall)
    aggregator.apply_events("warm", [_message(T0), Event(1.0, T0, None)])
    topics = [f"u{i}" for i in range(200)]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for topic in topics:
            assert len(aggregator.apply_events(topic, [_message(T0 + S)], (1, 0))) == 1
        gc.collect()
        messages_only = (tracemalloc.get_traced_memory()[0] - before) / len(topics)
        for topic in topics:
            checkpoint = aggregator.checkpoint(topic, (1, 0))
            assert checkpoint is not None and (checkpoint.state, checkpoint.series) == (b"", b"")
            assert not aggregator.durable(topic)
        for topic in topics:
            events = [_message(T0 + 2 * S, "error"), Event(2.0, T0 + 2 * S, None)]
            aggregator.apply_events(topic, events, (2, 0))
        gc.collect()
        valued = (tracemalloc.get_traced_memory()[0] - before) / len(topics)
    finally:
        tracemalloc.stop()
    assert messages_only < BOUND_BYTES / 2, messages_only
    assert valued - messages_only > VALUED_BYTES, (messages_only, valued)
    for topic in topics:
        checkpoint = aggregator.checkpoint(topic, (2, 0))
        assert checkpoint is not None and checkpoint.series
        assert aggregator.durable(topic)
    # The second's bucket closes past the lateness: its point counts the entry's message
    # before the value, not the one of the entry before (no series then).
    drafts = aggregator.apply_events("u0", [_message(T0 + 9 * S)], (3, 0))
    points = [orjson.loads(d.body) for d in drafts if d.series is not None]
    seconds = {p["point"]["t"]: p["point"] for p in points if p["resolution"] == "1s"}
    second = seconds[T0 / S + 2]
    assert (second["count"], second["messages"]) == (1, {"error": {"count": 1, "rate": 1.0}})
    assert list(seconds) == [T0 / S + 2]  # none of the second before: no series then


@pytest.mark.parametrize(
    "rule",
    [
        Rule(1, ("a",), (2 * S, 10 * S), (), ("count", "sum", "mean", "p50", "rate")),
        Rule(2, ("b",), (2 * S, 120 * S), (3,), ("count", "max", "p90"), exact_up_to_us=10 * S),
        Rule(3, ("c",), (2 * S,), (), ("count",), distinct=("u",), top=(("p", 2),)),
        default_rule((10 * S, 60 * S), ("count", "sum", "min", "max", "p99")),
    ],
    ids=["rate", "sketch-and-last", "tags", "default"],
)
def test_a_topic_without_a_value_summarises_as_empty_windows_do(rule: Rule) -> None:
    compiled = CompiledRule(rule)
    windows = compiled.new()
    windows.start_at(T0)
    windows.advance(T0 + 30 * S)
    unvalued = compiled.unvalued(T0)
    unvalued.advance(T0 + 30 * S)
    empty = orjson.dumps(windows.summary())  # (an empty top list is a rendered fragment)
    assert orjson.dumps(unvalued.summary()) == empty and unvalued.clock_us == windows.clock_us
    mutated = unvalued.summary()
    next(iter(mutated.values()))["count"] = 7  # a caller's copy: the next one is whole
    assert orjson.dumps(unvalued.summary()) == empty
    made = compiled.valued(unvalued)
    assert made.clock_us == T0 + 30 * S and orjson.dumps(made.summary()) == empty


Entry = tuple[LogPosition, list[Event] | None, int | None]
"""(position, events of the topic, or a tick to a clock)."""


def _apply(aggregator: Aggregator, entry: Entry) -> list[bytes]:
    position, events, tick = entry
    if events is None:
        assert tick is not None
        drafts = aggregator.apply_ticks({"u1": tick}, position)
    else:
        drafts = aggregator.apply_events("u1", events, position)
    return [d.body for d in drafts]


@pytest.mark.parametrize("tiers", ["1s:1m,10s:10m", "10s:10m"])
def test_a_rebuild_makes_a_topics_series_where_the_running_one_did(tiers: str) -> None:
    """A topic of messages with one value long ago: its series exist (made at that value),
    which has left the trimmed log. A cold aggregator restored from its checkpoint (the
    topic is durable once it has series: with a single tier too) and the log kept since
    drafts what the running one does, byte for byte; one that never saw the value too."""
    rules = Rules([], default_rule((2 * S, 10 * S), ("count", "mean"), parse_tiers(tiers)))
    log: list[Entry] = [((1000, 0), [_message(T0), Event(1.0, T0, None)], None)]
    for n in range(1, 200):  # a message every 3 s, some late, a tick between
        ts = T0 + n * 3 * S - (2 * S if n % 7 == 0 else 0)
        log.append(((1000 + 2 * n, 0), [_message(ts, "abc"[n % 3])], None))
        log.append(((1001 + 2 * n, 0), None, T0 + n * 3 * S + S))
    split = 300
    running = Aggregator(rules=rules, wall_clock=lambda: 0)
    for entry in log[: split + 1]:
        _apply(running, entry)
    assert running.durable("u1")
    position = log[split][0]
    checkpoint = running.checkpoint("u1", position)
    assert checkpoint is not None and checkpoint.series
    cold = Aggregator(rules=rules, wall_clock=lambda: 0)
    cold.restore(Checkpoint.of_fields(checkpoint.fields()))
    horizon = running.horizon_us("u1")
    assert horizon is not None and horizon > T0  # the value's entry is trimmed
    for entry in log[: split + 1]:
        events = entry[1]
        if events is None or max(e.ts_us for e in events) > horizon:
            _apply(cold, entry)
    cold.end_replay()
    clock = running.clock("u1")
    assert clock is not None
    cold.restore_clock("u1", clock)
    points = 0
    for entry in log[split + 1 :]:
        drafted = _apply(running, entry)
        assert _apply(cold, entry) == drafted, entry
        points += sum(b'"resolution"' in body for body in drafted)
    assert points  # the series went on publishing


def test_the_topic_budget_refuses_past_it_and_admits_after_a_deletion(make_app: MakeApp) -> None:
    app = make_app(max_topics=f"{3 * TOPIC_BYTES // 1024}KiB", max_topics_per_publisher="3")
    assert app.extensions["pushsvc"].settings.max_topics == 3
    client = app.test_client()
    message = {"type": "shipped", "data": {"order": 1}}
    for topic in ("u0", "u1", "u2"):
        assert client.post(f"/topics/{topic}/events", json=message).status_code == 202
    refused = client.post("/topics/u3/events", json=message)
    assert refused.status_code == 429 and refused.mimetype == "application/json"
    error = refused.get_json()["error"]
    assert error["code"] == "too_many_topics"
    assert "--max-topics" in error["message"] and "memory budget" in error["message"]
    assert client.get("/topics/u3/stats").status_code == 404  # nothing changed
    assert client.delete("/topics/u0").status_code in (200, 202)
    assert client.post("/topics/u3/events", json=message).status_code == 202
    assert client.post("/topics/u0/events", json=message).status_code == 429


@pytest.mark.parametrize(
    ("given", "count"),
    [("100000", 100_000), ("1GiB", 2**30 // TOPIC_BYTES), ("1MiB", 2**20 // TOPIC_BYTES)],
)
def test_max_topics_is_a_memory_budget_or_a_count(given: str, count: int) -> None:
    settings = Settings.load({"max_topics": given}, {})
    assert settings.max_topics == count
    assert settings.topic_share == max(1, count // 4)  # a publisher's share of it


def test_a_budget_too_small_for_one_topic_is_refused_at_start() -> None:
    with pytest.raises(ConfigError, match="--max-topics"):
        Settings.load({"max_topics": "1KiB"}, {})


def test_the_topic_budget_admits_again_once_idle_topics_are_forgotten() -> None:
    env = {
        "PUSHSVC_TOPIC_TTL": "1s",
        "PUSHSVC_TICK": "100ms",
        "PUSHSVC_WINDOWS": "200ms,500ms",
        "PUSHSVC_MAX_TOPICS": f"{2 * TOPIC_BYTES // 1024}KiB",
        "PUSHSVC_MAX_TOPICS_PER_PUBLISHER": "2",
    }
    server = PushsvcProcess("serve", env=env).start()
    try:
        message = {"type": "shipped", "data": {"order": 1}}
        for topic in ("a", "b"):
            assert post(server.port, topic, message)[0] == 202
        status, body = post(server.port, "c", message)
        assert status == 429 and body["error"]["code"] == "too_many_topics"
        wait_until(
            lambda: request(server.port, "GET", "/topics/a/stats")[0] == 404,
            timeout=10,
            what="the idle topic forgotten",
        )
        assert post(server.port, "c", message)[0] == 202
    finally:
        server.stop()
