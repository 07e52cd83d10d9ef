"""A stream's connection, written by pushsvc itself once the response head is out.

pywsgi writes every block a WSGI app yields through its chunked `_write`: it copies the block
into a new buffer between the chunk header and trailer, then `sendall`s it, in the stream's own
greenlet. For a stream that copy, the greenlet switch that precedes it and the framework calls
are most of the cost of a delivery (docs/performance.md). Here a block goes out as one
`sendmsg` of [chunk header, the shared block, CRLF]: no copy, and — from the hub's writer —
no greenlet per client at all (`try_send` never blocks).

Only pywsgi under `pushsvc serve`/`web` hands the connection over
(`pushsvc.server.StreamingHandler`), and only for plain TCP: a `StreamSocket` is then the
sink of the stream's `LiveStream` (`send`, `flush`, `end`), and what the hub's direct way
writes. Elsewhere (gunicorn, TLS) the server writes the stream
(`pushsvc.deliver.server_writes`). The gevent internals this needs are in
`pushsvc.gevent_private`.
"""

from __future__ import annotations

import _socket
import contextlib
import socket
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pushsvc.gevent_private import ENVIRON_KEY, connection_of, handed_over, loop_watcher, os_socket

_CRLF = b"\r\n"
_LAST_CHUNK = b"0\r\n\r\n"
# sendmsg takes at most IOV_MAX (1024 on Linux) buffers; longer lists are joined first.
_MAX_PARTS = 512
SEND_FLAGS = socket.MSG_DONTWAIT | getattr(socket, "MSG_NOSIGNAL", 0)
"""A send that never blocks and raises EPIPE, not SIGPIPE, when the peer is gone."""
_WRITE = 2  # libev's EV_WRITE


SEND_BUFFER = 256 * 1024
"""A stream's kernel send buffer to start with (`cap_send_buffer`; Linux doubles it for its
bookkeeping), where the kernel would grow it to `net.ipv4.tcp_wmem`'s maximum, 4 MiB."""
EARNED_SEND_BUFFER = 1024 * 1024
"""A stream's kernel send buffer once its client has taken `EARNED_AFTER` bytes: a reader
that keeps up with a burst is written in fewer, larger sends, and does not fall behind its
byte bound as it would held to 256 KiB (measured: docs/performance.md, 'Hostile clients').
A client that never reads never earns it."""
EARNED_AFTER = 1024 * 1024
"""What a client must have taken for its stream's send buffer to grow: more than a client
that never reads can take (its send and receive buffers, some 560 KiB on Linux)."""


def http_chunk(block: bytes) -> bytes:
    """`block` as one HTTP/1.1 chunk, ready for `StreamSocket.try_send_bytes`."""
    return b"%x\r\n%b\r\n" % (len(block), block)


