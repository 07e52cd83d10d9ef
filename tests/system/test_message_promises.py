"""The promises every update keeps, held for messages (docs/reliability.md, "Messages"), against
real `pushsvc serve` processes (embedded and Redis): an `Idempotency-Key` repeat logs nothing
and another body under it is a 422; `DELETE /topics/{t}` on a messages topic; presence counts
`/messages` streams; a gzip messages stream decodes to what a plain one receives and shares its
context with every stream of its shape; the Redis bridge (`PUBLISH {prefix}ingest:{topic}`) and
the PostgreSQL outbox (a row whose `event` is a message) deliver each message as published.
Streams are read by a WHATWG event-stream parser, as an `EventSource` reads them."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import redis
from harness.live import (
    PushsvcProcess,
    SSEClient,
    post,
    request,
    serving_on,
    subscribers,
    wait_until,
)
from harness.postgres_server import PostgresServer, unavailable
from harness.redis_server import RedisServer
from harness.sse_parser import SSEMessage

from pushsvc.ingest.outbox_sql import ddl
from support.gzip_sse import GzipSSEClient

BACKENDS = ["memory", pytest.param("redis", marks=pytest.mark.redis)]
REPLAYED = "idempotent-replayed"


@pytest.fixture(params=BACKENDS, scope="module")
def server(request: pytest.FixtureRequest) -> Iterator[PushsvcProcess]:
    with serving_on(request.param, "--tick", "0", "--heartbeat", "1s") as proc:
        yield proc


def next_message(stream: SSEClient, timeout: float | None = None) -> SSEMessage:
    """The stream's next message, past its head (an `id:` alone, with no data)."""
    while True:
        message = stream.next(timeout)
        if message.data:
            return message


def published(messages: list[SSEMessage]) -> list[tuple[str, Any]]:
    return [(m.event, json.loads(m.data)) for m in messages]


def publish(
    port: int, topic: str, body: Any, key: str
) -> tuple[int, dict[str, str], dict[str, Any]]:
    status, headers, answer = request(
        port, "POST", f"/topics/{topic}/events", body, headers={"Idempotency-Key": key}
    )
    return status, headers, json.loads(answer)


def history_messages(port: int, topic: str) -> list[tuple[str, Any]]:
    """The topic's messages its history holds, oldest first."""
    status, _, body = request(port, "GET", f"/topics/{topic}/history?limit=100")
    assert status == 200, body
    events = [u["event"] for u in json.loads(body)["updates"]]
    return [(e["type"], e["data"]) for e in events if e and "type" in e]


def test_a_repeated_message_logs_nothing_and_another_body_under_its_key_is_a_422(
    server: PushsvcProcess, topic: str
) -> None:
    order = [{"type": "shipped", "data": {"order": 4711}}, {"type": "paid", "data": [1, "x"]}]
    with SSEClient(server.port, f"/topics/{topic}/messages") as stream:
        status, headers, body = publish(server.port, topic, order, "order-4711")
        assert (status, body) == (202, {"accepted": 2}) and REPLAYED not in headers
        for _ in range(2):
            status, headers, body = publish(server.port, topic, order, "order-4711")
            assert (status, body, headers[REPLAYED]) == (202, {"accepted": 2}, "true")
        # Another message under the same key: refused, nothing logged.
        other = [{**order[0], "data": {"order": 4712}}, order[1]]
        status, headers, body = publish(server.port, topic, other, "order-4711")
        assert status == 422 and body["error"]["code"] == "idempotency_key_reused"
        assert REPLAYED not in headers
        assert post(server.port, topic, {"type": "marker", "data": None})[0] == 202
        received = [next_message(stream) for _ in range(3)]
    # The marker follows the two messages: none was logged twice, nor the refused one.
    assert published(received) == [
        ("shipped", {"order": 4711}),
        ("paid", [1, "x"]),
        ("marker", None),
    ]
    assert history_messages(server.port, topic) == published(received)


