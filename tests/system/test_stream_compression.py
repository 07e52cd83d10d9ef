"""gzip streams, end to end against real `pushsvc serve` processes (embedded and Redis): every
client that offers gzip decodes, message by message and with the same ids, what a plain
stream of the same topics and projection receives — a raw gzip reader as a browser offers it,
pushsvc's `Client` and `AsyncClient` (httpx decodes), curl `--compressed`, and Chromium's bare
`EventSource` — while streams join between reset points, disconnect and resume, write
heartbeats, and topics are deleted under them."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import threading
import uuid
import zlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from harness.live import (
    PushsvcProcess,
    SSEClient,
    metric_sample,
    post,
    request,
    serving_on,
    subscribers,
    wait_caught_up,
    wait_until,
)
from harness.sse_parser import EventStreamParser
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from playwright.sync_api import Browser

from pushsvc.client import AsyncClient, Client, Snapshot, StreamUpdate
from support.browser import page_of
from support.gzip_sse import GzipSSEClient

Seen = tuple[str, str, Any]
"""(id, event, data) of one message."""

PROJECTIONS: list[dict[str, list[str]]] = [
    {},
    {"windows": ["10s"], "stats": ["count", "mean"]},
    {"stats": ["p99", "max"]},
]


@pytest.fixture(scope="module", params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def server(request: pytest.FixtureRequest) -> Iterator[PushsvcProcess]:
    with serving_on(request.param, "--tick", "0", "--heartbeat", "1s") as proc:
        yield proc


def _path(topics: list[str], projection: dict[str, list[str]]) -> str:
    query = [f"topic={t}" for t in topics]
    query += [f"{name}={','.join(values)}" for name, values in projection.items()]
    return "/stream?" + "&".join(query)


def _stats(reader: SSEClient, count: int) -> list[Seen]:
    return [(i, "stats", data) for i, data in reader.take(count, timeout=15)]


class Curl:
    """`curl --compressed -N` on a stream, its output parsed as it comes."""

    def __init__(self, server: PushsvcProcess, path: str) -> None:
        self.seen: list[Seen] = []
        self.headers = b""
        self._proc = subprocess.Popen(
            ["curl", "-sS", "-N", "--compressed", "-D", "/dev/stderr", server.base + path],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        parser = EventStreamParser()
        assert self._proc.stdout is not None
        while chunk := self._proc.stdout.read1(65536):  # type: ignore[attr-defined]
            for message in parser.feed(chunk):
                if message.event == "stats":
                    self.seen.append((message.id, "stats", json.loads(message.data)))

    def close(self) -> bytes:
        self._proc.terminate()
        # Its output ends with it: the reader sees the end before `communicate` closes the
        # pipe (closed under a read, the reader's thread failed the test).
        self._reader.join(10)
        _, errors = self._proc.communicate(timeout=10)
        return errors


class Subscribed:
    """A pushsvc client's subscription in a thread of its own, its updates as (id, data)."""

    def __init__(self, server: PushsvcProcess, topics: list[str], projection: Any, kind: str):
        self.updates: list[tuple[str, Any]] = []
        self._stop = threading.Event()
        self.ready = threading.Event()
        self._kind = kind
        self._args = (server.base, topics, projection)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        base, topics, projection = self._args
        if self._kind == "Client":
            with Client(base) as client:
                for message in client.subscribe(topics, **projection):
                    if isinstance(message, Snapshot):
                        self.ready.set()
                    if isinstance(message, StreamUpdate):
                        self.updates.append((message.id, message.windows))
                    if self._stop.is_set():
                        return
        else:
            asyncio.run(self._run_async(base, topics, projection))

    async def _run_async(self, base: str, topics: list[str], projection: Any) -> None:
        async with AsyncClient(base) as client:
            async for message in client.subscribe(topics, **projection):
                if isinstance(message, Snapshot):
                    self.ready.set()
                if isinstance(message, StreamUpdate):
                    self.updates.append((message.id, message.windows))
                if self._stop.is_set():
                    return

    def stop(self) -> None:
        """It returns at its next update (the test posts one)."""
        self._stop.set()


_step = st.one_of(
    st.tuples(st.just("post"), st.integers(1, 40), st.sampled_from([0, 1])),
    st.tuples(st.just("join"), st.just(0), st.just(0)),
    st.tuples(st.just("resume"), st.just(0), st.just(0)),
    st.tuples(st.just("heartbeat"), st.just(0), st.just(0)),
)


