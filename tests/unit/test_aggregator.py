"""The aggregator alone: one draft per event, idle ticks, determinism (wall clock injected)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from pushsvc.aggregate.aggregator import Aggregator
from pushsvc.core.partitions import partition_of
from pushsvc.ingest import Event
from pushsvc.rules.alerts import AlertRule as Alert
from pushsvc.rules.alerts import parse_condition
from pushsvc.rules.analytics import Rules, default_rule
from pushsvc.stats import STAT_KEYS

S = 1_000_000
SRC = str(Path(__file__).resolve().parents[2] / "src")


class Wall:
    def __init__(self) -> None:
        self.now = 1_763_700_000 * S

    def __call__(self) -> int:
        return self.now


def _aggregator(wall: Wall) -> Aggregator:
    return Aggregator(rules=Rules((), default_rule([2 * S, 60 * S], STAT_KEYS)), wall_clock=wall)


def test_one_update_per_event_with_the_event_echoed() -> None:
    wall = Wall()
    drafts = _aggregator(wall).apply_events(
        "orders", [Event(1.0, wall.now), Event(3.0, wall.now + 1, {"k": "v"})]
    )
    bodies = [orjson.loads(d.body) for d in drafts]
    assert [b["topic"] for b in bodies] == ["orders", "orders"]
    assert drafts[0].body.startswith(b'{"topic":"orders",')
    assert bodies[1]["event"] == {"value": 3.0, "ts": (wall.now + 1) / S, "tags": {"k": "v"}}
    assert bodies[1]["reason"] == "event"
    assert bodies[1]["windows"]["2s"]["mean"] == 2.0
    assert [d.clock_us for d in drafts] == [wall.now, wall.now + 1]


def test_every_event_yields_its_update_even_one_before_every_window() -> None:
    # Lateness is judged when events are logged; what reaches the aggregator is applied.
    wall = Wall()
    drafts = _aggregator(wall).apply_events(
        "t", [Event(1.0, wall.now), Event(2.0, wall.now - 90 * S), Event(3.0, wall.now - S)]
    )
    counts = [orjson.loads(d.body)["windows"]["1m"]["count"] for d in drafts]
    assert counts == [1, 1, 2]  # the second is older than the widest window: in none
    assert [d.clock_us for d in drafts] == [wall.now] * 3  # T does not move back


def test_idle_tick_slides_windows_with_wall_time() -> None:
    wall = Wall()
    agg = _aggregator(wall)
    start = wall.now
    agg.apply_events("t", [Event(5.0, start - S)])  # event time one second behind the wall
    wall.now += S // 2
    assert agg.tick() == []  # 1.5 s after the event: still inside the 2 s window
    wall.now += 3 * S // 2
    (drafted,) = agg.tick()  # 2 s after it, exactly T - w: out of (T - w, T]
    tick = orjson.loads(drafted.body)
    assert tick["reason"] == "tick" and tick["event"] is None
    assert tick["windows"]["2s"]["count"] == 0 and tick["windows"]["1m"]["count"] == 1
    assert tick["ts"] == (start + S) / S  # event clock + wall time elapsed since the event
    wall.now += S
    assert agg.tick() == []  # nothing else changes until the minute passes


def test_applying_the_same_entries_gives_the_same_drafts() -> None:
    # What lets a standby or a restarted aggregator continue exactly (aggregate.shard_runner):
    # the wall clock only proposes ticks; applied ticks carry their clocks.
    first, second = Wall(), Wall()
    second.now += 7 * S
    entries: list[tuple[str, list[Event]] | dict[str, int]] = [
        ("a", [Event(1.0, 10 * S), Event(2.0, 11 * S)]),
        ("b", [Event(5.0, 10 * S)]),
        {"a": 12_500_000, "b": 20 * S},
        ("a", [Event(4.0, 12 * S), Event(8.0, 13 * S)]),
    ]
    outputs = []
    for wall in (first, second):
        agg = _aggregator(wall)
        drafts = []
        for entry in entries:
            if isinstance(entry, dict):
                drafts += agg.apply_ticks(entry)
            else:
                drafts += agg.apply_events(*entry)
        outputs.append([(d.topic, d.clock_us, d.body) for d in drafts])
    assert outputs[0] == outputs[1]
    assert [t for t, _, _ in outputs[0]] == ["a", "a", "b", "a", "b", "a", "a"]


def test_restore_clock_moves_the_windows_like_the_tick_that_moved_them() -> None:
    wall = Wall()
    ticked, restored = _aggregator(wall), _aggregator(wall)
    for agg in (ticked, restored):
        agg.apply_events("t", [Event(1.0, 10 * S), Event(2.0, 11 * S)])
    ticked.apply_ticks({"t": 12_500_000})
    restored.restore_clock("t", 12_500_000)
    assert ticked.clock("t") == restored.clock("t") == 12_500_000
    event = [Event(3.0, 10_600_000)]  # late, but within 2 s of 12.5 s: only in 1m
    assert ticked.apply_events("t", event)[0].body == restored.apply_events("t", event)[0].body


def test_a_restart_resumes_at_the_latest_updates_clock_plus_its_age() -> None:
    """A checkpoint saved after idle ticks that changed no window is ahead of the topic's
    latest update: the clock still resumes at that update's clock plus the wall time since it
    was published (downtime included), not at the checkpoint's plus the time since the
    rebuild."""
    wall = Wall()
    running = _aggregator(wall)
    start = wall.now
    events = [Event(1.0, start)]
    running.apply_events("t", events, (1, 0))  # the latest update: at `start`
    wall.now += S
    ticks = running.due_ticks()
    assert running.apply_ticks(ticks, (2, 0)) == []  # no window changed: nothing published
    checkpoint = running.checkpoint("t", (2, 0))
    assert checkpoint is not None and checkpoint.clock_us == start + S
    outage = 100 * S
    wall.now += outage
    cold = _aggregator(wall)  # a rebuild: the checkpoint, then the log up to it again
    cold.restore(checkpoint)
    cold.apply_events("t", events, (1, 0))
    cold.apply_ticks(ticks, (2, 0))
    cold.end_replay()
    cold.restore_clock("t", start, wall.now - start)
    assert cold.due_ticks() == {"t": wall.now}  # an uninterrupted run's clock now
    [tick] = [orjson.loads(d.body) for d in cold.tick()]
    assert tick["ts"] == wall.now / S
    assert {k: w["count"] for k, w in tick["windows"].items()} == {"2s": 0, "1m": 0}


def test_sharding_is_the_same_in_every_process_and_covers_every_shard() -> None:
    topics = [f"topic-{i}" for i in range(200)]
    owners = [partition_of(t, 3) for t in topics]
    assert set(owners) == {0, 1, 2}
    assert all(partition_of(t, 1) == 0 for t in topics)
    # Web processes choose the log and aggregators read it: they must agree whatever
    # Python's per-process string hash seed is.
    script = (
        "from pushsvc.core.partitions import partition_of;"
        f"print([partition_of(f'topic-{{i}}', 3) for i in range({len(topics)})])"
    )
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": SRC}
        out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True)
        assert out.stdout.decode().strip() == str(owners), out.stderr


def test_idle_topics_are_those_quiet_for_the_ttl_with_every_window_empty() -> None:
    wall = Wall()
    agg = _aggregator(wall)  # windows 2s and 1m
    start = wall.now
    agg.apply_events("quiet", [Event(1.0, start)])
    wall.now += 30 * S
    agg.apply_events("recent", [Event(1.0, wall.now)])
    wall.now += 31 * S  # quiet: idle 61 s, past the widest window; recent: idle 31 s
    ttl = 10 * S
    # With ticks, a topic qualifies once they emptied its windows.
    assert agg.idle_topics(ttl, ticking=True) == {}
    # Without ticks nothing slides the windows: they are judged at the clock a tick would
    # have moved the topic to.
    assert agg.idle_topics(ttl, ticking=False) == {"quiet": start}
    agg.tick()
    assert agg.idle_topics(ttl, ticking=True) == {"quiet": start + 61 * S}
    assert agg.idle_topics(100 * S, ticking=True) == {}  # not quiet for that long
    agg.forget(["quiet"])
    assert agg.topics() == ["recent"]
    assert agg.due_ticks().keys() <= {"recent"}


def test_a_topic_an_alert_fires_about_is_not_forgotten() -> None:
    """Forgetting a topic drops its state: not while an alert about it is active (here one
    that fires precisely because the topic went quiet), so no firing instance vanishes
    without its resolved change."""
    quiet = Alert("quiet", ("silent",), parse_condition("count[1m] < 1"), None, 0, 0, {}, {})
    wall = Wall()
    rules = Rules((), default_rule((2 * S, 60 * S), ("count",)), alerts=(quiet,))
    agg = Aggregator(rules=rules, wall_clock=wall)
    agg.apply_events("silent", [Event(1.0, wall.now)])
    agg.apply_events("other", [Event(1.0, wall.now)])
    wall.now += 61 * S
    fired = agg.tick()
    assert [orjson.loads(d.body)["state"] for d in fired if d.instance is not None] == ["firing"]
    assert agg.idle_topics(10 * S, ticking=True) == {"other": wall.now}


@pytest.mark.parametrize("stats", [STAT_KEYS, ("count", "sum", "min", "max")])
def test_a_topic_restored_empty_behaves_like_one_ticks_emptied(stats: tuple[str, ...]) -> None:
    # A rebuild restores a topic whose events all left the log (`restore_clock`): it must
    # go on exactly like the aggregator that watched the ticks empty it.
    wall = Wall()
    ticked, restored = (
        Aggregator(rules=Rules((), default_rule([2 * S, 60 * S], stats)), wall_clock=wall)
        for _ in range(2)
    )
    ticked.apply_events("t", [Event(1.0, 10 * S), Event(2.5, 11 * S)])
    ticked.apply_ticks({"t": 80 * S})
    restored.restore_clock("t", 80 * S)
    assert ticked.clock("t") == restored.clock("t") == 80 * S
    assert restored.topics() == ["t"] and restored.due_ticks() == {}
    batches = [
        [Event(3.0, 76 * S)],  # late, within 5 s: only in 1m
        [Event(4.0, 79 * S), Event(-1.5, 81 * S)],
        [Event(0.25, 10 * S)],  # before every window
    ]
    for batch in batches:
        expected = [d.body for d in ticked.apply_events("t", batch)]
        assert [d.body for d in restored.apply_events("t", batch)] == expected


def test_deleting_a_topic_resolves_its_firing_instances_and_ends_its_pending_ones() -> None:
    """A deleted topic's live instances never vanish silently: a firing one resolves (so
    Alertmanager hears it end) and a pending one turns inactive, at the topic's clock, after
    the deletion itself."""
    wall = Wall()
    hot = Alert("hot", ("t",), parse_condition("max[1m] > 10"), None, 0, 0, {}, {})
    slow = Alert("slow", ("t",), parse_condition("count[1m] > 1"), None, 60 * S, 0, {}, {})
    rules = Rules((), default_rule((2 * S, 60 * S), ("count", "max")), alerts=(hot, slow))
    agg = Aggregator(rules=rules, wall_clock=wall)
    drafts = agg.apply_events("t", [Event(50.0, wall.now), Event(1.0, wall.now + S)])
    started = [orjson.loads(d.body)["state"] for d in drafts if d.instance is not None]
    assert started == ["firing", "pending"]

    deletion, *changes = agg.delete("t")
    assert orjson.loads(deletion.body) == {"gap": True, "topics": {}, "deleted": ["t"]}
    assert deletion.topic == "t" and deletion.clock_us == wall.now + S
    ended = [orjson.loads(d.body) for d in changes]
    assert [(c["alert"], c["state"], c["since"]) for c in ended] == [
        ("hot", "resolved", (wall.now + S) / S),
        ("slow", "inactive", (wall.now + S) / S),
    ]
    assert [d.instance for d in changes] == [(d.instance[0], b"") for d in changes if d.instance]
    assert agg.topics() == []


def test_a_deleted_topic_starts_afresh_at_its_next_event_whatever_its_clock_was() -> None:
    wall = Wall()
    agg = _aggregator(wall)
    agg.apply_events("t", [Event(1.0, wall.now + 10**12)])  # a wrong clock, far ahead
    assert agg.clock("t") == wall.now + 10**12
    (deletion,) = agg.delete("t")
    assert deletion.deletes
    (fresh,) = agg.apply_events("t", [Event(2.0, wall.now)])
    windows = orjson.loads(fresh.body)["windows"]
    assert windows["1m"]["count"] == 1 and windows["1m"]["sum"] == 2.0
    assert agg.clock("t") == wall.now


def test_deleting_a_topic_the_aggregator_does_not_hold_still_drafts_the_deletion() -> None:
    # The broker may keep some of it (a latest update, series) whatever the aggregator holds.
    (deletion,) = _aggregator(Wall()).delete("never-seen")
    assert deletion.deletes and deletion.topic == "never-seen"
