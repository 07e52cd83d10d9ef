"""The delivery promise for forecasts: under load on Redis, the active aggregator is killed with
SIGKILL, later every aggregator at once before two start cold (the log trimmed meanwhile: the
model's state comes back from a checkpoint only). Afterwards every forecast a `?forecast=`
stream received, and the one `GET /topics/{topic}/forecast` answers, is the one an
uninterrupted run makes. The same across a stop and start of `pushsvc serve --data-dir`."""

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
T0 = 1_763_700_000 * S
TIERS = "1s:15m,10s:1h"
# Two seasons of 3 s to learn: the producer's run forecasts from its seventh bucket on.
RULES = """
[[rule]]
topics = ["forecast.*"]
windows = ["2s"]
stats = ["count", "mean"]
forecast = { tier = "1s", season = "3s", horizon = "5s", alpha = 0.3, gamma = 0.2 }
"""
WATCHERS = 3


def _reference(acked: list[tuple[float, int]], topic: str, rules: Path) -> list[dict[str, Any]]:
    """The forecast messages an uninterrupted run publishes, in order."""
    loaded = load_rules(str(rules), default_rule((2 * S,), ("count",), parse_tiers(TIERS)))
    aggregator = Aggregator(rules=loaded, wall_clock=lambda: 0, lateness_us=5 * S)
    out = []
    for value, ts_us in acked:
        drafts = aggregator.apply_events(topic, [Event(value, ts_us, None)])
        out += [orjson.loads(d.body) for d in drafts if d.series is not None]
    return [m for m in out if "forecast" in m]


@pytest.fixture
def deployment(own_store: Store, prefix: str, tmp_path: Path) -> Iterator[FaultStack]:
    (tmp_path / "rules.toml").write_text(RULES)
    env = {
        "PUSHSVC_SERIES": TIERS,
        "PUSHSVC_WINDOWS": "2s",
        "PUSHSVC_RULES": str(tmp_path / "rules.toml"),
    }
    made = FaultStack(own_store, prefix, env=env)
    yield made
    made.stop()


def test_forecasts_survive_kill_9_and_a_cold_restart(
    deployment: FaultStack, tmp_path: Path
) -> None:
    topic = f"forecast.{uuid.uuid4().hex[:8]}"
    watchers = watched_deployment(deployment, topic, WATCHERS, query="?forecast=1s")
    producer = Producer(deployment, topic, rate=160.0)
    kill_9_then_cold_restart(
        deployment, watchers, producer, kill_at=400, all_killed_at=800, end_at=1400,
        checkpointed=True,
    )  # fmt: skip

    assert set(producer.statuses) == {202}, producer.statuses
    client = backends.client(deployment.redis)
    assert client.hexists(deployment.keys.of(topic).checkpoint(topic), "forecast")
    logged = sum(client.xlen(part.log) for part in deployment.keys)
    client.close()
    assert logged < len(producer.acked), "the log was not trimmed past the checkpoint"
    expected = _reference(producer.acked, topic, tmp_path / "rules.toml")
    assert sum(bool(m["forecast"]["points"]) for m in expected) > 10
    for watcher in watchers:
        got = [{k: v for k, v in data.items() if k != "id"} for _, data in watcher.received.points]
        assert got == expected[len(expected) - len(got) :], watcher.name
        assert len(got) >= len(expected) - 2
    port = deployment.ports()[0]
    last = expected[-1]["forecast"]

    def answered() -> bool:
        status, _, body = request(port, "GET", f"/topics/{topic}/forecast")
        return status == 200 and _forecast_of(json.loads(body)) == {"topic": topic, **last}

    wait_until(answered, timeout=20, what="the last forecast")


def test_forecasts_survive_a_stop_and_start_with_a_data_dir(tmp_path: Path) -> None:
    topic = "forecast.kept"
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    args = ("serve", "--tick", "0", "--data-dir", str(tmp_path / "data"), "--series", TIERS)
    args += ("--rules", str(rules), "--windows", "2s")
    events = [
        (round(20 + 3 * math.sin(2 * math.pi * i / 3) + 0.2 * j, 6), T0 + i * S + j * 250_000)
        for i in range(120)
        for j in range(4)
    ]
    half = len(events) // 2
    expected = _reference(events, topic, rules)

    def forecast_after(port: int, closed: int) -> dict[str, Any]:
        answer: dict[str, Any] = {}

        def made() -> bool:
            nonlocal answer
            status, _, body = request(port, "GET", f"/topics/{topic}/forecast")
            answer = json.loads(body)
            return status == 200 and answer["from"] == (T0 + (closed - 1) * S) // 1000

        wait_until(made, timeout=20, what=f"the forecast after {closed} buckets")
        return answer

    for part, closed in ((events[:half], 54), (events[half:], 114)):
        server = PushsvcProcess(*args).start()
        try:
            for start in range(0, len(part), 100):
                batch = [{"value": v, "ts": t / S} for v, t in part[start : start + 100]]
                assert post(server.port, topic, batch)[0] == 202
            got = forecast_after(server.port, closed)
        finally:
            server.stop()
        made = [m["forecast"] for m in expected if m["forecast"]["from"] == got["from"]]
        assert made and _forecast_of(got) == {"topic": topic, **made[0]}
        assert got["points"]


def _forecast_of(answer: dict[str, Any]) -> dict[str, Any]:
    """A `GET /forecast` answer without how current it is (`clock`, `pending`), which the
    forecast's message does not carry."""
    return {k: v for k, v in answer.items() if k not in ("clock", "pending")}
