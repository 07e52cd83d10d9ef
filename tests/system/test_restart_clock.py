"""Time across a restart: a topic's clock goes on by the wall time since its latest update was
published, downtime included, so that after a stop and a start (`serve --data-dir`, with one
worker or two, each a private Redis; and a cold aggregator on Redis the same way) its windows
and alert states are what an uninterrupted run shows at the same wall time: the events have
left the windows, and the alert they tripped has resolved.

The alert waits (`for`) before it fires: while it is pending, idle ticks move the topic's
clock on without changing a window, so no update of the topic is published and the checkpoint
saved at the stop is ahead of the topic's latest update, as after a server that ran idle a
while before it stopped. The restart must resume from the latest update's clock plus the wall
time since it was published, not from the checkpoint's clock plus the wall time since the
restart (which lags by the length of the outage)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness.live import PushsvcProcess, SSEClient, post, request, wait_caught_up
from harness.redis_server import RedisServer

WINDOWS_S = {"6s": 6.0, "12s": 12.0}
"""Wide enough that the stats read after the alert fires still hold the events on a loaded
machine (with 2 s, a tick had emptied the narrow window before the read, once in a run)."""
RULES = """
[[rule]]
topics = ["w.*"]
windows = ["6s", "12s"]
stats = ["count", "mean"]

[[alert]]
name = "busy"
topics = ["w.*"]
when = "count[12s] >= 3"
for = "1s"
clear = "count[12s] < 1"
"""
TOPIC = "w.a"
EVENTS = 5
PAUSE_S = 14.0  # longer than the widest window: an uninterrupted run's windows are empty


@pytest.fixture(
    params=["data-dir", "workers-data-dir", pytest.param("redis", marks=pytest.mark.redis)]
)
def args(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, ...]]:
    """`serve --data-dir`, `serve --workers 2 --data-dir`, or the one aggregating process
    of a Redis of the test's own (a cold aggregator after the stop)."""
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    if request.param == "data-dir":
        yield ("serve", "--data-dir", str(tmp_path / "data"), "--rules", str(rules))
        return
    if request.param == "workers-data-dir":
        data = str(tmp_path / "data")
        yield ("serve", "--workers", "2", "--data-dir", data, "--rules", str(rules))
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


def _uninterrupted(events_ts: float, clock: float) -> dict[str, int]:
    """An uninterrupted run's window counts at `clock`: the events stay in a window for its
    width after their time."""
    return {label: EVENTS if clock - events_ts < width else 0 for label, width in WINDOWS_S.items()}


def test_after_a_pause_windows_and_alerts_are_an_uninterrupted_runs(
    args: tuple[str, ...],
) -> None:
    first = PushsvcProcess(*args).start()
    try:
        with SSEClient(first.port, "/topics/_alerts/stream", timeout=30) as changes:
            changes.next_data("snapshot")
            now = time.time()
            events = [{"value": float(i), "ts": now} for i in range(EVENTS)]
            assert post(first.port, TOPIC, events)[0] == 202
            assert changes.next_data("alert")[1]["state"] == "pending"
            # Firing after its `for`: ticks have moved the clock past the latest update.
            assert changes.next_data("alert")[1]["state"] == "firing"
        wait_caught_up(first.port)
        assert _alerts(first.port) == [(TOPIC, "firing")]
        stats = json.loads(request(first.port, "GET", f"/topics/{TOPIC}/stats")[2])
        assert _windows(stats) == {"6s": EVENTS, "12s": EVENTS}
        assert stats["ts"] == pytest.approx(now)  # no window has changed since the events
    finally:
        first.stop()
    time.sleep(PAUSE_S)  # the downtime itself: what the test is about
    restarted_at = time.time()
    second = PushsvcProcess(*args).start()
    try:
        with SSEClient(second.port, f"/topics/{TOPIC}/stream", timeout=30) as stream:
            _, snapshot = stream.next_data("snapshot")
            held = snapshot["topics"][TOPIC]
            if held["ts"] == stats["ts"]:  # the latest update, as stopped
                _, update = stream.next_data()
                assert update.get("reason") == "tick", update
            else:
                # The restarted server's first tick was published before this stream came (a
                # loaded machine, two workers): the snapshot holds that update.
                update = held
        # The first update after the restart: an idle tick at the wall time (downtime
        # included), with an uninterrupted run's windows there, not a second past where the
        # stop left the clock.
        assert restarted_at <= update["ts"] <= time.time(), (update, restarted_at)
        assert _windows(update) == _uninterrupted(now, update["ts"]), update
        wait_caught_up(second.port)
        assert _alerts(second.port) == []  # resolved, as it was before the pause ended
    finally:
        second.stop()
