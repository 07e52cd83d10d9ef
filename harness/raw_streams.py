"""Many SSE streams on raw sockets, opened at once and left alone, then closed the two ways a
client goes: a clean close (FIN) or a reset (RST). For the tests and benchmarks of what a
server holds for streams nobody reads any more."""

from __future__ import annotations

import resource
import selectors
import socket
import struct
import time
from collections.abc import Iterable, Mapping

# A stream is subscribed once its first message (the snapshot or the replay) is in: the
# server registers the subscriber before it sends that.
_FIRST_MESSAGE = b"\ndata:"
MESSAGES_HEAD = b"\n\n"
"""A messages stream's first message (`retry:`, or a bare `id:`): it has no `data:`, and the
stream is subscribed before its response head (`open_streams(..., first=MESSAGES_HEAD)`)."""
_IN_FLIGHT = 100


class StreamRefused(Exception):
    """The server answered a stream request with something else than a stream."""


def raise_fd_limit(needed: int) -> None:
    """Lift the soft open-files limit to `needed` (child processes inherit it); raises
    OSError when the hard limit is lower."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise OSError(f"needs {needed} open files; the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def open_stream(port: int, path: str, timeout: float = 10) -> socket.socket:
    """One stream, read up to its first message; raises StreamRefused with the response."""
    return open_streams(port, path, 1, timeout=timeout)[0]


def open_streams(
    port: int,
    path: str,
    count: int,
    timeout: float = 60,
    *,
    bodies: dict[socket.socket, bytes] | None = None,
    headers: Mapping[str, str] | None = None,
    first: bytes = _FIRST_MESSAGE,
) -> list[socket.socket]:
    """`count` streams of `path`, each read up to its first message (non-blocking sockets,
    nothing more read from them; `first`: what shows that message is in, by default its
    `data:` line). Raises StreamRefused, closing them all, when one is not
    a stream; TimeoutError when they are not all open by `timeout`. `bodies`, when given,
    gets each stream's body as read so far (after the response head), to read on from;
    `headers`, more request headers (a cookie)."""
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    line = f"GET {path} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n{extra}\r\n"
    request = line.encode()
    deadline = time.monotonic() + timeout
    selector = selectors.DefaultSelector()
    received: dict[socket.socket, bytes] = {}
    opened: list[socket.socket] = []
    left = count
    try:
        while len(opened) < count:
            while left and len(received) < _IN_FLIGHT:
                sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
                sock.sendall(request)
                sock.setblocking(False)
                selector.register(sock, selectors.EVENT_READ)
                received[sock] = b""
                left -= 1
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{len(opened)} of {count} streams open in {timeout} s")
            for key, _ in selector.select(remaining):
                sock = key.fileobj  # type: ignore[assignment]
                data = sock.recv(65536)
                text = received[sock] + data
                head, _, body = text.partition(b"\r\n\r\n")
                if not data or (body and not head.startswith(b"HTTP/1.1 200")):
                    raise StreamRefused(text.decode(errors="replace"))
                received[sock] = text
                if first in body:
                    selector.unregister(sock)
                    del received[sock]
                    opened.append(sock)
                    if bodies is not None:
                        bodies[sock] = body
    except BaseException:
        close_all(opened + list(received))
        raise
    finally:
        selector.close()
    return opened


def close_cleanly(sock: socket.socket) -> None:
    """Close as a browser does, with a FIN. Whatever the server sent is read first: Linux
    resets a connection closed with unread bytes. Only what is there already: a socket a
    test gave a timeout would otherwise wait it out first."""
    sock.setblocking(False)
    try:
        while sock.recv(65536):
            pass
    except BlockingIOError:
        pass
    except OSError:
        pass  # already reset by the server: nothing to close cleanly
    sock.close()


def reset(sock: socket.socket) -> None:
    """Close with a reset (RST), as a client aborting its connection or a middlebox does."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def close_all(socks: Iterable[socket.socket]) -> None:
    for sock in socks:
        sock.close()


def read_until_closed(sock: socket.socket, within: float = 10.0) -> bytes:
    """What the server sends until it ends the connection (EOF or a reset); fails when it
    is still open after `within` seconds."""
    deadline = time.monotonic() + within
    received = bytearray()
    try:
        while True:
            left = deadline - time.monotonic()
            assert left > 0, (
                f"the server never closed the connection; it sent {bytes(received[:200])!r}"
            )
            sock.settimeout(left)
            part = sock.recv(1 << 16)
            if not part:
                return bytes(received)
            received += part
    except ConnectionResetError:
        return bytes(received)
    except TimeoutError:
        raise AssertionError("the server never closed the connection") from None
