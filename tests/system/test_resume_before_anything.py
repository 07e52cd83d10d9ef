"""A stream that ends before it received anything resumes from where it started, against real
`pushsvc serve` processes (embedded and on Redis, with partitions).

A browser's `EventSource` sends `Last-Event-ID` only once it has read an `id:`. A stream of
topics that have published nothing yet must therefore give one in its head, or a client whose
connection drops before the first message (a proxy's idle timeout, a phone changing networks)
comes back as a new subscriber, and what was published while it was away is lost without a
gap. Each case subscribes to fresh topics, reads the head as an `EventSource` would, drops,
publishes, and resumes with the id it holds: it must get what was published, once, in order.
Streams are read by a WHATWG event-stream parser."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from harness.live import PushsvcProcess, SSEClient, request, serving_on
from harness.sse_parser import SSEMessage

BACKENDS = ["memory", pytest.param("redis", marks=pytest.mark.redis)]


@pytest.fixture(params=BACKENDS, scope="module")
def server(request: pytest.FixtureRequest) -> Iterator[PushsvcProcess]:
    with serving_on(request.param, "--tick", "0", "--partitions", "4") as proc:
        yield proc


def _head_id(server: PushsvcProcess, path: str) -> str:
    """Open `path`, read its head as an EventSource does, drop the connection: the id an
    EventSource would send when it reconnects."""
    with SSEClient(server.port, path, timeout=10) as stream:
        assert stream.status == 200
        return stream.wait_last_event_id(bool, timeout=10)


def _post(server: PushsvcProcess, topic: str, body: dict[str, Any]) -> None:
    status, _, answer = request(server.port, "POST", f"/topics/{topic}/events", body)
    assert status == 202, answer


def _with_data(stream: SSEClient, count: int) -> list[SSEMessage]:
    """The next `count` messages that carry data."""
    got: list[SSEMessage] = []
    while len(got) < count:
        message = stream.next(10)
        if message.data:
            got.append(message)
    return got


def test_a_messages_stream_dropped_before_its_first_message_resumes_with_it(
    server: PushsvcProcess,
) -> None:
    topic = f"orders-{uuid.uuid4().hex[:8]}"
    started_at = _head_id(server, f"/topics/{topic}/messages")
    _post(server, topic, {"type": "shipped", "data": {"order": 4711}})
    _post(server, topic, {"type": "paid", "data": {"order": 4712}})
    headers = {"Last-Event-ID": started_at}
    with SSEClient(server.port, f"/topics/{topic}/messages", headers, timeout=10) as stream:
        got = [(m.event, json.loads(m.data)) for m in _with_data(stream, 2)]
        assert got == [("shipped", {"order": 4711}), ("paid", {"order": 4712})]
        _post(server, topic, {"type": "shipped", "data": {"order": 4713}})
        (after,) = _with_data(stream, 1)
        assert (after.event, json.loads(after.data)) == ("shipped", {"order": 4713})


def test_a_messages_stream_of_a_pattern_resumes_with_every_topic_it_missed(
    server: PushsvcProcess,
) -> None:
    prefix = f"shop{uuid.uuid4().hex[:8]}"
    started_at = _head_id(server, f"/messages?topic={prefix}.*")
    topics = [f"{prefix}.{name}" for name in ("eu", "us", "asia", "au", "sa")]
    for number, topic in enumerate(topics):
        _post(server, topic, {"type": "shipped", "data": {"order": number}})
    headers = {"Last-Event-ID": started_at}
    with SSEClient(server.port, f"/messages?topic={prefix}.*", headers, timeout=10) as stream:
        got = sorted(json.loads(m.data)["order"] for m in _with_data(stream, len(topics)))
        assert got == list(range(len(topics)))
        # Nothing more: the next is a message posted now, not one of those again.
        _post(server, topics[0], {"type": "shipped", "data": {"order": 99}})
        (after,) = _with_data(stream, 1)
        assert json.loads(after.data) == {"order": 99}


def test_a_series_stream_dropped_before_its_first_update_resumes_with_its_points(
    server: PushsvcProcess,
) -> None:
    topic = f"temp-{uuid.uuid4().hex[:8]}"
    path = f"/topics/{topic}/stream?series=1s"
    started_at = _head_id(server, path)
    t0 = int(time.time()) - 100  # a new topic's clock starts at its first event
    # The second event is past the first bucket's end and the 5 s grace: the bucket closes.
    _post(server, topic, {"value": 1.5, "ts": t0})
    _post(server, topic, {"value": 2.5, "ts": t0 + 7})
    with SSEClient(server.port, path, {"Last-Event-ID": started_at}, timeout=10) as stream:
        got = _with_data(stream, 3)
        assert [m.event for m in got] == ["stats", "stats", "point"]
        assert [json.loads(m.data)["event"]["value"] for m in got[:2]] == [1.5, 2.5]
        point = json.loads(got[2].data)
        assert point["resolution"] == "1s" and point["point"]["t"] == t0
        assert point["point"]["count"] == 1 and point["point"]["sum"] == 1.5
