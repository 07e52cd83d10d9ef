"""The delivery promise for anomaly scores: under load on Redis, the active aggregator is killed
with SIGKILL, later every aggregator at once before two start cold (the log trimmed meanwhile:
the detector's state comes back from a checkpoint only). Afterwards every stored point of the
scored tier, and every point a `?series=` stream received, has the score and flag an
uninterrupted run gives it. The same across a stop and start of `pushsvc serve --data-dir`."""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from harness.live import PushsvcProcess, post, request, wait_until

from faults import backends
from faults.backends import Store
from faults.harness import FaultStack, Producer, kill_9_then_cold_restart, watched_deployment
from pushsvc.aggregate.aggregator import Aggregator
from pushsvc.core.event import Event
from pushsvc.rules.analytics import default_rule, load_rules
from pushsvc.rules.tiers import parse_tiers

pytestmark = [pytest.mark.redis, pytest.mark.slow]

S = 1_000_000
TIERS = "1s:15m,10s:1h"
# Ten 1 s buckets of learning: the producer's run scores a few dozen.
RULES = """
[[rule]]
topics = ["scored.*"]
windows = ["2s"]
stats = ["count", "mean"]
anomaly = { every = "1s", stat = "mean", learn = "10s", threshold = 0.5 }
"""
WATCHERS = 3


def _rules_file(directory: Path) -> Path:
    path = directory / "rules.toml"
    path.write_text(RULES)
    return path


def _reference(acked: list[tuple[float, int]], topic: str, rules: Path) -> list[dict[str, Any]]:
    """The point messages of the scored tier an uninterrupted run publishes, in order."""
    loaded = load_rules(str(rules), default_rule((2 * S,), ("count",), parse_tiers(TIERS)))
    aggregator = Aggregator(rules=loaded, wall_clock=lambda: 0, lateness_us=5 * S)
    out = []
    for value, ts_us in acked:
        drafts = aggregator.apply_events(topic, [Event(value, ts_us, None)])
        out += [orjson.loads(d.body) for d in drafts if d.series is not None]
    return [m for m in out if m["resolution"] == "1s"]


def _stored(port: int, topic: str) -> list[dict[str, Any]]:
    status, _, body = request(port, "GET", f"/topics/{topic}/series?resolution=1s&limit=10000")
    assert status == 200, body
    return [{"resolution": "1s", "topic": topic, "point": p} for p in json.loads(body)["points"]]


@pytest.fixture
def deployment(own_store: Store, prefix: str, tmp_path: Path) -> Iterator[FaultStack]:
    env = {
        "PUSHSVC_SERIES": TIERS,
        "PUSHSVC_WINDOWS": "2s",
        "PUSHSVC_RULES": str(_rules_file(tmp_path)),
    }
    made = FaultStack(own_store, prefix, env=env)
    yield made
    made.stop()


def test_scores_survive_kill_9_and_a_cold_restart(deployment: FaultStack, tmp_path: Path) -> None:
    topic = f"scored.{uuid.uuid4().hex[:8]}"
    rules = tmp_path / "rules.toml"
    watchers = watched_deployment(deployment, topic, WATCHERS, query="?series=1s")
    producer = Producer(deployment, topic, rate=160.0)
    # Events 20 ms apart: the first kill while the detector learns (8 s), every aggregator
    # killed once it scores (16 s), 28 s of event time in all.
    kill_9_then_cold_restart(
        deployment, watchers, producer, kill_at=400, all_killed_at=800, end_at=1400,
        checkpointed=True,
    )  # fmt: skip

    assert set(producer.statuses) == {202}, producer.statuses
    client = backends.client(deployment.redis)
    assert client.hexists(deployment.keys.of(topic).checkpoint(topic), "anomaly")
    logged = sum(client.xlen(part.log) for part in deployment.keys)
    client.close()
    assert logged < len(producer.acked), "the log was not trimmed past the checkpoint"
    expected = _reference(producer.acked, topic, rules)
    assert expected and all("anomaly" in m["point"] for m in expected)
    for watcher in watchers:
        got = [{k: v for k, v in data.items() if k != "id"} for _, data in watcher.received.points]
        assert got == expected[len(expected) - len(got) :], watcher.name
        assert len(got) >= len(expected) - 2
    # Twenty more seconds of the producer's ramp, scored by the cold aggregator: one whose
    # detector came back empty would learn again for ten points and flag the ramp again.
    value, ts_us = max(producer.acked)
    more = [(value + n, ts_us + n * 20_000) for n in range(1, 1001)]
    port = deployment.ports()[0]
    for start in range(0, len(more), 100):
        batch = [{"value": v, "ts": t / S} for v, t in more[start : start + 100]]
        assert post(port, topic, batch)[0] == 202
    expected = _reference([*producer.acked, *more], topic, rules)
    # The ramp is flagged, and not where a detector that came back empty flags it.
    start = more[0][1] / S
    flagged = [m["point"]["t"] for m in expected if m["point"]["anomalous"]]
    cold = [m["point"]["t"] for m in _reference(more, topic, rules) if m["point"]["anomalous"]]
    assert flagged and [t for t in flagged if t >= start] != cold, (flagged, cold)
    wait_until(lambda: len(_stored(port, topic)) >= len(expected), timeout=20, what="points")
    assert _stored(port, topic) == expected


def _wave(n: int) -> list[tuple[float, int]]:
    """Four events a second around a slow wave, with a spike every 150 s, each higher than the
    last: it breaks out of the range seen, which is reported even in the rest after a flag."""
    out = []
    for i in range(n):
        for j in range(4):
            spike = 30 + 10 * (i // 150) if i % 150 == 149 else 0
            value = 20 + 3 * math.sin(i / 20) + 0.2 * j + spike
            out.append((round(value, 6), 1_763_700_000 * S + i * S + j * 250_000))
    return out


def test_scores_survive_a_stop_and_start_with_a_data_dir(tmp_path: Path) -> None:
    topic = "scored.kept"
    rules = _rules_file(tmp_path)
    data = tmp_path / "data"
    args = ("serve", "--tick", "0", "--data-dir", str(data), "--series", TIERS)
    args += ("--rules", str(rules), "--windows", "2s")
    events = _wave(400)
    half = len(events) // 2
    first = PushsvcProcess(*args).start()
    try:
        for start in range(0, half, 100):
            batch = [{"value": v, "ts": t / S} for v, t in events[start : start + 100]]
            assert post(first.port, topic, batch)[0] == 202
        wait_until(lambda: len(_stored(first.port, topic)) >= 190, timeout=20, what="points")
        before = _stored(first.port, topic)
    finally:
        first.stop()
    second = PushsvcProcess(*args).start()
    try:
        assert _stored(second.port, topic) == before
        for start in range(half, len(events), 100):
            batch = [{"value": v, "ts": t / S} for v, t in events[start : start + 100]]
            assert post(second.port, topic, batch)[0] == 202
        wait_until(lambda: len(_stored(second.port, topic)) >= 390, timeout=20, what="points")
        after = _stored(second.port, topic)
    finally:
        second.stop()
    expected = _reference(events, topic, rules)
    assert after == expected[: len(after)]
    flagged = [m["point"]["t"] for m in expected if m["point"]["anomalous"]]
    assert flagged and any(t > events[half][1] / S for t in flagged), flagged
