"""A stream's connection, written by pushsvc itself once the response head is out.

pywsgi writes every block a WSGI app yields through its chunked `_write`: it copies the block
into a new buffer between the chunk header and trailer, then `sendall`s it, in the stream's own
greenlet. For a stream that copy, the greenlet switch that precedes it and the framework calls
are most of the cost of a delivery (docs/performance.md). Here a block goes out as one
`sendmsg` of [chunk header, the shared block, CRLF]: no copy, and — from the hub's writer —
no greenlet per client at all (`try_send` never blocks).

Only pywsgi under `pushsvc serve`/`web` hands the socket over
(`pushsvc.server.StreamingHandler`), and only for plain TCP; elsewhere (gunicorn, TLS)
streams yield their blocks as before. The gevent internals this needs are in
`pushsvc.gevent_private`.
"""

from __future__ import annotations

import _socket
import contextlib
import socket
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from gevent.socket import wait_write

from pushsvc.gevent_private import ENVIRON_KEY, connection_of, handed_over, os_socket

_CRLF = b"\r\n"
# sendmsg takes at most IOV_MAX (1024 on Linux) buffers; longer lists are joined first.
_MAX_PARTS = 512
_FLAGS = socket.MSG_DONTWAIT | getattr(socket, "MSG_NOSIGNAL", 0)


def http_chunk(block: bytes) -> bytes:
    """`block` as one HTTP/1.1 chunk, ready for `StreamSocket.try_send_bytes`."""
    return b"%x\r\n%b\r\n" % (len(block), block)


class StreamSocket:
    """Writes whole SSE blocks to one response, framed as HTTP/1.1 chunks when it is chunked."""

    __slots__ = ("_gevent_socket", "_raw", "_send", "chunked")

    def __init__(self, gevent_socket: Any, *, chunked: bool) -> None:
        self._gevent_socket = gevent_socket
        self._raw = os_socket(gevent_socket)
        self._send = self._raw.send
        self.chunked = chunked

    @classmethod
    def of(cls, environ: Mapping[str, object]) -> StreamSocket | None:
        """The stream's socket, once pywsgi has sent the head; None where it cannot be had."""
        found = handed_over(environ)
        if found is None:
            return None
        sock, chunked = found
        return cls(sock, chunked=chunked)

    def _parts(self, blocks: Sequence[bytes]) -> list[bytes]:
        if len(blocks) > _MAX_PARTS:
            blocks = [b"".join(blocks)]
        if not self.chunked:
            return list(blocks)
        size = sum(len(b) for b in blocks)
        return [b"%x\r\n" % size, *blocks, _CRLF]

    def try_send(self, blocks: Sequence[bytes]) -> memoryview | None:
        """Send `blocks` as one chunk without ever blocking. Returns the unsent rest of the
        framed chunk (to be sent with `send_rest` before anything else), or None when all
        went out. Raises OSError when the peer is gone."""
        parts = self._parts(blocks)
        try:
            sent = self._raw.sendmsg(parts, (), _FLAGS)
        except BlockingIOError:
            sent = 0
        total = sum(len(p) for p in parts)
        if sent == total:
            return None
        return memoryview(b"".join(parts))[sent:]

    def try_send_bytes(self, data: bytes | memoryview) -> memoryview | None:
        """Send bytes already framed for this response (`http_chunk` when it is chunked) in
        one `send` that never blocks; the unsent rest as `try_send` returns it."""
        try:
            sent = self._send(data, _FLAGS)
        except BlockingIOError:
            sent = 0
        if sent == len(data):
            return None
        return memoryview(data)[sent:]

    def send(self, blocks: Sequence[bytes]) -> None:
        """Send `blocks` as one chunk, waiting (cooperatively) while the socket is full."""
        rest = self.try_send(blocks)
        if rest is not None:
            self.send_rest(rest)

    def send_rest(self, rest: memoryview) -> None:
        self._gevent_socket.sendall(rest)

    def wait_writable(self) -> None:
        """Wait (cooperatively) until the socket takes more."""
        wait_write(self._raw.fileno())


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
