"""Thousands of EventSource-like clients on raw sockets, for reconnect-storm tests and benches.

Each client reads one topic's stream (`/topics/{topic}/stream`) the way a browser's
EventSource does: it keeps the last `id:` it saw and the last `retry:`, and when the stream
ends (or a connection is refused) it comes back after that `retry:` with `Last-Event-ID`.
What it got is kept for the caller to judge: the `value` of every `stats` update in order,
the `retry:` of every connection, any snapshot that says `"gap": true`.

One thread, one selector, non-blocking sockets (connects too: a server whose accept backlog
is full must not stall the others). Requests are HTTP/1.0, so that a stream's body is the
event stream itself, ended by the server closing the connection, with no chunk framing to
undo. Clients may be spread over several source addresses (127.0.0.x) so that tens of
thousands of connections do not run out of one address's ephemeral ports.
"""

from __future__ import annotations

import errno
import heapq
import http.client
import selectors
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import orjson

_HEAD_END = b"\r\n\r\n"


@dataclass(eq=False)
class StormClient:
    """One client: what it is reading and what it got."""

    topic: str
    source: str
    last_id: str | None = None
    retry_ms: int = 3000
    values: list[int] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    retries: list[int] = field(default_factory=list)
    """The `retry:` of each connection, in order."""
    gaps: int = 0
    """Snapshots that said `"gap": true` (a stream that could not resume)."""
    connects: int = 0
    """Streams that answered 200 (the first included)."""
    refused: int = 0
    """Connections refused or broken before a stream answered (the server was down)."""
    live: bool = False
    """Its current stream has sent its first message (the server primed it)."""
    sock: socket.socket | None = None
    _buffer: bytes = b""
    _head_done: bool = False


