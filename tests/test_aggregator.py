"""The aggregator alone: one update per event, ownership, standby, idle ticks (clock injected)."""

from __future__ import annotations

import orjson

from pushsvc.aggregator import Aggregator, owns
from pushsvc.broker.base import UpdateDraft
from pushsvc.events import Event

S = 1_000_000


class Wall:
    def __init__(self) -> None:
        self.now = 1_763_700_000 * S

    def __call__(self) -> int:
        return self.now


def _aggregator(published: list[UpdateDraft], wall: Wall, **kw: object) -> Aggregator:
    return Aggregator(
        windows_us=[2 * S, 60 * S],
        labels=["2s", "1m"],
        allowed_lateness_us=5 * S,
        publish=published.extend,
        wall_clock=wall,
        **kw,  # type: ignore[arg-type]
    )


def test_one_update_per_event_with_the_event_echoed() -> None:
    published: list[UpdateDraft] = []
    wall = Wall()
    agg = _aggregator(published, wall)
    agg.handle("orders", [Event(1.0, wall.now), Event(3.0, wall.now + 1, {"k": "v"})])
    bodies = [orjson.loads(d.body) for d in published]
    assert [b["topic"] for b in bodies] == ["orders", "orders"]
    assert published[0].body.startswith(b'{"topic":"orders",')
    assert bodies[1]["event"] == {"value": 3.0, "ts": (wall.now + 1) / S, "tags": {"k": "v"}}
    assert bodies[1]["reason"] == "event"
    assert bodies[1]["windows"]["2s"]["mean"] == 2.0
    assert [d.clock_us for d in published] == [wall.now, wall.now + 1]


def test_too_late_events_are_dropped_and_counted_not_applied() -> None:
    published: list[UpdateDraft] = []
    wall = Wall()
    agg = _aggregator(published, wall)
    agg.handle("t", [Event(1.0, wall.now), Event(2.0, wall.now - 6 * S), Event(3.0, wall.now - S)])
    assert agg.late_dropped == 1
    assert [orjson.loads(d.body)["windows"]["1m"]["count"] for d in published] == [1, 2]


def test_standby_keeps_state_but_publishes_nothing() -> None:
    published: list[UpdateDraft] = []
    wall = Wall()
    agg = _aggregator(published, wall)
    agg.active = False
    agg.handle("t", [Event(1.0, wall.now), Event(2.0, wall.now)])
    assert published == []
    agg.active = True
    agg.handle("t", [Event(3.0, wall.now)])
    assert orjson.loads(published[-1].body)["windows"]["1m"]["count"] == 3


def test_idle_tick_slides_windows_with_wall_time() -> None:
    published: list[UpdateDraft] = []
    wall = Wall()
    agg = _aggregator(published, wall)
    start = wall.now
    agg.handle("t", [Event(5.0, start - S)])  # event time one second behind the wall clock
    published.clear()
    wall.now += S // 2
    assert agg.tick() == 0  # 1.5 s after the event: still inside the 2 s window
    wall.now += 3 * S // 2
    assert agg.tick() == 1  # 2 s after it, exactly T - w: out of (T - w, T]
    tick = orjson.loads(published[-1].body)
    assert tick["reason"] == "tick" and tick["event"] is None
    assert tick["windows"]["2s"]["count"] == 0 and tick["windows"]["1m"]["count"] == 1
    assert tick["ts"] == (start + S) / S  # event clock + wall time elapsed since the event
    wall.now += S
    assert agg.tick() == 0  # nothing else changes until the minute passes


def test_sharding_is_stable_and_covers_every_topic_once() -> None:
    topics = [f"topic-{i}" for i in range(200)]
    owners = [[i for i in range(3) if owns(t, (i, 3))] for t in topics]
    assert all(len(o) == 1 for o in owners)
    assert {o[0] for o in owners} == {0, 1, 2}
    assert all(owns(t, (0, 1)) for t in topics)
    published: list[UpdateDraft] = []
    agg = _aggregator(published, Wall(), shard=(1, 3))
    for t in topics:
        agg.handle(t, [Event(1.0, 1)])
    assert {d.topic for d in published} == {
        t for t, o in zip(topics, owners, strict=True) if o == [1]
    }