@example(
    # Across reset points: a join between them, a heartbeat, a resume, then enough updates
    # for each to take the shared segments again.
    projection={},
    multi=True,
    steps=[
        ("post", 10, 0),
        ("join", 0, 0),
        ("post", 30, 1),
        ("heartbeat", 0, 0),
        ("resume", 0, 0),
        ("post", 40, 0),
        ("post", 40, 1),
    ],
    values=[i * 1.5 for i in range(96)],
)
@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    projection=st.sampled_from(PROJECTIONS),
    multi=st.booleans(),
    steps=st.lists(_step, min_size=2, max_size=8),
    values=st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=96, max_size=96),
)
def test_every_client_decodes_exactly_what_a_plain_stream_receives(
    server: PushsvcProcess,
    projection: dict[str, list[str]],
    multi: bool,
    steps: list[tuple[str, int, int]],
    values: list[float],
) -> None:
    uid = uuid.uuid4().hex[:10]
    topics = [f"z.{uid}.a", f"z.{uid}.b"] if multi else [f"z.{uid}.a"]
    path = _path(topics, projection)
    plain = SSEClient(server.port, path)
    assert "content-encoding" not in plain.response_headers  # http.client offers identity
    plain.next_data("snapshot")
    first = GzipSSEClient(server.port, path)
    assert first.response_headers["content-encoding"] == "gzip"
    assert first.response_headers["vary"] == "Accept-Encoding"
    first.next_data("snapshot")
    curl = Curl(server, path)
    clients = [Subscribed(server, topics, projection, kind) for kind in ("Client", "AsyncClient")]
    for client in clients:
        assert client.ready.wait(15)

    received: list[Seen] = []
    got_first: list[Seen] = []
    late: list[tuple[GzipSSEClient, int, list[Seen]]] = []
    n = 0
    for action, count, which in steps:
        if action == "post":
            events = [
                {"value": values[(n + i) % len(values)], "tags": {"k": str(i)}}
                for i in range(count)
            ]
            n += count
            assert post(server.port, topics[which % len(topics)], events)[0] == 202
            received += _stats(plain, count)
            got_first += _stats(first, count)
            for joined, _, seen in late:
                seen += _stats(joined, count)
        elif action == "join":
            # A stream joining mid-context: its snapshot, then what the plain stream gets next.
            joiner = GzipSSEClient(server.port, path)
            joiner.next_data("snapshot")
            late.append((joiner, len(received), []))
        elif action == "resume" and got_first:
            # The first gzip stream drops and resumes from its last id: no gap, no duplicate.
            first.close()
            first = GzipSSEClient(server.port, path, {"Last-Event-ID": got_first[-1][0]})
        elif action == "heartbeat":
            plain.wait_comments(len(plain.comments) + 1, timeout=5)
    assert got_first == received
    for joiner, at, seen in late:
        assert seen == received[at:]
        joiner.close()
    wait_until(lambda: len(curl.seen) >= len(received), what="curl got every update")
    errors = curl.close()
    assert b"content-encoding: gzip" in errors.lower()
    assert curl.seen == received
    for client in clients:
        wait_until(lambda c=client: len(c.updates) >= len(received), what="client updates")
        client.stop()
        # A client's update carries its own id (a multi-topic stream's `id:` is its cursor).
        expected = [(d["id"], d["windows"]) for _, _, d in received]
        assert client.updates[: len(received)] == expected
    post(server.port, topics[0], {"value": 0})  # the clients' threads return on it
    first.close()
    plain.close()


def test_a_deleted_topic_reaches_gzip_streams_as_plain_ones(
    server: PushsvcProcess, topic: str
) -> None:
    """A topic deleted under its streams: the gzip stream decodes what the plain one gets,
    and both end or go on alike."""
    path = f"/topics/{topic}/stream"
    assert post(server.port, topic, [{"value": v} for v in range(3)])[0] == 202
    wait_caught_up(server.port)  # both streams' snapshots show these three
    plain = SSEClient(server.port, path)
    zipped = GzipSSEClient(server.port, path)
    assert zipped.response_headers["content-encoding"] == "gzip"
    # Each snapshot read before what follows is posted: on Redis a stream takes its snapshot
    # once it is subscribed, and one taken after the next batch was published starts there.
    plain_seen = [_message(plain)]
    zipped_seen = [_message(zipped)]
    assert post(server.port, topic, [{"value": v} for v in range(3, 40)])[0] == 202
    assert request(server.port, "DELETE", f"/topics/{topic}")[0] in (200, 202, 204)
    assert post(server.port, topic, [{"value": 99}])[0] == 202
    plain_seen += _all_until_value(plain, 99.0)
    zipped_seen += _all_until_value(zipped, 99.0)
    assert plain_seen[0][1] == "snapshot"
    assert zipped_seen == plain_seen
    plain.close()
    zipped.close()


