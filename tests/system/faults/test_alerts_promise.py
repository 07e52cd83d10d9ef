"""The delivery promise for alert changes: under load on Redis the active aggregator is killed
with SIGKILL while an alert is pending and later every aggregator while it fires, and two start
cold (the log trimmed meanwhile: the instances' states come back from checkpoints). The
`_alerts` stream shows each change exactly once, at the same topic-clock times and with the
same values as an uninterrupted run; on a redis-server and on a Redis Cluster (backends.py)."""

from __future__ import annotations

import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from faults.backends import BOTH, Store
from faults.harness import FaultStack, Producer, kill_9_then_cold_restart, watched_deployment
from pushsvc.aggregate.aggregator import Aggregator
from pushsvc.core.event import Event
from pushsvc.rules.analytics import Rules, default_rule, parse_rules
from support.promise import promise_kept

pytestmark = [pytest.mark.redis, pytest.mark.slow]

S = 1_000_000
# Event n has value n at n * 20 ms: max[2s] passes 100 at event 101, `for` holds it pending 2 s
# of event time (100 events: the first kill, at event 150, lands then), then it fires for good
# (the values only grow) before every aggregator is killed at event 260.
RULES = """
[[rule]]
topics = ["alerting.*"]
windows = ["2s"]
stats = ["count", "max"]

[[alert]]
name = "climbing"
topics = ["alerting.*"]
when = "max[2s] > 100"
for = "2s"
labels = { severity = "test" }
"""


def _reference(acked: list[tuple[float, int]], topic: str) -> list[dict[str, object]]:
    rules: Rules = parse_rules(tomllib.loads(RULES), default_rule((10 * S,), ("count",)))
    aggregator = Aggregator(rules=rules, wall_clock=lambda: 0, lateness_us=5 * S)
    out = []
    for value, ts_us in acked:
        drafts = aggregator.apply_events(topic, [Event(value, ts_us, None)])
        out += [orjson.loads(d.body) for d in drafts if d.instance is not None]
    return out


@pytest.fixture
def deployment(own_store: Store, prefix: str, tmp_path: Path) -> Iterator[FaultStack]:
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    env = {"PUSHSVC_RULES": str(rules), "PUSHSVC_SERIES": "none"}
    made = FaultStack(own_store, prefix, env=env)
    yield made
    made.stop()


@pytest.mark.parametrize("backend", BOTH, indirect=True)
def test_alert_changes_survive_kill_9_and_a_cold_restart(deployment: FaultStack) -> None:
    topic = f"alerting.{uuid.uuid4().hex[:8]}"
    # The updates and the changes, on one stream.
    watchers = watched_deployment(deployment, topic, 3, path=f"/stream?topic={topic}&topic=_alerts")
    producer = Producer(deployment, topic, rate=160.0)
    kill_9_then_cold_restart(deployment, watchers, producer, kill_at=150, all_killed_at=260)

    assert set(producer.statuses) == {202}, producer.statuses
    expected = _reference(producer.acked, topic)
    assert [c["state"] for c in expected] == ["pending", "firing"]
    with promise_kept():
        for watcher in watchers:
            ids = [i for i, _ in watcher.received.alerts]
            assert len(set(ids)) == len(ids), f"{watcher.name}: a change arrived twice"
            got = [
                {k: v for k, v in data.items() if k != "id"} for _, data in watcher.received.alerts
            ]
            assert got == expected, watcher.name
