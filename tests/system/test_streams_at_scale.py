"""2,000 streams in one `pushsvc serve`, each written the way a stream is under pushsvc's own
server on plain TCP (the hub writes a stream that waits, the stream's own greenlet any other;
the server has let go of each stream's request: its read buffer and environ):

* every update reaches every stream, once and in order, and each then gets heartbeats;
* among them, a reader that falls behind is conflated (it gets the latest updates, in order,
  never one twice) and one that stops reading is evicted;
* all 2,000 are released when their clients leave, half with a FIN and half with a reset.

What the streams cost and how fast they are released is measured in bench/
(`bench.idle_streams`); here every wait is for an event, with a generous bound.
"""

from __future__ import annotations

import json
import selectors
import socket
import time
from collections.abc import Callable, Iterator

import pytest
from bench.loadgen.dechunk import Dechunker
from harness.live import (
    PushsvcProcess,
    metric_sample,
    post,
    stalled_reader,
    subscribers,
    wait_until,
)
from harness.raw_streams import close_all, close_cleanly, open_streams, raise_fd_limit, reset
from harness.sse_parser import EventStreamParser, SSEMessage

from pushsvc.deliver.hub import StreamExit

pytestmark = [pytest.mark.process, pytest.mark.slow]

STREAMS = 2000
WAIT_S = 60  # generous on a loaded machine: 2,000 streams are read by this one process
RELEASE_WAIT_S = 5  # the bound itself (1 s) is measured by bench.idle_streams


class Reader:
    """One raw stream read as EventSource would: the chunked body, then its SSE messages and
    comments (heartbeats)."""

    def __init__(self, sock: socket.socket, body: bytes = b"", *, head: bool = False) -> None:
        self.sock = sock
        self.sock.setblocking(False)
        self._head = b"" if head else None  # the response head is still to be read
        self._chunks = Dechunker()
        self.parser = EventStreamParser()
        self.messages: list[SSEMessage] = []
        self.ended = False
        self._feed(body)

    def _feed(self, data: bytes) -> None:
        if self._head is not None:
            head, found, data = (self._head + data).partition(b"\r\n\r\n")
            if not found:
                self._head = head
                return
            assert head.startswith(b"HTTP/1.1 200"), head[:200]
            self._head = None
        for piece in self._chunks.feed(data):
            self.messages += self.parser.feed(piece)

    def pump(self) -> None:
        """Read what is there (never blocks)."""
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return
            except ConnectionResetError:
                self.ended = True
                return
            if not data:
                self.ended = True
                return
            self._feed(data)

    def values(self) -> list[float]:
        return [json.loads(m.data)["event"]["value"] for m in self.messages if m.event == "stats"]


def read_until(readers: list[Reader], done: Callable[[Reader], bool], what: str) -> None:
    """Read every reader until `done` holds for each (or it ended), within WAIT_S."""
    waiting = {r.sock: r for r in readers if not done(r)}
    with selectors.DefaultSelector() as selector:
        for sock in waiting:
            selector.register(sock, selectors.EVENT_READ)
        deadline = _deadline(WAIT_S)
        while waiting:
            left = deadline()
            if left <= 0:
                raise AssertionError(f"{len(waiting)} streams short of {what}")
            for key, _ in selector.select(left):
                reader = waiting[key.fileobj]  # type: ignore[index]
                reader.pump()
                if done(reader) or reader.ended:
                    selector.unregister(reader.sock)
                    del waiting[reader.sock]


def _deadline(seconds: float) -> Callable[[], float]:
    end = time.monotonic() + seconds
    return lambda: end - time.monotonic()


def _disconnects(port: int, reason: StreamExit) -> float:
    return metric_sample(port, "pushsvc_stream_disconnects_total", f'{{reason="{reason}"}}')


def _serve(heartbeat: str) -> PushsvcProcess:
    raise_fd_limit(2 * STREAMS + 1024)  # ours and, inherited, the server's
    env = {
        "PUSHSVC_MAX_STREAMS_PER_IP": str(2 * STREAMS),
        "PUSHSVC_MAX_STREAMS": str(2 * STREAMS),
    }
    return PushsvcProcess(
        "serve",
        "--tick", "0",
        "--heartbeat", heartbeat,
        "--max-stream-buffer", "16KiB",
        "--body-timeout", "1s",
        env=env,
    ).start()  # fmt: skip


@pytest.fixture(scope="module")
def server() -> Iterator[PushsvcProcess]:
    proc = _serve("1s")
    yield proc
    proc.stop(30)


