"""The delivery promise for forecasts: under load on Redis, the active aggregator is killed with
SIGKILL, later every aggregator at once before two start cold (the log trimmed meanwhile: the
model's state comes back from a checkpoint only). Afterwards every forecast a `?forecast=`
stream received, and the one `GET /topics/{topic}/forecast` answers (saying it is current: the
topic's clock the last event's, nothing pending), is the one an uninterrupted run makes. The
same across a stop and start of `pushsvc serve --data-dir`."""

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
from pushsvc.series.forecast_holt_winters import FIT_START, HoltWinters

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
FITTED = """
[[rule]]
topics = ["forecast.*"]
windows = ["2s"]
stats = ["count", "mean"]
forecast = { tier = "1s", season = "2s", horizon = "5s" }
"""
"""Parameters fitted per series: a fit starts once three seasons (6 buckets) are learned and
one every season after, each ending a few buckets later, so fits are under way and end on
both sides of each kill."""
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


@pytest.fixture(params=["fixed", "fitted"])
def deployment(
    own_store: Store, prefix: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[FaultStack]:
    (tmp_path / "rules.toml").write_text(RULES if request.param == "fixed" else FITTED)
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
    fitted = "alpha" not in (tmp_path / "rules.toml").read_text()
    # A fitted model: kills once fits are under way (from its sixth bucket, 6 s in).
    kill_at, all_killed_at, end_at = (1100, 1700, 2600) if fitted else (400, 800, 1400)
    kill_9_then_cold_restart(
        deployment, watchers, producer, kill_at=kill_at, all_killed_at=all_killed_at,
        end_at=end_at, checkpointed=True,
    )  # fmt: skip

    assert set(producer.statuses) == {202}, producer.statuses
    client = backends.client(deployment.redis)
    assert client.hexists(deployment.keys.of(topic).checkpoint(topic), "forecast")
    logged = sum(client.xlen(part.log) for part in deployment.keys)
    client.close()
    assert logged < len(producer.acked), "the log was not trimmed past the checkpoint"
    expected = _reference(producer.acked, topic, tmp_path / "rules.toml")
    assert sum(bool(m["forecast"]["points"]) for m in expected) > 10
    if fitted:
        # Fits ended within the run: a model learning its closed buckets' means has left the
        # start's parameters.
        buckets: dict[int, list[float]] = {}
        for value, ts_us in producer.acked:
            buckets.setdefault(ts_us // S, []).append(value)
        model = HoltWinters(2, fit=True, horizon=5)
        for second in sorted(buckets)[:-1]:
            model.learn(math.fsum(buckets[second]) / len(buckets[second]))
        assert model.params != FIT_START
    for watcher in watchers:
        got = [{k: v for k, v in data.items() if k != "id"} for _, data in watcher.received.points]
        assert got == expected[len(expected) - len(got) :], watcher.name
        assert len(got) >= len(expected) - 2
    port = deployment.ports()[0]
    last = expected[-1]["forecast"]
    # Everything applied, the answer says it is current: the topic's clock is the last event's.
    current = {"clock": producer.acked[-1][1] // 1000, "pending": 0}

    def answered() -> bool:
        status, _, body = request(port, "GET", f"/topics/{topic}/forecast")
        return status == 200 and json.loads(body) == {"topic": topic, **last, **current}

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
        # The answer adds how current the forecast is: every event applied, the topic's clock
        # the last event's.
        current = {"clock": part[-1][1] // 1000, "pending": 0}
        assert made and got == {"topic": topic, **made[0], **current}
        assert got["points"]