def test_a_deleted_messages_topic_goes_on_with_its_next_message(
    server: PushsvcProcess, topic: str
) -> None:
    # A deletion drops a topic's statistics and latest update; a messages stream loses none
    # of its messages to it: those before it were sent, those after it follow, in order. A
    # resume from before it replays both sides once; `?replay=` starts after it (the topic
    # starts afresh, as its history read does).
    path = f"/topics/{topic}/messages"
    with SSEClient(server.port, path) as stream:
        assert post(server.port, topic, {"type": "first", "data": 0})[0] == 202
        first = next_message(stream)
        assert post(server.port, topic, {"type": "before", "data": 1, "value": 5})[0] == 202
        before = next_message(stream)
        status, _, body = request(server.port, "DELETE", f"/topics/{topic}")
        assert status in (200, 204), body
        assert post(server.port, topic, {"type": "after", "data": 2})[0] == 202
        after = next_message(stream)
    assert published([before, after]) == [("before", 1), ("after", 2)]
    status, _, body = request(server.port, "GET", f"/topics/{topic}/stats")
    assert status == 200 and "value" not in json.loads(body)["event"]  # afresh: no value seen
    with SSEClient(server.port, path, {"Last-Event-ID": first.id}) as resumed:
        assert published([next_message(resumed) for _ in range(2)]) == [
            ("before", 1),
            ("after", 2),
        ]
    with SSEClient(server.port, f"{path}?replay=10") as replayed:
        assert published([next_message(replayed)]) == [("after", 2)]
        assert post(server.port, topic, {"type": "live", "data": 3})[0] == 202
        assert published([next_message(replayed)]) == [("live", 3)]


def _watching(server: PushsvcProcess, topic: str) -> object:
    status, _, body = request(server.port, "GET", f"/topics/{topic}/presence")
    assert status == 200, body
    return json.loads(body)["watching"]


def test_presence_counts_messages_streams_as_it_counts_statistics_streams(
    server: PushsvcProcess,
) -> None:
    prefix = f"p{uuid.uuid4().hex[:8]}"
    topic = f"{prefix}.orders"

    def counts(expected: int, never: int) -> None:
        # On Redis each web process writes its counts to Redis as they change: awaited there.
        wait_until(
            lambda: (
                (_watching(server, topic), _watching(server, f"{prefix}.never"))
                == (expected, never)
            ),
            what=f"{expected} streams of {topic}",
        )

    counts(0, 0)
    one = SSEClient(server.port, f"/topics/{topic}/messages")
    assert one.status == 200
    counts(1, 0)
    pattern = SSEClient(server.port, f"/messages?topic={prefix}.*")
    stats = SSEClient(server.port, f"/topics/{topic}/stream")
    counts(3, 1)
    for stream, left, never in ((one, 2, 1), (pattern, 1, 0), (stats, 0, 0)):
        stream.close()
        counts(left, never)


def test_a_gzip_messages_stream_decodes_to_what_a_plain_one_receives(
    server: PushsvcProcess, topic: str
) -> None:
    path = f"/messages?topic={topic}&topic={topic}.more"
    data = [{"n": n, "text": "caf\u00e9 \u2028 " * n} for n in range(30)]
    with (
        SSEClient(server.port, path) as plain,
        GzipSSEClient(server.port, path) as gzipped,
    ):
        assert "content-encoding" not in plain.response_headers
        assert gzipped.response_headers["content-encoding"] == "gzip"
        batch = [{"type": f"t{n % 3}", "data": d} for n, d in enumerate(data)]
        assert post(server.port, topic, batch[:20])[0] == 202
        assert post(server.port, f"{topic}.more", batch[20:])[0] == 202
        seen_plain = [next_message(plain) for _ in data]
        seen_gzip = [next_message(gzipped) for _ in data]
        # A stream joining mid-context, resumed from the first stream's fifth message.
        with GzipSSEClient(server.port, path, {"Last-Event-ID": seen_gzip[4].id}) as resumed:
            assert resumed.response_headers["content-encoding"] == "gzip"
            seen_resumed = [next_message(resumed) for _ in data[5:]]
    assert [(m.id, m.event, m.data) for m in seen_gzip] == [
        (m.id, m.event, m.data) for m in seen_plain
    ]
    # Each topic's messages in order; the two topics' may interleave either way (on Redis
    # they can be in two partitions, whose aggregators publish independently).
    got = [json.loads(m.data) for m in seen_plain]
    assert sorted(got, key=lambda m: int(m["n"])) == data  # each as published
    assert _per_topic(got) == _per_topic(data)
    # The resumed stream gets what followed the fifth message, once, each topic's in order.
    assert _per_topic([json.loads(m.data) for m in seen_resumed]) == _per_topic(
        [json.loads(m.data) for m in seen_plain[5:]]
    )
    assert sorted(m.event for m in seen_resumed) == sorted(m.event for m in seen_plain[5:])
    assert gzipped.wire < len(gzipped.decoded)  # compressed on the wire


