"""`DELETE /topics/{topic}` through kill -9 of aggregators, on one redis-server (lease 1 s, one
partition): the deletion is applied once, wherever the kill falls around it.

One web process, two aggregators (the holder and a standby), one stream of the topic. The
topic is locked by an event a minute ahead; then at each moment the active aggregator is
killed around the DELETE, a new event is posted (accepted at once: the web process dropped
the clock) and a second one once the stream saw the first. The stream must get exactly: the
locked update, one `"gap": true` snapshot naming the topic, then the two new updates with
counts 1 and 2 (anything published twice would show up before the last); `/stats` and
`/history` show the new topic only, as an uninterrupted run does.

* `kill-then-delete` — the holder is killed, then the topic deleted while nobody publishes:
  the standby takes the lease over and applies the deletion;
* `delete-then-kill` — the holder is killed right after the DELETE is answered, before or
  after it published the deletion (the machine decides): the standby publishes what the
  holder did not, once;
* `cold-rebuild` — every aggregator is killed once the deletion is published and a new one
  starts cold: it rebuilds the windows from the log (the delete entry included).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from harness.live import SSEClient, post, request
from harness.redis_server import RedisServer

from faults.harness import FaultStack

pytestmark = pytest.mark.redis


@pytest.fixture
def deployment(server: RedisServer, prefix: str) -> Iterator[FaultStack]:
    stack = FaultStack(server, prefix)
    stack.start_web()
    for _ in range(2):
        stack.start_aggregator()
    stack.active_aggregator()
    yield stack
    stack.stop()


def _delete(port: int, topic: str) -> None:
    status, _, body = request(port, "DELETE", f"/topics/{topic}")
    assert (status, json.loads(body)) == (200, {"topic": topic, "deleted": True})


@pytest.mark.parametrize("moment", ["kill-then-delete", "delete-then-kill", "cold-rebuild"])
@pytest.mark.parametrize("round_", range(2))
def test_a_deletion_is_applied_once_through_kill_9(
    deployment: FaultStack, topic: str, moment: str, round_: int
) -> None:
    (port,) = deployment.ports()
    stream = SSEClient(port, f"/topics/{topic}/stream", timeout=30)
    stream.next_data("snapshot")
    now = time.time()
    assert post(port, topic, {"value": 100, "ts": now + 60})[0] == 202
    assert stream.next_data()[1]["windows"]["1m"]["count"] == 1

    active = deployment.active_aggregator()
    if moment == "kill-then-delete":
        deployment.kill_aggregator(active)
        _delete(port, topic)
    elif moment == "delete-then-kill":
        _delete(port, topic)
        deployment.kill_aggregator(active)
    else:
        _delete(port, topic)
    gap = stream.next()
    assert (gap.event, json.loads(gap.data)["deleted"]) == ("snapshot", [topic])
    if moment == "cold-rebuild":
        for aggregator in list(deployment.aggregators):
            deployment.kill_aggregator(aggregator)
        deployment.start_aggregator()
    assert post(port, topic, {"value": 7, "ts": now})[0] == 202

    first = stream.next()
    assert first.event == "stats", first
    assert json.loads(first.data)["windows"]["1m"]["count"] == 1
    assert post(port, topic, {"value": 8, "ts": now})[0] == 202
    second = stream.next()
    assert second.event == "stats", second
    windows = json.loads(second.data)["windows"]["1m"]
    assert (windows["count"], windows["sum"]) == (2, 15)
    stream.close()

    stats = json.loads(request(port, "GET", f"/topics/{topic}/stats")[2])
    assert stats["id"] == second.id and stats["windows"]["1m"]["count"] == 2
    history = json.loads(request(port, "GET", f"/topics/{topic}/history")[2])["updates"]
    assert [u["id"] for u in history] == [first.id, second.id]