class StormClients:
    """`count` clients, topic `topics[i % len(topics)]` for client i, run in a thread."""

    def __init__(
        self,
        port: int,
        topics: Sequence[str],
        count: int,
        *,
        sources: Sequence[str] = ("127.0.0.1",),
        host: str = "127.0.0.1",
    ) -> None:
        self.port = port
        self.host = host
        self.clients = [
            StormClient(topics[i % len(topics)], sources[i % len(sources)]) for i in range(count)
        ]
        self._selector = selectors.DefaultSelector()
        self._due: list[tuple[float, int]] = []  # (monotonic time, client index): reconnects
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="storm-clients", daemon=True)
        self.errors: list[str] = []

    # -- what the caller reads (a snapshot under the lock) --------------------------------

    def count(self, what: str) -> int:
        """How many clients are `live`, or the sum of an int field (`connects`, `refused`)."""
        with self._lock:
            if what == "live":
                return sum(1 for c in self.clients if c.live)
            return sum(int(getattr(c, what)) for c in self.clients)

    def fewer(self, what: str, least: int) -> int:
        """How many clients have an int field (`connects`, `refused`) below `least`."""
        with self._lock:
            return sum(1 for c in self.clients if int(getattr(c, what)) < least)

    def behind(self, expected: dict[str, int]) -> int:
        """Clients that have not yet got `expected[topic]` updates."""
        with self._lock:
            return sum(1 for c in self.clients if len(c.values) < expected.get(c.topic, 0))

    # -- running ---------------------------------------------------------------------------

    def start(self, *, spread_s: float = 0.0) -> StormClients:
        """Connect every client (over `spread_s` seconds) and read until `stop`."""
        now = time.monotonic()
        n = len(self.clients)
        self._due = [(now + spread_s * i / max(n, 1), i) for i in range(n)]
        heapq.heapify(self._due)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        for client in self.clients:
            if client.sock is not None:
                client.sock.close()
                client.sock = None
        self._selector.close()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._connect_due()
                timeout = 0.05
                if self._due:
                    timeout = min(timeout, max(self._due[0][0] - time.monotonic(), 0.0))
                for key, events in self._selector.select(timeout):
                    index: int = key.data
                    with self._lock:
                        if events & selectors.EVENT_WRITE and not self._head_sent(key):
                            self._send_request(index)
                        else:
                            self._read(index)
        except Exception as exc:  # reported to the test, which fails on it
            self.errors.append(repr(exc))
            raise

    def _head_sent(self, key: selectors.SelectorKey) -> bool:
        return bool(key.events == selectors.EVENT_READ)

    def _connect_due(self) -> None:
        now = time.monotonic()
        while self._due and self._due[0][0] <= now:
            _, index = heapq.heappop(self._due)
            with self._lock:
                self._connect(index)

    def _connect(self, index: int) -> None:
        client = self.clients[index]
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        if client.source != "127.0.0.1":
            sock.bind((client.source, 0))
        code = sock.connect_ex((self.host, self.port))
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            self._lost(index, refused=True)
            return
        client.sock, client._buffer, client._head_done, client.live = sock, b"", False, False
        self._selector.register(sock, selectors.EVENT_WRITE, index)

    def _send_request(self, index: int) -> None:
        client = self.clients[index]
        sock = client.sock
        assert sock is not None
        resume = f"Last-Event-ID: {client.last_id}\r\n" if client.last_id else ""
        request = (
            f"GET /topics/{client.topic}/stream HTTP/1.0\r\nHost: x\r\n"
            f"Accept: text/event-stream\r\n{resume}\r\n"
        ).encode()
        try:
            sock.sendall(request)  # small: fits any empty socket buffer at once
        except OSError:
            self._drop(index, refused=True)
            return
        self._selector.modify(sock, selectors.EVENT_READ, index)

    def _read(self, index: int) -> None:
        client = self.clients[index]
        sock = client.sock
        if sock is None:
            return
        try:
            data = sock.recv(262144)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop(index, refused=not client._head_done)
            return
        buffer = client._buffer + data
        if not client._head_done:
            end = buffer.find(_HEAD_END)
            if end < 0:
                client._buffer = buffer
                return
            head, buffer = buffer[:end], buffer[end + 4 :]
            if not head.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200")):
                self.errors.append(f"{client.topic}: {head[:200]!r}")
                self._drop(index, refused=True)
                return
            client._head_done = True
            client.connects += 1
        *messages, client._buffer = buffer.split(b"\n\n")
        for message in messages:
            self._message(client, message)

    def _message(self, client: StormClient, message: bytes) -> None:
        event = id_ = data = None
        for line in message.split(b"\n"):
            name, _, value = line.partition(b": ")
            if name == b"data":
                data = value
            elif name == b"id":
                id_ = value.decode()
            elif name == b"event":
                event = value
            elif name == b"retry":
                client.retry_ms = int(value)
                client.retries.append(client.retry_ms)
        if data is None:
            return  # `retry:` alone, or a heartbeat comment
        client.live = True
        if id_ is not None:
            client.last_id = id_
        if event == b"stats":
            assert id_ is not None
            client.ids.append(id_)
            client.values.append(int(orjson.loads(data)["event"]["value"]))
        elif event == b"snapshot" and orjson.loads(data).get("gap"):
            client.gaps += 1

    def _drop(self, index: int, *, refused: bool) -> None:
        client = self.clients[index]
        if client.sock is not None:
            self._selector.unregister(client.sock)
            client.sock.close()
            client.sock = None
        self._lost(index, refused=refused)

    def _lost(self, index: int, *, refused: bool) -> None:
        """As EventSource: come back after the last `retry:`, with the last id."""
        client = self.clients[index]
        client.live = False
        if refused:
            client.refused += 1
        heapq.heappush(self._due, (time.monotonic() + client.retry_ms / 1000, index))


class StormProducer:
    """Posts one event at a time to each of `topics` in turn (a round), `pause_s` between
    rounds, over one keep-alive connection, until stopped. Event n of a topic has value n;
    `acked[topic]`: how many were answered 202 (values 0..acked-1), `refused`: the other
    answers. A connection that breaks is made again and the event posted again, under the
    same `Idempotency-Key`: logged once, whether or not the first attempt was."""

    def __init__(self, port: int, topics: Sequence[str], pause_s: float = 0.05) -> None:
        self.port = port
        self.topics = list(topics)
        self.pause_s = pause_s
        self.acked = dict.fromkeys(self.topics, 0)
        self.refused: list[tuple[int, bytes]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="storm-producer", daemon=True)

    def posted(self) -> int:
        """Rounds completed: every topic has at least this many events acknowledged."""
        return min(self.acked.values())

    def start(self) -> StormProducer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            while not self._stop.is_set():
                for topic in self.topics:
                    self._post(connection, topic)
                self._stop.wait(self.pause_s)
        finally:
            connection.close()

    def _post(self, connection: http.client.HTTPConnection, topic: str) -> None:
        value = self.acked[topic]
        body = b'{"value":%d}' % value
        headers = {"Content-Type": "application/json", "Idempotency-Key": f"{topic}-{value}"}
        try:
            connection.request("POST", f"/topics/{topic}/events", body, headers)
            answer = connection.getresponse()
            reply = answer.read()
        except (OSError, http.client.HTTPException):
            connection.close()  # made again by the next request
            return
        if answer.status == 202:
            self.acked[topic] += 1
        else:
            self.refused.append((answer.status, reply))
