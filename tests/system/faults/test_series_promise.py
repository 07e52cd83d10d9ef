"""The delivery promise for series points: under load on Redis, the active aggregator is
killed with SIGKILL, and later every aggregator at once before two start cold (the log is
trimmed meanwhile: the coarse tier's open buckets come back from checkpoints). Afterwards the
stored series and what every `?series=` stream received equal an uninterrupted run's points:
none missing, doubled or different, on a redis-server and on a Redis Cluster (backends.py). The
same across a stop and start of `pushsvc serve --data-dir`."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from harness.live import PushsvcProcess, post, request, wait_caught_up

from faults import backends
from faults.backends import BOTH, Store
from faults.harness import FaultStack, Producer, kill_9_then_cold_restart, watched_deployment
from pushsvc.aggregate.aggregator import Aggregator
from pushsvc.core.event import Event
from pushsvc.rules.analytics import Rules, default_rule
from pushsvc.rules.tiers import parse_tiers

pytestmark = [pytest.mark.redis, pytest.mark.slow]

S = 1_000_000
TIERS = "1s:15m,10s:1h"
WATCHERS = 4


def _reference(acked: list[tuple[float, int]], topic: str) -> list[dict[str, Any]]:
    """The point messages an uninterrupted run publishes (without ids), in order."""
    rules = Rules((), default_rule((10 * S,), ("count",), parse_tiers(TIERS)))
    aggregator = Aggregator(rules=rules, wall_clock=lambda: 0, lateness_us=5 * S)
    out = []
    for value, ts_us in acked:
        drafts = aggregator.apply_events(topic, [Event(value, ts_us, None)])
        out += [orjson.loads(d.body) for d in drafts if d.series is not None]
    return out


def _stored(port: int, topic: str) -> list[dict[str, Any]]:
    """Every stored point of both tiers, as the reference's messages hold them."""
    out = []
    for resolution in ("1s", "10s"):
        status, _, body = request(port, "GET", f"/topics/{topic}/series?resolution={resolution}")
        assert status == 200, body
        out += [
            {"resolution": resolution, "topic": topic, "point": p}
            for p in json.loads(body)["points"]
        ]
    return out


def _by_tier(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(messages, key=lambda m: (m["resolution"] != "1s", m["point"]["t"]))


@pytest.fixture
def deployment(own_store: Store, prefix: str) -> Iterator[FaultStack]:
    # A 2 s window: the log is trimmed past the 10 s tier's open buckets, so a cold
    # aggregator must take them from a checkpoint.
    made = FaultStack(own_store, prefix, env={"PUSHSVC_SERIES": TIERS, "PUSHSVC_WINDOWS": "2s"})
    yield made
    made.stop()


@pytest.mark.parametrize("backend", BOTH, indirect=True)
def test_points_survive_kill_9_and_a_cold_restart(deployment: FaultStack) -> None:
    topic = f"series.{uuid.uuid4().hex[:8]}"
    watchers = watched_deployment(deployment, topic, WATCHERS, query="?series=1s&series=10s")
    producer = Producer(deployment, topic, rate=160.0)
    # 800 events of 20 ms: 16 s of event time, so that a 10 s point closes (its bucket ends
    # within 10 s of the first event, and closes 5 s of lateness later).
    kill_9_then_cold_restart(deployment, watchers, producer, end_at=800, checkpointed=True)

    assert set(producer.statuses) == {202}, producer.statuses
    client = backends.client(deployment.redis)
    assert client.hexists(deployment.keys.of(topic).checkpoint(topic), "series")
    logged = sum(client.xlen(part.log) for part in deployment.keys)
    client.close()
    assert logged < len(producer.acked), "the log was not trimmed past the checkpoint"
    expected = _reference(producer.acked, topic)
    assert sum(m["resolution"] == "10s" for m in expected) >= 1  # fewer under load
    assert _by_tier(_stored(deployment.ports()[0], topic)) == _by_tier(expected)
    for watcher in watchers:
        ids = [i for i, _ in watcher.received.points]
        assert len(set(ids)) == len(ids), f"{watcher.name}: a point arrived twice"
        got = [{k: v for k, v in data.items() if k != "id"} for _, data in watcher.received.points]
        # A watcher sees every point published after it subscribed, in order.
        assert got == expected[len(expected) - len(got) :], watcher.name
        assert len(got) >= len(expected) - 2


def test_points_survive_a_stop_and_start_with_a_data_dir(tmp_path: Path) -> None:
    topic = "series.kept"
    args = ("serve", "--tick", "0", "--data-dir", str(tmp_path), "--series", TIERS)
    events = [(float(i % 13), 1_763_700_000 * S + i * 300_000) for i in range(400)]
    first = PushsvcProcess(*args).start()
    try:
        for value, ts_us in events[:200]:
            assert post(first.port, topic, {"value": value, "ts": ts_us / S})[0] == 202
        wait_caught_up(first.port)
        before = _stored(first.port, topic)
    finally:
        first.stop()
    second = PushsvcProcess(*args).start()
    try:
        assert _stored(second.port, topic) == before
        for value, ts_us in events[200:]:
            assert post(second.port, topic, {"value": value, "ts": ts_us / S})[0] == 202
        after = _stored(second.port, topic)
    finally:
        second.stop()
    assert _by_tier(after) == _by_tier(_reference(events, topic))