@pytest.fixture(scope="module")
def quiet_server() -> Iterator[PushsvcProcess]:
    """No heartbeat falls due during a test: no write can notice a client left."""
    proc = _serve("60s")
    yield proc
    proc.stop(30)


@pytest.fixture
def streams(server: PushsvcProcess, topic: str) -> Iterator[list[Reader]]:
    bodies: dict[socket.socket, bytes] = {}
    socks = open_streams(
        server.port, f"/topics/{topic}/stream", STREAMS, timeout=WAIT_S, bodies=bodies
    )
    try:
        yield [Reader(sock, bodies[sock]) for sock in socks]
    finally:
        close_all(socks)


def test_every_update_reaches_2000_streams_once_in_order_then_heartbeats(
    server: PushsvcProcess, topic: str, streams: list[Reader]
) -> None:
    values = [float(v) for v in range(20)]
    # One update alone, then two batches (a run each): every way a run reaches a stream.
    for part in (values[:1], values[1:11], values[11:]):
        assert post(server.port, topic, [{"value": v} for v in part])[0] == 202
    read_until(streams, lambda r: len(r.values()) >= len(values), "every update")
    for reader in streams:
        assert not reader.ended
        assert reader.values() == values
        ids = [m.id for m in reader.messages if m.event == "stats"]
        assert len(set(ids)) == len(ids)
    # Nothing is published from here: every stream gets a heartbeat, written by the stream.
    for reader in streams:
        reader.parser.comments.clear()
    read_until(streams, lambda r: bool(r.parser.comments), "a heartbeat")
    assert not any(reader.ended for reader in streams)


def test_among_2000_streams_a_slow_reader_is_conflated_and_a_stopped_one_evicted(
    server: PushsvcProcess, topic: str, streams: list[Reader]
) -> None:
    tags = {f"k{i}": "v" * 200 for i in range(16)}  # ~4 KB per update: sockets fill soon
    slow = stalled_reader(server.port, f"/topics/{topic}-slow/stream")
    stopped = stalled_reader(server.port, f"/topics/{topic}-stopped/stream")
    try:
        wait_until(lambda: subscribers(server.port) >= STREAMS + 2, what="both subscribed")
        conflated = metric_sample(server.port, "pushsvc_conflated_runs_total")
        slow_before = _disconnects(server.port, StreamExit.SLOW)
        # The slow reader reads nothing until its queue has conflated two updates (the second
        # replacing the first), then reads everything.
        posted = 0
        while metric_sample(server.port, "pushsvc_conflated_runs_total") < conflated + 2:
            assert posted < 2000, "the slow reader's queue never conflated"
            assert post(server.port, f"{topic}-slow", {"value": posted, "tags": tags})[0] == 202
            posted += 1
        reader = Reader(slow, head=True)
        last = float(posted - 1)
        read_until([reader], lambda r: last in r.values(), "the latest")
        got = reader.values()
        assert got == sorted(set(got)), "in order, none twice"
        assert len(got) < posted, "some were conflated away"
        assert _disconnects(server.port, StreamExit.SLOW) == slow_before
        # The stopped reader never reads: queued, conflated, then evicted after the timeout.
        sent = 0
        while _disconnects(server.port, StreamExit.SLOW) == slow_before:
            assert sent < 20_000, "the stopped reader was never evicted"
            assert post(server.port, f"{topic}-stopped", {"value": sent, "tags": tags})[0] == 202
            sent += 1
        wait_until(lambda: subscribers(server.port) == STREAMS + 1, what="evicted one released")
        # The 2,000 were left alone all along.
        assert post(server.port, topic, {"value": 1.0})[0] == 202
        read_until(streams, lambda r: r.values() == [1.0], "the update")
        assert not any(r.ended for r in streams)
    finally:
        slow.close()
        stopped.close()


def test_2000_streams_are_released_when_their_clients_leave_by_fin_and_reset(
    quiet_server: PushsvcProcess, topic: str
) -> None:
    server = quiet_server
    before = subscribers(server.port)
    gone = _disconnects(server.port, StreamExit.GONE)
    socks = open_streams(server.port, f"/topics/{topic}/stream", STREAMS, timeout=WAIT_S)
    try:
        wait_until(lambda: subscribers(server.port) == before + STREAMS, what="all subscribed")
        for index, sock in enumerate(socks):
            (close_cleanly if index % 2 else reset)(sock)
        # Nothing is written to them (no update, no heartbeat due): each stream notices its
        # client leave by watching its connection.
        wait_until(
            lambda: subscribers(server.port) == before,
            timeout=RELEASE_WAIT_S,
            what="every stream was released",
        )
        assert _disconnects(server.port, StreamExit.GONE) == gone + STREAMS
    finally:
        close_all(socks)