class StreamSocket:
    """Writes whole SSE blocks to one response, framed as HTTP/1.1 chunks when it is chunked;
    never blocks. As a live stream's sink (`pushsvc.deliver.live_stream.StreamSink`) it keeps
    the unsent rest of a send and sends it as the socket turns writable (`flush`)."""

    # No bound `send` kept: 72 bytes an idle stream would hold for one attribute lookup a send.
    __slots__ = ("_rest", "_writable", "chunked", "raw", "to_earn")

    def __init__(self, sock: Any, *, chunked: bool) -> None:
        self.chunked = chunked
        self._rest: memoryview | None = None
        self._writable: Any = None
        self.raw = os_socket(sock)
        """The OS socket: `try_send_bytes` and `try_send` send on it, and so does the hub's
        writer for the bytes every stream shares (`pushsvc.deliver.hub`), counting
        `to_earn` down as they do."""
        self.to_earn = EARNED_AFTER
        """Bytes the client is still to take before its send buffer grows (0: grown)."""

    def count_sent(self, sent: int) -> None:
        """Count `sent` bytes down from `to_earn` (called while it is not 0), and grow the
        send buffer once it reaches 0. The hub's shared send keeps the same count inline,
        where a call per delivery was a measurable part of its work."""
        to_earn = self.to_earn
        if to_earn > sent:
            self.to_earn = to_earn - sent
        else:
            self.earned()

    def earned(self) -> None:
        """The client has taken `EARNED_AFTER` bytes in all: its send buffer grows to
        `EARNED_SEND_BUFFER`, once (never shrinks one the kernel made larger). Whoever sends
        on `raw` counts `to_earn` down inline and calls this when it reaches 0 (a call per
        send was a measurable part of the hub's own work per delivery)."""
        self.to_earn = 0
        with contextlib.suppress(OSError):
            raw = self.raw
            if raw.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) < 2 * EARNED_SEND_BUFFER:
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, EARNED_SEND_BUFFER)

    def _parts(self, blocks: Sequence[bytes]) -> list[bytes]:
        if len(blocks) > _MAX_PARTS:
            blocks = [b"".join(blocks)]
        if not self.chunked:
            return list(blocks)
        size = sum(len(b) for b in blocks)
        return [b"%x\r\n" % size, *blocks, _CRLF]

    def try_send(self, blocks: Sequence[bytes]) -> memoryview | None:
        """Send `blocks` as one chunk without ever blocking. Returns the unsent rest of the
        framed chunk (to be sent before anything else), or None when all went out. Raises
        OSError when the peer is gone."""
        parts = self._parts(blocks)
        try:
            sent = self.raw.sendmsg(parts, (), SEND_FLAGS)
        except BlockingIOError:
            sent = 0
        if self.to_earn:
            self.count_sent(sent)
        total = sum(len(p) for p in parts)
        if sent == total:
            return None
        return memoryview(b"".join(parts))[sent:]

    def try_send_bytes(self, data: bytes | memoryview) -> memoryview | None:
        """Send bytes already framed for this response (`http_chunk` when it is chunked) in
        one `send` that never blocks; the unsent rest as `try_send` returns it."""
        try:
            sent = self.raw.send(data, SEND_FLAGS)
        except BlockingIOError:
            sent = 0
        if self.to_earn:
            self.count_sent(sent)
        if sent == len(data):
            return None
        return memoryview(data)[sent:]

    # A live stream's sink.
    def send(self, data: bytes | memoryview) -> int:
        """Send what the socket takes of `data` now; how many bytes are left (`flush` sends
        them). Raises OSError when the peer is gone."""
        rest = self._rest = self.try_send_bytes(data)
        return 0 if rest is None else len(rest)

    def flush(self, progressed: Callable[[int], None], failed: Callable[[], None]) -> None:
        """Send what `send` left as the socket turns writable (an io watcher: no greenlet);
        `progressed(left)` each time it takes some (0: all out), `failed()` if the peer is
        gone."""
        if self._writable is None:
            self._writable = loop_watcher("io", self.raw.fileno(), _WRITE)
        self._writable.start(self._on_writable, progressed, failed)

    def _on_writable(self, progressed: Callable[[int], None], failed: Callable[[], None]) -> None:
        rest = self._rest
        assert rest is not None
        try:
            self._rest = self.try_send_bytes(rest)
        except OSError:
            self._rest = None
            self._writable.stop()
            failed()
            return
        left = 0 if self._rest is None else len(self._rest)
        if left == len(rest):
            return  # woken, but it took nothing
        if not left:
            self._writable.stop()
        progressed(left)

    def end(self, quiet: bool) -> None:
        """The stream is over: a quiet end writes the response's last chunk when nothing is
        left unsent (the client then sees a whole response); the connection closes."""
        if self._writable is not None:
            self._writable.close()
            self._writable = None
        if quiet and self.chunked and self._rest is None:
            with contextlib.suppress(OSError):
                self.try_send_bytes(_LAST_CHUNK)
        self.raw.close()


def hand_over(
    environ: Mapping[str, object],
) -> tuple[_socket.socket, StreamSocket, Callable[[], None]] | None:
    """Once a stream's head is out: its connection, handed over by pushsvc's server for the
    stream to write and close itself (`pushsvc.server.StreamingHandler.hand_over`: plain TCP
    only), a `StreamSocket` on it, and what to call once it is closed; None where it cannot
    be had (another server, TLS)."""
    if handed_over(environ) is None:
        return None
    hand = getattr(environ.get(ENVIRON_KEY), "hand_over", None)
    found = hand() if hand is not None else None
    if found is None:
        return None
    sock, chunked, closed = found
    return sock, StreamSocket(sock, chunked=chunked), closed


def cap_send_buffer(environ: Mapping[str, object], size: int) -> None:
    """Hold the kernel's send buffer of a stream's connection to `size` bytes (Linux doubles
    it for its bookkeeping). Left to itself the kernel grows it to `net.ipv4.tcp_wmem`'s
    maximum, 4 MiB: a reader that never reads then held 4 MiB of kernel memory on top of
    what the stream's own bound counts, and 256 of them had the server copy a gigabyte into
    their sockets before any was found slow. Nothing happens where the connection cannot be
    had."""
    sock = connection_of(environ)
    if sock is None:
        return
    with contextlib.suppress(OSError):
        os_socket(sock).setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)


def on_write_timeout(environ: Mapping[str, object], slow: Callable[[], None]) -> None:
    """Have the server call `slow` when one of this response's writes waits past its deadline
    (`pushsvc.server.StreamingHandler.send_all`) before it ends the connection: a stream the
    server writes (its head and replay pages; TLS and gunicorn streams) is then ended as
    slow, as the hub's sweeper would have. Nothing happens under another server."""
    handler = environ.get(ENVIRON_KEY)
    if handler is not None and hasattr(handler, "on_write_timeout"):
        handler.on_write_timeout = slow


def let_go_of_request(environ: Mapping[str, object]) -> None:
    """Once a stream's head is out and its strategy chosen: let the server free what it holds
    of the request for the stream's lifetime (`pushsvc.server.StreamingHandler.
    let_go_of_request`: the read buffer, the environ). The environ is empty afterwards.
    Nothing happens under another server."""
    let_go = getattr(environ.get(ENVIRON_KEY), "let_go_of_request", None)
    if let_go is not None:
        let_go()
