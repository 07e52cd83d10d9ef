"""The C subscribers (bench/loadgen/sse_clients.c) count what they are sent: byte tables.

Each row is a response a one-connection server in this test writes, piece by piece (so that
lines and chunk-size lines arrive cut across reads), and the counts or the stream error the
compiled program must report for it. A client that miscounts makes "every update delivered
once and in order" mean nothing; the smoke test (test_bench_many_streams_smoke.py) runs it
against a real deployment.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from bench.loadgen import cclient

HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
CHUNKED = HEAD + b"Transfer-Encoding: chunked\r\n\r\n"
SNAPSHOT = b'retry: 3000\n\nid: 2f91f5e4:0-0\nevent: snapshot\ndata: {"gap":false,"topics":{}}\n\n'
HEARTBEAT = b":\n\n"
GAP_SNAPSHOT = b'id: 2f91f5e4:0-1\nevent: snapshot\ndata: {"gap":true,"topics":{}}\n\n'


def update(seq: int, value: str, sent: str = '"1795633176.5"') -> bytes:
    """A pushsvc update frame carrying the event `{"value": <value>, "tags": {"sent": ...}}`."""
    return (
        b"id: 2f91f5e4:0-%d\nevent: stats\n"
        b'data: {"id":"2f91f5e4:0-%d","topic":"t","ts":1.5,"reason":"event",'
        b'"event":{"value":%s,"ts":1.5,"tags":{"host":"a,}b","sent":%s}},'
        b'"windows":{"10s":{"count":3,"p50":null,"p90":[1,{"x":"}"}]}}}\n\n'
    ) % (seq, seq, value.encode(), sent.encode())


def tick(seq: int) -> bytes:
    """An update without an event (a window moved): not a delivery."""
    return b'id: 2f91f5e4:0-%d\nevent: stats\ndata: {"id":"2f91f5e4:0-%d","topic":"t",' % (
        seq, seq,
    ) + b'"ts":2.0,"reason":"tick","windows":{}}\n\n'  # fmt: skip


def chunked(*messages: bytes, size: int = 0) -> bytes:
    """The messages as an HTTP/1.1 chunked body: a chunk each, or chunks of `size` bytes
    (which cut lines anywhere)."""
    body = b"".join(messages)
    pieces = [body[i : i + size] for i in range(0, len(body), size)] if size else messages
    return b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces)


COUNTS = ("received", "distinct", "duplicates", "out_of_order", "missing", "unexpected",
          "id_regressions")  # fmt: skip

ROWS = [
    pytest.param(
        CHUNKED
        + chunked(SNAPSHOT, update(1, "0"), HEARTBEAT, tick(2), update(3, "1"), update(4, "2")),
        3,
        (3, 3, 0, 0, 0, 0, 0),
        id="in-order-with-heartbeat-and-tick",
    ),
    pytest.param(
        # The last value completes the stream: the client may leave as soon as it is read.
        CHUNKED + chunked(SNAPSHOT, update(1, "0"), update(2, "2"), update(3, "2"), update(4, "1")),
        3,
        (4, 3, 1, 1, 0, 0, 0),
        id="duplicate-and-out-of-order",
    ),
    pytest.param(
        CHUNKED + chunked(SNAPSHOT, update(5, "0"), update(4, "1"), update(6, "2")),
        3,
        (3, 3, 0, 0, 0, 0, 1),
        id="ids-not-rising",
    ),
    pytest.param(
        CHUNKED
        + chunked(
            SNAPSHOT,
            update(1, "0.0"),
            update(2, "1.5"),
            update(3, '"1"'),
            update(4, "9"),
            update(5, "true"),
            update(6, "1"),
        ),
        2,
        (6, 2, 0, 0, 0, 4, 0),
        id="values-7.0-counts-1.5-string-out-of-range-do-not",
    ),
    pytest.param(
        CHUNKED + chunked(SNAPSHOT, update(1, "0"), update(2, "1"), size=7),
        3,
        (2, 2, 0, 0, 1, 0, 0),
        id="chunks-cut-lines-one-missing",
    ),
    pytest.param(
        # A resumed stream's replay may come in the head's read: 26 kB, past the head's limit.
        CHUNKED + chunked(SNAPSHOT, *(update(i + 1, str(i)) for i in range(80))),
        80,
        (80, 80, 0, 0, 0, 0, 0),
        id="head-and-a-long-replay-in-one-read",
    ),
    pytest.param(
        HEAD + b"\r\n" + SNAPSHOT + update(1, "0") + HEARTBEAT + update(2, "1"),
        2,
        (2, 2, 0, 0, 0, 0, 0),
        id="close-delimited-body",
    ),
]

ERRORS = [
    pytest.param(
        CHUNKED + chunked(SNAPSHOT.replace(b"\n", b"\r\n")),
        "ProtocolError: a CR in the event stream",
        id="cr-line-ends",
    ),
    pytest.param(
        CHUNKED + chunked(SNAPSHOT, b"event: alert\ndata: {}\n\n"),
        "ProtocolError: unexpected event type",
        id="unknown-event-type",
    ),
    pytest.param(
        CHUNKED + chunked(SNAPSHOT, update(1, "0", sent="null")),
        "ProtocolError: delivery without value/tags.sent",
        id="no-sent-tag",
    ),
    pytest.param(
        CHUNKED + chunked(SNAPSHOT, b"data: {}\n\n"),
        "ProtocolError: unexpected event type 'message'",
        id="unnamed-message",
    ),
    pytest.param(CHUNKED + b"zz\r\n", "ProtocolError: bad chunk size line", id="bad-chunk-size"),
    pytest.param(
        HEAD + b"Content-Length: 10\r\n\r\n",
        "ProtocolError: an event stream with a Content-Length",
        id="content-length",
    ),
    pytest.param(b"HTTP/1.1 404 Not Found\r\n\r\n", "ProtocolError: status not 200", id="404"),
]


@pytest.fixture(scope="module")
def program() -> Path:
    if cclient.compiler() is None:
        pytest.skip("no C compiler (cc or gcc): the C client cannot be built")
    return cclient.binary()


def serve_once(listener: socket.socket, response: bytes, piece: int) -> None:
    """Answer one request with `response`, `piece` bytes per send, then hold the connection
    until the client closes it (a row's last message completes its stream, or fails it)."""
    listener.settimeout(10)
    connection, _ = listener.accept()
    with connection:
        connection.settimeout(10)
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        request = b""
        while b"\r\n\r\n" not in request:
            request += connection.recv(4096)
        assert request.startswith(b"GET /topics/t/stream HTTP/1.1\r\nHost: 127.0.0.1:")
        with contextlib.suppress(OSError):  # a client that has seen enough leaves
            for i in range(0, len(response), piece):
                connection.sendall(response[i : i + piece])
            while connection.recv(4096):
                pass


def run_against(
    program: Path, serve: Callable[[socket.socket], None], events: int, *options: str
) -> list[dict[str, Any]]:
    """The compiled client's records for one stream of `events` from a server in this test
    (`serve(listener)`, in a thread), with `options` after the common ones."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        server = threading.Thread(target=serve, args=(listener,))
        server.start()
        done = subprocess.run(
            [str(program), "--stream", f"http://127.0.0.1:{port}/topics/t/stream",
             "--subscribers", "1", "--events", str(events), "--connect-timeout", "5",
             "--drain-timeout", "10", *options],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        server.join(15)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def run_client(program: Path, response: bytes, events: int, piece: int) -> list[dict[str, Any]]:
    def serve(listener: socket.socket) -> None:
        serve_once(listener, response, piece)

    return run_against(program, serve, events, "--source", "127.0.0.1", "--idle-timeout", "1")


@pytest.mark.parametrize("piece", [65536, 1], ids=["whole", "byte-by-byte"])
@pytest.mark.parametrize(("response", "events", "counts"), ROWS)
def test_counts(
    program: Path, response: bytes, events: int, counts: tuple[int, ...], piece: int
) -> None:
    opened, drained, result = run_client(program, response, events, piece)
    assert (opened["phase"], opened["ready"]) == ("opened", 1)
    assert drained["stream_errors"] == {}
    assert tuple(result[key] for key in COUNTS) == counts
    assert result["expected"] == events
    assert result["latency_ms"]["p50"] is not None


@pytest.mark.parametrize(("response", "error"), ERRORS)
def test_stream_errors(program: Path, response: bytes, error: str) -> None:
    _, drained, result = run_client(program, response, 1, 65536)
    assert drained["stream_errors"] == {error: 1}
    assert (result["received"], result["missing"]) == (0, 1)


def message(seq: int | None, value: str, event: bytes | None = b"message") -> bytes:
    """A relayed message: pushsvc's (`id:`, `event: message`), or a peer's unnamed one
    (`event` None, `seq` None: no id, as sse-starlette sends; nchan's ids are not pushsvc's)."""
    head = b"" if seq is None else b"id: 2f91f5e4:0-%d\n" % seq
    head += b"" if event is None else b"event: %s\n" % event
    return head + b'data: {"value":%s,"tags":{"sent":"1795633176.5"},"pad":"x}y"}\n\n' % (
        value.encode()
    )


GAP = b'id: 2f91f5e4:0-6\nevent: gap\ndata: {"topics":["t"]}\n\n'
MESSAGE_ROWS = [
    pytest.param(
        # pushsvc's head (a retry:, then a bare id:), named messages, a heartbeat.
        CHUNKED + chunked(b"retry: 3000\n\nid: 2f91f5e4:0-0\n\n", message(1, "0"), HEARTBEAT,
                          message(2, "1", b"shipped"), message(3, "2")),
        3, (3, 3, 0, 0, 0, 0, 0), 0,
        id="pushsvc-named",
    ),
    pytest.param(
        CHUNKED + chunked(b": hi\n\n", b"id: 1795633176:0\n" + message(None, "0", None),
                          message(None, "2", None), message(None, "2", None),
                          message(None, "1", None)),
        3, (4, 3, 1, 1, 0, 0, 0), 0,
        id="unnamed-duplicate-out-of-order-foreign-id",
    ),
    pytest.param(
        CHUNKED + chunked(message(5, "0"), GAP, message(4, "1"), message(7, "2"), size=5),
        3, (3, 3, 0, 0, 0, 0, 1), 1,
        id="gap-counted-ids-not-rising-cut-lines",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("response", "events", "counts", "gaps"), MESSAGE_ROWS)
def test_message_streams(
    program: Path, response: bytes, events: int, counts: tuple[int, ...], gaps: int
) -> None:
    """With --messages, a stream is live at its response head, every message with data, named
    or not, is a delivery of the published object, and `event: gap` is a gap."""
    opened, drained, result = run_against(
        program, lambda listener: serve_once(listener, response, 65536), events, "--messages",
        "--reconnect", "--idle-timeout", "1",
    )  # fmt: skip
    assert (opened["ready"], drained["stream_errors"], drained["gaps"]) == (1, {}, gaps)
    assert tuple(result[key] for key in COUNTS) == counts
    assert result["kind"] == "messages"


def test_message_stream_refuses_data_without_the_published_object(program: Path) -> None:
    response = CHUNKED + chunked(b"retry: 3000\n\n", b"event: message\ndata: {}\n\n")
    _, drained, result = run_against(
        program, lambda listener: serve_once(listener, response, 65536), 1, "--messages",
        "--idle-timeout", "1",
    )  # fmt: skip
    assert drained["stream_errors"] == {"ProtocolError: delivery without value/tags.sent": 1}
    assert (result["received"], result["missing"]) == (0, 1)


def serve_in_turns(listener: socket.socket, responses: list[bytes], requests: list[bytes]) -> None:
    """Answer one connection per response in turn, each closed once sent (the server went
    away), but for the last, held until the client leaves; every request is kept."""
    listener.settimeout(10)
    for n, response in enumerate(responses):
        connection, _ = listener.accept()
        with connection:
            connection.settimeout(10)
            request = b""
            while b"\r\n\r\n" not in request:
                request += connection.recv(4096)
            requests.append(request)
            with contextlib.suppress(OSError):
                connection.sendall(response)
                if n == len(responses) - 1:
                    while connection.recv(4096):
                        pass


RESUMES = [
    pytest.param(
        # Ended after value 0, then resumed: the replay holds 1 and 2.
        [CHUNKED + chunked(SNAPSHOT.replace(b"3000", b"50"), update(1, "0")),
         CHUNKED + chunked(b"retry: 70\n\n", update(2, "1"), update(3, "2"))],
        (3, 3, 0, 0, 0, 0, 0), 0,
        id="resumed-exactly",
    ),
    pytest.param(
        # A replay that sends 0 again and skips 1: one duplicate, one missing, across streams.
        [CHUNKED + chunked(SNAPSHOT.replace(b"3000", b"50"), update(1, "0")),
         CHUNKED + chunked(b"retry: 70\n\n", update(1, "0"), update(3, "2"))],
        (3, 2, 1, 0, 1, 0, 1), 0,
        id="replayed-twice-and-skipped",
    ),
    pytest.param(
        # The history could not resume it: a gap snapshot, counted.
        [CHUNKED + chunked(SNAPSHOT.replace(b"3000", b"50"), update(1, "0")),
         CHUNKED + chunked(b"retry: 70\n\n", GAP_SNAPSHOT,
                           update(2, "1"), update(3, "2"))],
        (3, 3, 0, 0, 0, 0, 0), 1,
        id="gap-snapshot",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("responses", "counts", "gaps"), RESUMES)
def test_reconnect_resumes_with_last_event_id(
    program: Path, responses: list[bytes], counts: tuple[int, ...], gaps: int
) -> None:
    """With --reconnect a stream the server ends comes back after its `retry:` with the last
    `id:` it dispatched as Last-Event-ID, and its counts go on across its connections."""
    requests: list[bytes] = []

    def serve(listener: socket.socket) -> None:
        serve_in_turns(listener, responses, requests)

    _, drained, result = run_against(program, serve, 3, "--reconnect", "--idle-timeout", "2")
    assert b"Last-Event-ID" not in requests[0]
    assert b"\r\nLast-Event-ID: 2f91f5e4:0-1\r\n\r\n" in requests[1]
    assert (drained["reconnects"], drained["refused"], drained["down"]) == (1, 0, 0)
    assert drained["gaps"] == gaps
    assert drained["retry_ms"] == [50, 70]  # the first stream's retry:, then the second's
    assert drained["stream_errors"] == {}
    assert drained["last_back_at"] is not None
    assert tuple(result[key] for key in COUNTS) == counts
