"""The delivery promise for series points: under load on Redis, the active aggregator is
killed with SIGKILL, and later every aggregator at once before two start cold (the log is
trimmed meanwhile: the coarse tier's open buckets come back from checkpoints). Afterwards the
stored series and what every `?series=` stream received equal an uninterrupted run's points:
none missing, doubled or different, on a redis-server and on a Redis Cluster (backends.py). The
same across a stop and start of `pushsvc serve --data-dir`. And with late events within a rule's
grace beyond the lateness, killed between late events and their corrections: every point and
every correction is stored and streamed exactly as an uninterrupted run publishes them."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness.live import PushsvcProcess, post, request, wait_caught_up

from faults import backends
from faults.backends import BOTH, Store
from faults.harness import (
    FaultStack,
    Producer,
    kill_9_then_cold_restart,
    published_points,
    watched_deployment,
)
from pushsvc.rules.analytics import Rules, default_rule, load_rules
from pushsvc.rules.tiers import parse_tiers
from support.promise import promise_kept

pytestmark = [pytest.mark.redis, pytest.mark.slow]

S = 1_000_000
TIERS = "1s:15m,10s:1h"
WATCHERS = 4


def _reference(acked: list[tuple[float, int]], topic: str) -> list[dict[str, Any]]:
    """The point messages an uninterrupted run publishes (without ids), in order."""
    rules = Rules((), default_rule((10 * S,), ("count",), parse_tiers(TIERS)))
    return published_points(rules, acked, topic, grace_us=5 * S)


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
    with promise_kept():
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


LATE_RULES = """
[[rule]]
topics = ["late.*"]
windows = ["2s"]
grace = "30s"
series = ["1s:15m", "10s:1h"]
"""


def _lag_us(n: int) -> int:
    """One event in five is late, by 20 ms to 20 s (within the grace), at a spread of lags."""
    return ((n * 7919) % 1000 + 1) * 20_000 if n % 5 == 4 else 0


def _late_reference(rules: Path, acked: list[tuple[float, int]], topic: str) -> list[Any]:
    """The point messages an uninterrupted run publishes (corrections too), in order."""
    loaded = load_rules(str(rules), default_rule((2 * S,), ("count",), parse_tiers(TIERS)))
    return published_points(loaded, acked, topic, grace_us=1 * S)


@pytest.fixture
def late_deployment(own_store: Store, prefix: str, tmp_path: Path) -> Iterator[FaultStack]:
    rules = tmp_path / "rules.toml"
    rules.write_text(LATE_RULES)
    env = {"PUSHSVC_SERIES": TIERS, "PUSHSVC_GRACE": "1s", "PUSHSVC_RULES": str(rules)}
    made = FaultStack(own_store, prefix, env=env)
    yield made
    made.stop()


@pytest.mark.parametrize("backend", BOTH, indirect=True)
def test_corrections_survive_kill_9_and_a_cold_restart(
    late_deployment: FaultStack, tmp_path: Path
) -> None:
    deployment = late_deployment
    topic = f"late.{uuid.uuid4().hex[:8]}"
    watchers = watched_deployment(deployment, topic, WATCHERS, query="?series=1s&series=10s")
    producer = Producer(deployment, topic, rate=160.0, lag_us=_lag_us)
    # A late event every 100 ms of event time, each corrected at the next whole second of
    # the clock: at any moment some wait for their correction, so both kills land between
    # late events and their corrections. 2,400 events of 20 ms: 48 s, past the 30 s grace, so
    # that the log is trimmed past buckets a checkpoint holds.
    kill_9_then_cold_restart(
        deployment, watchers, producer, kill_at=600, all_killed_at=1800, end_at=2400,
        checkpointed=True,
    )  # fmt: skip
    assert set(producer.statuses) == {202}, producer.statuses
    expected = _late_reference(tmp_path / "rules.toml", producer.acked, topic)
    corrections = [m for m in expected if m.get("correction")]
    assert len(corrections) > 40 and {m["resolution"] for m in corrections} == {"1s", "10s"}
    last: dict[tuple[str, float], dict[str, Any]] = {}
    for message in expected:
        last[(message["resolution"], message["point"]["t"])] = message
    assert _by_tier(_stored(deployment.ports()[0], topic)) == _by_tier(
        [{k: v for k, v in m.items() if k != "correction"} for m in last.values()]
    )
    with promise_kept():
        for watcher in watchers:
            ids = [i for i, _ in watcher.received.points]
            assert len(set(ids)) == len(ids), f"{watcher.name}: a message arrived twice"
            got = [
                {k: v for k, v in data.items() if k != "id"} for _, data in watcher.received.points
            ]
            assert got == expected[len(expected) - len(got) :], watcher.name
            assert len(got) >= len(expected) - 4
