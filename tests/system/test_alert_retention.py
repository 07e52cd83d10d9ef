"""Alert changes outlive the update history, on the embedded broker and on Redis: topics
flooded far past `--history` leave every change of `_alerts` in `GET /topics/_alerts/history`
(what the dashboard shades past periods from), pages after an id continue through them, and on
Redis they are still all there after a restart."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness.live import PushsvcProcess, post, request, wait_until
from harness.redis_server import RedisServer

RULES = """
[[rule]]
topics = ["kiln.*"]
windows = ["10s"]
stats = ["count", "max"]

[[alert]]
name = "kiln_hot"
topics = ["kiln.*"]
when = "max[10s] > 250"
"""
T0 = 1_763_700_000.0
HISTORY = 40
KILNS = [f"kiln.{n}" for n in range(4)]  # in different partitions on Redis
CYCLES = 3


@pytest.fixture(params=["memory", "redis"])
def server_args(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[str]]:
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    args = ["serve", "--tick", "0", "--rules", str(rules), "--history", str(HISTORY)]
    if request.param == "memory":
        yield args
        return
    redis_server = RedisServer().start()
    yield [*args, "--redis-url", redis_server.url, "--prefix", "retained:"]
    redis_server.stop()


def _changes(port: int, query: str = "") -> dict[str, Any]:
    status, _, body = request(port, "GET", f"/topics/_alerts/history?limit=10000{query}")
    assert status == 200, body
    answer: dict[str, Any] = json.loads(body)
    return answer


def _trip_and_flood(port: int) -> list[tuple[str, str, float]]:
    """Each kiln fires and resolves CYCLES times (for = 0: a change at each crossing), then
    posts three times the history's length of quiet values: (topic, state, since) expected."""
    expected = []
    for kiln in KILNS:
        for cycle in range(CYCLES):
            at = T0 + 30 * cycle
            assert post(port, kiln, {"value": 300, "ts": at})[0] == 202
            assert post(port, kiln, {"value": 100, "ts": at + 11})[0] == 202
            expected += [(kiln, "firing", at), (kiln, "resolved", at + 11)]
    for kiln in KILNS:
        quiet = [{"value": 100, "ts": T0 + 100 + i / 10} for i in range(3 * HISTORY)]
        assert post(port, kiln, quiet)[0] == 202
    return expected


def _seen(port: int) -> list[tuple[str, str, float]]:
    return [(c["topic"], c["state"], c["since"]) for c in _changes(port)["updates"]]


def test_alert_changes_are_all_kept_when_the_history_turns_over(server_args: list[str]) -> None:
    proc = PushsvcProcess(*server_args).start()
    try:
        port = proc.port
        expected = _trip_and_flood(port)
        last = f"/topics/{KILNS[-1]}/history?limit=1"
        wait_until(
            lambda: (
                json.loads(request(port, "GET", last)[2])["updates"][0]["ts"]
                == pytest.approx(T0 + 100 + (3 * HISTORY - 1) / 10)
            ),
            what="the last quiet update",
        )
        # The flood turned the history over: each kiln's first updates are gone from it...
        status, _, body = request(port, "GET", f"/topics/{KILNS[0]}/history?limit=10000")
        assert status == 200 and len(json.loads(body)["updates"]) <= HISTORY
        # ...and every alert change is still there, in order per kiln.
        seen = _seen(port)
        for kiln in KILNS:
            assert [s for s in seen if s[0] == kiln] == [e for e in expected if e[0] == kiln]
        # Paging after an id continues through them.
        changes = _changes(port)["updates"]
        after = _changes(port, f"&since={changes[0]['id']}")
        assert [c["id"] for c in after["updates"]] == [c["id"] for c in changes[1:]]
        assert after.get("gap", False) is False
    finally:
        proc.stop()
    if "--redis-url" not in server_args:
        return
    # On Redis they survive a restart, as the history does.
    again = PushsvcProcess(*server_args).start()
    try:
        assert sorted(_seen(again.port)) == sorted(expected)
    finally:
        again.stop()