def _per_topic(messages: list[dict[str, Any]]) -> tuple[list[int], list[int]]:
    """The test's message numbers as each of its two topics received them (the first 20 were
    posted to the first topic, the rest to the second)."""
    numbers = [m["n"] for m in messages]
    return [n for n in numbers if n < 20], [n for n in numbers if n >= 20]


def test_gzip_messages_streams_share_one_context_per_shape(topic: str) -> None:
    """Every messages stream of one shape is gzipped from the one shared context; the
    statistics stream of the same topic is another shape, gzipped from its own."""
    server = PushsvcProcess("serve", "--tick", "0").start()
    try:
        first = GzipSSEClient(server.port, f"/topics/{topic}/messages")
        same = GzipSSEClient(server.port, f"/topics/{topic}/messages")
        stats = GzipSSEClient(server.port, f"/topics/{topic}/stream")
        assert first.response_headers["content-encoding"] == "gzip"
        assert same.response_headers["content-encoding"] == "gzip"
        assert stats.response_headers["content-encoding"] == "gzip"
        assert post(server.port, topic, {"type": "hello", "data": {"to": "all"}})[0] == 202
        for stream in (first, same):
            assert published([next_message(stream)]) == [("hello", {"to": "all"})]
        for stream in (first, same, stats):
            stream.close()
        wait_until(lambda: subscribers(server.port) == 0, what="the streams released")
    finally:
        server.stop()


# -- producers on Redis and in PostgreSQL ------------------------------------------------------


@pytest.mark.redis
def test_a_message_published_on_redis_reaches_messages_streams_as_published(
    redis_server: RedisServer, prefix: str, topic: str
) -> None:
    env = {
        "PUSHSVC_REDIS_URL": redis_server.url,
        "PUSHSVC_PREFIX": prefix,
        "PUSHSVC_TICK": "0",
        "PUSHSVC_LEASE": "1s",
    }
    server = PushsvcProcess("serve", env=env).start()
    client = redis.Redis(port=redis_server.port)
    try:
        wait_until(
            lambda: any("bridge: bridging" in line for line in server.output),
            what="the bridge",
        )
        data = {"order": 4711, "lines": [{"sku": "A-1", "qty": 2}], "note": "\u2028 \u00e9"}
        channel = f"{prefix}ingest:{topic}"
        with SSEClient(server.port, f"/topics/{topic}/messages") as stream:
            assert client.publish(channel, json.dumps({"type": "shipped", "data": data})) == 1
            # NDJSON, a message and a plain event: the plain one is statistics only.
            ndjson = '{"data": "plain"}\n{"value": 3}\n{"type": "paid", "data": 1, "value": 9}\n'
            assert client.publish(channel, ndjson) == 1
            received = [next_message(stream) for _ in range(3)]
    finally:
        client.close()
        server.stop()
    assert published(received) == [("shipped", data), ("message", "plain"), ("paid", 1)]


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    why = unavailable()
    if why is not None:
        pytest.skip(why)
    server = PostgresServer().start()
    yield server
    server.close()


@pytest.mark.postgres
def test_an_outbox_row_whose_event_is_a_message_streams_as_published(
    postgres: PostgresServer, topic: str
) -> None:
    table = f"outbox_{uuid.uuid4().hex[:12]}"
    conn = psycopg.connect(postgres.dsn, autocommit=True)
    conn.execute(ddl(table))
    env = {
        "PUSHSVC_OUTBOX_DSN": postgres.dsn,
        "PUSHSVC_OUTBOX_TABLE": table,
        "PUSHSVC_TICK": "0",
        "PUSHSVC_LEASE": "1s",
    }
    server = PushsvcProcess("serve", env=env).start()
    rows = [
        {"type": "shipped", "data": {"order": 4711, "items": [1, 2.5, None]}},
        {"data": "caf\u00e9 \u2028"},
        {"type": "paid", "data": {"total": 12.5}, "value": 12.5},
    ]
    try:
        wait_until(
            lambda: any("outbox: reading" in line for line in server.output),
            what="the server reads the outbox",
        )
        with SSEClient(server.port, f"/topics/{topic}/messages") as stream:
            for row in rows:
                with conn.transaction():
                    conn.execute(
                        f"INSERT INTO {table} (topic, event) VALUES (%s, %s)",
                        (topic, json.dumps(row)),
                    )
            received = [next_message(stream) for _ in rows]
    finally:
        server.stop()
        conn.close()
    assert published(received) == [
        ("shipped", rows[0]["data"]),
        ("message", rows[1]["data"]),
        ("paid", rows[2]["data"]),
    ]
