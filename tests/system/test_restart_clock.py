"""Time across a restart: a topic's clock goes on by the wall time since its last event,
downtime included, so that after a stop and a start (`serve --data-dir`, a private Redis, and
a cold aggregator on Redis the same way) its windows and alert states are what an
uninterrupted run shows at the same wall time: the events have left the short windows, and
the alert they tripped has resolved."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness.live import PushsvcProcess, SSEClient, post, request, wait_caught_up
from harness.redis_server import RedisServer

RULES = """
[[rule]]
topics = ["w.*"]
windows = ["2s", "4s"]
stats = ["count", "mean"]

[[alert]]
name = "busy"
topics = ["w.*"]
when = "count[4s] >= 3"
clear = "count[4s] < 1"
"""
TOPIC = "w.a"
PAUSE_S = 5.0  # longer than the widest window: an uninterrupted run's windows are empty


@pytest.fixture(params=["data-dir", pytest.param("redis", marks=pytest.mark.redis)])
def args(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, ...]]:
    """`serve --data-dir`, or the one aggregating process of a Redis of the test's own (a
    cold aggregator after the stop)."""
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    if request.param == "data-dir":
        yield ("serve", "--data-dir", str(tmp_path / "data"), "--rules", str(rules))
        return
    server = RedisServer().start()
    try:
        yield ("serve", "--redis-url", server.url, "--rules", str(rules))
    finally:
        server.stop()


def _alerts(port: int) -> list[tuple[str, str]]:
    status, _, body = request(port, "GET", "/alerts")
    assert status == 200, body
    return [(a["topic"], a["state"]) for a in json.loads(body)["alerts"]]


def _windows(stats: dict[str, Any]) -> dict[str, int]:
    return {label: window["count"] for label, window in stats["windows"].items()}


def test_after_a_pause_windows_and_alerts_are_an_uninterrupted_runs(
    args: tuple[str, ...],
) -> None:
    first = PushsvcProcess(*args).start()
    try:
        now = time.time()
        events = [{"value": float(i), "ts": now} for i in range(5)]
        assert post(first.port, TOPIC, events)[0] == 202
        wait_caught_up(first.port)
        assert _alerts(first.port) == [(TOPIC, "firing")]
        stats = json.loads(request(first.port, "GET", f"/topics/{TOPIC}/stats")[2])
        assert _windows(stats) == {"2s": 5, "4s": 5}
    finally:
        first.stop()
    time.sleep(PAUSE_S)  # the downtime itself: what the test is about
    restarted_at = time.time()
    second = PushsvcProcess(*args).start()
    try:
        with SSEClient(second.port, f"/topics/{TOPIC}/stream", timeout=30) as stream:
            _, snapshot = stream.next_data("snapshot")
            # Its first tick moves the clock to the wall time, downtime included (an
            # uninterrupted run's clock), not a second past where the stop left it.
            while True:
                _, tick = stream.next_data()
                if tick.get("reason") == "tick":
                    break
        assert tick["ts"] >= restarted_at, (tick["ts"], restarted_at, snapshot)
        assert _windows(tick) == {"2s": 0, "4s": 0}
        wait_caught_up(second.port)
        assert _alerts(second.port) == []  # resolved, as it was before the pause ended
    finally:
        second.stop()
