"""The delivery promise for the analytics that outlive the event log: groups (first come,
first served up to max_groups), count windows and sketch windows (`1h`, wider than the
exact percentiles' 5 m), and the distinct counts and top values of each. Under load, the active
aggregator is killed with SIGKILL, and later every aggregator at once before two start
cold; the log is trimmed meanwhile, so the cold ones must restore checkpoints.

Afterwards every client got every update exactly once, and each update is byte for byte
the one an uninterrupted run computes (an in-process Aggregator with the same rules, fed the
acknowledged events in order): the same topic, group, count-window and sketch-window
statistics. On a redis-server and on a Redis Cluster (backends.py)."""

from __future__ import annotations

import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from faults import backends
from faults.backends import BOTH, Store
from faults.harness import FaultStack, Producer, kill_9_then_cold_restart, watched_deployment
from pushsvc.aggregate.aggregator import Aggregator
from pushsvc.core.event import Event
from pushsvc.rules.analytics import Rules, default_rule, parse_rules
from support.promise import promise_kept

pytestmark = [pytest.mark.redis, pytest.mark.slow]

S = 1_000_000
RULES = """
[[rule]]
topics = ["durable.*"]
windows = ["2s", "1h"]
last = [40]
stats = "all"
group_by = ["station"]
max_groups = 3
distinct = ["user"]
top = [{ tag = "dish", k = 3 }]
"""
STATIONS = ("grill", "fry", "wok", "bar", "pass")
WATCHERS = 6


def _station(n: int) -> dict[str, str]:
    # Five values for three groups: the last two (first seen later) share "(other)". Users
    # and dishes repeat on cycles of their own, so counts and rankings change as they slide.
    return {
        "station": STATIONS[(n * 7) % 11 % 5],
        "user": f"u{n * 13 % 97}",
        "dish": f"d{n * n % 7}",
    }


@pytest.fixture
def deployment(own_store: Store, prefix: str, tmp_path: Path) -> Iterator[FaultStack]:
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    # No series: their promise has its own test, and their open buckets keep the log longer
    # than the 2 s window this test trims past.
    env = {"PUSHSVC_RULES": str(rules), "PUSHSVC_SERIES": "none"}
    made = FaultStack(own_store, prefix, env=env)
    yield made
    made.stop()


def _reference(acked: list[tuple[float, int]]) -> list[dict[str, object]]:
    """The updates an uninterrupted run gives, without ids."""
    rules: Rules = parse_rules(
        tomllib.loads(RULES), default_rule((10 * S, 60 * S, 300 * S), ("count",))
    )
    aggregator = Aggregator(rules=rules, wall_clock=lambda: 0, topic_ttl_us=3600 * S)
    out = []
    for value, ts_us in acked:
        event = Event(value, ts_us, _station(int(value)))
        out += [orjson.loads(d.body) for d in aggregator.apply_events(TOPIC, [event])]
    return out


TOPIC = f"durable.{uuid.uuid4().hex[:8]}"


@pytest.mark.parametrize("backend", BOTH, indirect=True)
def test_groups_count_and_sketch_windows_survive_kill_9_and_a_cold_restart(
    deployment: FaultStack,
) -> None:
    watchers = watched_deployment(deployment, TOPIC, WATCHERS)
    producer = Producer(deployment, TOPIC, rate=160.0, tags=_station)
    kill_9_then_cold_restart(
        deployment, watchers, producer, end_at=620, checkpointed=True, trimmed=200
    )

    assert set(producer.statuses) == {202}, producer.statuses
    # The cold aggregators had to restore a checkpoint: the log no longer held the start.
    client = backends.client(deployment.redis)
    assert client.hexists(deployment.keys.of(TOPIC).checkpoint(TOPIC), "head")
    logged = sum(client.xlen(part.log) for part in deployment.keys)
    client.close()
    assert logged < len(producer.acked) - 200, "the log was not trimmed past the checkpoint"
    expected = _reference(producer.acked)
    assert len(expected) == len(producer.acked) > 600
    with promise_kept():
        for watcher in watchers:
            updates = watcher.received.updates
            ids = [i for i, _, _ in updates]
            assert len(set(ids)) == len(ids), f"{watcher.name}: an update arrived twice"
            assert not any(s["gap"] for s in watcher.received.snapshots)
            got = [{k: v for k, v in data.items() if k != "id"} for _, _, data in updates]
            first = next(i for i, e in enumerate(expected) if e["event"] == got[0]["event"])
            for offset, (update, want) in enumerate(zip(got, expected[first:], strict=True)):
                assert update == want, (watcher.name, first + offset)
