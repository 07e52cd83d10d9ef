"""A window keeps the name its rules file gives it: `1d` is labelled `1d` in the updates,
`/stats`, `GET /rules` and on the dashboard's data, not `24h`; a stream's `?windows=` selects
it by any equal duration (`1d`, `24h`, `86400s`), and an alert written against the old label
(`count[24h]`, from before windows kept their names) still loads and fires."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from harness.live import PushsvcProcess, SSEClient, post, request, wait_until

RULES = """
[[rule]]
topics = ["day.*"]
windows = ["1h", "1d"]
stats = ["count", "mean"]

[[alert]]
name = "busy_day"
topics = ["day.*"]
when = "count[24h] >= 2"
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PushsvcProcess]:
    rules = tmp_path_factory.mktemp("rules") / "rules.toml"
    rules.write_text(RULES)
    process = PushsvcProcess("serve", "--tick", "0", "--rules", str(rules)).start()
    yield process
    process.stop()


def _json(server: PushsvcProcess, path: str) -> Any:
    status, _, body = request(server.port, "GET", path)
    assert status == 200, body
    return json.loads(body)


def test_a_window_is_labelled_as_the_rules_file_writes_it(server: PushsvcProcess) -> None:
    topic = f"day.{uuid.uuid4().hex[:8]}"
    assert post(server.port, topic, {"value": 3.0, "ts": time.time()})[0] == 202
    wait_until(lambda: request(server.port, "GET", f"/topics/{topic}/stats")[0] == 200)
    stats = _json(server, f"/topics/{topic}/stats")
    assert list(stats["windows"]) == ["1h", "1d"]
    assert stats["windows"]["1d"]["count"] == 1
    rule = _json(server, "/rules")["rules"][0]
    assert [w["label"] for w in rule["windows"]] == ["1h", "1d"]
    updates = _json(server, f"/topics/{topic}/history")["updates"]
    assert list(updates[-1]["windows"]) == ["1h", "1d"]


@pytest.mark.parametrize("asked", ["1d", "24h", "86400s", "1440m"])
def test_a_stream_selects_the_window_by_any_equal_duration(
    server: PushsvcProcess, asked: str
) -> None:
    topic = f"day.{uuid.uuid4().hex[:8]}"
    assert post(server.port, topic, {"value": 5.0, "ts": time.time()})[0] == 202
    wait_until(lambda: request(server.port, "GET", f"/topics/{topic}/stats")[0] == 200)
    for selector in (topic, "day.*"):
        with SSEClient(server.port, f"/stream?topic={selector}&windows={asked}") as sse:
            assert sse.status == 200, sse.raw[:300]
            snapshot = json.loads(sse.next().data)
            assert snapshot["topics"][topic]["windows"] == {"1d": {"count": 1, "mean": 5.0}}


def test_a_window_no_rule_keeps_is_refused_naming_the_labels(server: PushsvcProcess) -> None:
    status, _, body = request(server.port, "GET", "/stream?topic=day.x&windows=2d")
    assert status == 400
    error = json.loads(body)["error"]["message"]
    assert "1d" in error and "24h" not in error and "'2d'" in error


def test_an_alert_written_with_an_equal_duration_still_fires(server: PushsvcProcess) -> None:
    topic = f"day.{uuid.uuid4().hex[:8]}"
    with SSEClient(server.port, "/stream?topic=_alerts") as sse:
        assert sse.status == 200
        sse.next()  # the snapshot
        now = time.time()
        assert (
            post(server.port, topic, [{"value": 1.0, "ts": now}, {"value": 2.0, "ts": now}])[0]
            == 202
        )
        change = json.loads(sse.next().data)
    assert change["alert"] == "busy_day" and change["topic"] == topic
    assert change["state"] == "firing"