def _message(reader: SSEClient) -> tuple[str, str, Any]:
    message = reader.next(timeout=15)
    return (message.id, message.event, json.loads(message.data))


def _all_until_value(reader: SSEClient, value: float) -> list[tuple[str, str, Any]]:
    """Every message (snapshots with their data) until an update of `value`."""
    seen = []
    while True:
        seen.append(_message(reader))
        _, kind, data = seen[-1]
        event = data.get("event") if kind == "stats" else None
        if event and event.get("value") == value:
            return seen


def test_no_gzip_when_not_offered(server: PushsvcProcess, topic: str) -> None:
    for offered in ({}, {"Accept-Encoding": "identity"}, {"Accept-Encoding": "gzip;q=0"}):
        stream = SSEClient(server.port, f"/topics/{topic}/stream", offered)
        assert "content-encoding" not in stream.response_headers, offered
        assert stream.next_data("snapshot")[1]["gap"] is False  # plain bytes, parsed as such
        stream.close()


def test_chromium_event_source_decodes_the_gzip_stream(
    server: PushsvcProcess, browser: Browser, topic: str
) -> None:
    """A bare EventSource offers gzip and decodes it with no code of ours: the same updates,
    with the same ids, as the plain stream."""
    path = f"/topics/{topic}/stream"
    plain = SSEClient(server.port, path)
    plain.next_data("snapshot")
    with page_of(browser) as page:
        page.goto(server.base + "/healthz")
        encodings: list[str | None] = []
        page.on(
            "response",
            lambda r: (
                encodings.append(r.headers.get("content-encoding")) if "stream" in r.url else None
            ),
        )
        page.evaluate(
            """(path) => {
              window.seen = [];
              const source = window.source = new EventSource(path);
              source.addEventListener("snapshot", () => window.seen.push(null));
              source.addEventListener("stats", (e) => window.seen.push([e.lastEventId, e.data]));
            }""",
            path,
        )
        page.wait_for_function("window.seen.length >= 1")
        for batch in range(4):
            assert (
                post(server.port, topic, [{"value": batch * 10 + i} for i in range(25)])[0] == 202
            )
        received = _stats(plain, 100)
        page.wait_for_function("window.seen.length >= 101")
        seen = page.evaluate("window.seen.slice(1)")
        page.evaluate("window.source.close()")
    assert encodings == ["gzip"]
    assert [(i, "stats", json.loads(data)) for i, data in seen] == received
    plain.close()


def test_a_shape_keeps_its_context_while_its_streams_live(topic: str) -> None:
    """Streams of one shape gzip from one shared context, another shape from its own; once
    every stream is gone, a new one of a shape gets gzip again (past `SHARED_CONTEXTS` shapes in
    use a new one goes plain: tests/unit/test_shared_deflate.py)."""
    server = PushsvcProcess("serve", "--tick", "0").start()
    try:
        first = GzipSSEClient(server.port, f"/topics/{topic}/stream")
        first.next_data("snapshot")  # live: its context is in use
        same = GzipSSEClient(server.port, f"/topics/{topic}/stream")
        other = GzipSSEClient(server.port, f"/topics/{topic}/stream?stats=mean")
        assert same.response_headers["content-encoding"] == "gzip"
        assert other.response_headers["content-encoding"] == "gzip"
        same.next_data("snapshot")
        assert post(server.port, topic, {"value": 3})[0] == 202
        assert other.next_data()[1]["windows"]["1m"] == {"mean": 3.0}
        assert same.next_data()[1]["windows"]["1m"]["mean"] == 3.0
        first.close()
        same.close()
        other.close()
        wait_until(lambda: subscribers(server.port) == 0, what="the streams released")
        again = GzipSSEClient(server.port, f"/topics/{topic}/stream?stats=mean")
        assert again.response_headers["content-encoding"] == "gzip"
        again.close()
    finally:
        server.stop()


def test_a_paced_gzip_stream_decodes(server: PushsvcProcess, topic: str) -> None:
    """`?max_hz=` streams write their own messages: stored blocks in gzip framing, decoded as
    any other; the last update is the plain stream's last."""
    plain = SSEClient(server.port, f"/topics/{topic}/stream")
    paced = GzipSSEClient(server.port, f"/topics/{topic}/stream?max_hz=5")
    assert paced.response_headers["content-encoding"] == "gzip"
    plain.next_data("snapshot")
    paced.next_data("snapshot")
    for batch in range(3):
        assert post(server.port, topic, [{"value": batch * 10 + v} for v in range(10)])[0] == 202
    last = plain.take(30)[-1]
    while (got := paced.next_data()) != last:
        assert got[1]["topic"] == topic
    plain.close()
    paced.close()


def test_a_gzip_stream_the_server_ends_ends_cleanly_for_every_client(
    browser: Browser, topic: str
) -> None:
    """No gzip trailer is ever written: a stream the server ends (here, as it stops) is a
    member cut short. curl --compressed exits 0 with the update it got, httpx reads to the end
    without an error, and Chromium's EventSource goes on reconnecting (not closed for good)."""
    server = PushsvcProcess("serve", "--tick", "0").start()
    curl = subprocess.Popen(
        ["curl", "-sS", "-N", "--compressed", f"{server.base}/topics/{topic}/stream"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    with page_of(browser) as page:
        page.goto(server.base + "/healthz")
        page.evaluate(
            """(path) => {
              window.seen = [];
              window.source = new EventSource(path);
              window.source.addEventListener("stats", (e) => window.seen.push(e.data));
              window.source.addEventListener("error", () => window.seen.push("error"));
            }""",
            f"/topics/{topic}/stream",
        )
        with (
            httpx.Client(timeout=10) as client,
            client.stream("GET", f"{server.base}/topics/{topic}/stream") as response,
        ):
            assert response.headers["content-encoding"] == "gzip"
            wait_until(lambda: subscribers(server.port) == 3, what="three streams")
            assert post(server.port, topic, {"value": 7})[0] == 202
            page.wait_for_function("window.seen.length >= 1")
            server.stop()
            text = "".join(response.iter_text())  # to the end, decoded, no error
        assert '"value":7.0' in text
        page.wait_for_function("window.seen.includes('error')")
        assert page.evaluate("window.source.readyState") == 0  # CONNECTING: it will retry
        page.evaluate("window.source.close()")
    out, errors = curl.communicate(timeout=10)
    assert curl.returncode == 0, errors
    assert b'"value":7.0' in out


class _RawGzipStream:
    """A raw gzip stream on `sock` (head, chunks), decoded as it is read."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.pending = b""
        self.inflate: Any = None
        self.parser = EventStreamParser()

    def read_until(self, until_id: str, timeout: float = 20) -> list[Seen]:
        """Its stats messages until the update with id `until_id`, decoded as they come."""
        self.sock.settimeout(timeout)
        if self.inflate is None:
            while b"\r\n\r\n" not in self.pending:
                self.pending += self.sock.recv(65536)
            head, _, self.pending = self.pending.partition(b"\r\n\r\n")
            assert b"content-encoding: gzip" in head.lower()
            self.inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        seen: list[Seen] = []
        while not seen or seen[-1][0] != until_id:
            pending = self.pending
            end = pending.find(b"\r\n")
            if end >= 0 and len(pending) >= end + 2 + (size := int(pending[:end], 16)) + 2:
                data = self.inflate.decompress(pending[end + 2 : end + 2 + size])
                self.pending = pending[end + 2 + size + 2 :]
                for message in self.parser.feed(data):
                    if message.event == "stats":
                        seen.append((message.id, "stats", json.loads(message.data)))
                continue
            more = self.sock.recv(65536)
            assert more, "the stream ended"
            self.pending += more
        return seen


def test_a_slow_gzip_reader_conflated_decodes_the_latest_updates(topic: str) -> None:
    """A gzip stream that stops reading falls behind and is conflated (latest wins) while
    another of its shape keeps up: the runs it skips break the shared sequence, so it gets the
    next ones stored until a reset point.
    When it reads again it decodes a valid stream: updates the plain stream got, the same
    bytes for the same id, in order, ending with the latest."""
    server = PushsvcProcess(
        "serve", "--tick", "0", "--max-stream-buffer", "64KiB", "--body-timeout", "60s"
    ).start()
    try:
        plain = SSEClient(server.port, f"/topics/{topic}/stream")
        plain.next_data("snapshot")
        # A gzip stream that keeps up: the shared context compresses every run, the ones the
        # slow stream skips too.
        healthy = GzipSSEClient(server.port, f"/topics/{topic}/stream")
        healthy.next_data("snapshot")
        slow = socket.socket()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.connect(("127.0.0.1", server.port))
        offer = "Accept-Encoding: gzip\r\n"
        slow.sendall(f"GET /topics/{topic}/stream HTTP/1.1\r\nHost: x\r\n{offer}\r\n".encode())
        wait_until(lambda: subscribers(server.port) == 3, what="the three streams")
        received: list[Seen] = []
        random_tags = {f"k{i}": uuid.uuid4().hex * 8 for i in range(8)}  # incompressible-ish
        while metric_sample(server.port, "pushsvc_conflated_runs_total") == 0:
            assert len(received) < 20_000, "the slow stream was never conflated"
            events = [{"value": len(received) + i, "tags": random_tags} for i in range(5)]
            assert post(server.port, topic, events)[0] == 202
            received += _stats(plain, 5)
            assert _stats(healthy, 5) == received[-5:]
        for _ in range(3):  # more, conflated or not, then the latest
            assert post(server.port, topic, [{"value": -1.0, "tags": random_tags}])[0] == 202
            received += _stats(plain, 1)
            assert _stats(healthy, 1) == received[-1:]
        stream = _RawGzipStream(slow)
        got = stream.read_until(received[-1][0])
        by_id = {message[0]: message for message in received}
        assert [by_id[message[0]] for message in got] == got  # each exactly the plain one's
        ids = [message[0] for message in received]
        positions = [ids.index(message[0]) for message in got]
        assert positions == sorted(positions) and len(got) < len(received)  # skipped some
        # Reading again, it takes every update: stored until a reset point, then the shared
        # segments, each decoded as the plain stream's.
        more: list[Seen] = []
        for value in range(40):
            assert post(server.port, topic, {"value": value, "tags": random_tags})[0] == 202
            more += _stats(plain, 1)
            assert _stats(healthy, 1) == more[-1:]
            assert stream.read_until(more[-1][0]) == more[-1:]
        slow.close()
        healthy.close()
        plain.close()
    finally:
        server.stop()


def test_presence_events_between_updates_keep_a_gzip_stream_decodable(
    server: PushsvcProcess, topic: str
) -> None:
    """A presence event is the stream's own message: between shared segments it would shift
    their back-references. Watchers come and go while updates flow; the gzip stream decodes
    every update a plain one gets, and its presence events too."""
    path = f"/topics/{topic}/stream"
    plain = SSEClient(server.port, path)
    zipped = GzipSSEClient(server.port, path + "?presence=1")
    assert zipped.response_headers["content-encoding"] == "gzip"

    def read_until(value: float | None, watching: int) -> list[Seen]:
        """The gzip stream's updates until the one of `value` and a presence event telling
        `watching`, whichever comes last."""
        updates: list[Seen] = []
        told = seen_value = False
        while not (told and (value is None or seen_value)):
            message = zipped.next(timeout=15)
            data = json.loads(message.data)
            if message.event == "presence":
                told = data["topics"][topic]["watching"] == watching
            elif message.event == "stats":
                updates.append((message.id, message.event, data))
                seen_value = seen_value or data["event"]["value"] == value
        return updates

    read_until(None, 2)  # the plain stream and this one
    for round_ in range(3):
        last = float(round_ * 100 + 19)
        watcher = SSEClient(server.port, path)
        watcher.next_data("snapshot")
        assert post(server.port, topic, [{"value": round_ * 100 + i} for i in range(20)])[0] == 202
        plain_seen = [m for m in _all_until_value(plain, last) if m[1] == "stats"]
        assert read_until(last, 3) == plain_seen
        watcher.close()
        assert read_until(None, 2) == []
    plain.close()
    zipped.close()
