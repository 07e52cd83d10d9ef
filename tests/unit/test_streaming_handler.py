"""pushsvc's pywsgi handler (`pushsvc.server.StreamingHandler`) lends itself to the app
through the environ; once a response is done, it is freed by reference counting, not left
in a cycle with its environ for the collector's next full pass (which a serving process runs
seldom: `pushsvc.ops.collector`). Each request's handler holds its connection's socket, its
read buffer and the request."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable

import gevent
from gevent import socket as gsocket

from pushsvc.gevent_private import ENVIRON_KEY
from pushsvc.server import Server, StreamingHandler

WAIT_S = 10  # a bound for events awaited, never a sleep


def _app(environ: dict[str, object], start_response: Callable[..., object]) -> Iterable[bytes]:
    assert isinstance(environ[ENVIRON_KEY], StreamingHandler)  # what a stream asks for
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


def _until_closed(port: int, request: bytes) -> bytes:
    """What the server answers `request` with, up to its close of the connection."""
    with gsocket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    gevent.sleep(0)  # the server's greenlet ends the connection
    return answer


def _one_request(port: int) -> None:
    answer = _until_closed(port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"ok")


def _objects_left(
    connect: Callable[[int], None], times: int, *, warm: int = 1, **fields: object
) -> int:
    """What `times` connections made by `connect` to a server of handler `fields` leave for
    the collector (it is off meanwhile): once `warm` ones made what is made once."""
    handler = type("Handler", (StreamingHandler,), {"header_timeout_s": 10.0, "greenlets": None,
                                                    **fields})  # fmt: skip
    server = Server(("127.0.0.1", 0), _app, log=None, handler_class=handler)
    server.start()
    port = server.server_port
    assert port is not None
    try:
        for _ in range(warm):
            connect(port)
        gc.collect()
        gc.disable()
        try:
            before = len(gc.get_objects())
            for _ in range(times):
                connect(port)
            return len(gc.get_objects()) - before
        finally:
            gc.enable()
    finally:
        server.stop()


def test_a_handler_is_freed_once_its_response_is_done() -> None:
    left = _objects_left(_one_request, 50)
    # A handler kept in a cycle with its environ keeps a dozen objects or more.
    assert left < 25, f"{left} objects left by 50 requests"


def _one_unfinished_body(port: int) -> None:
    """A POST whose body never comes, kept open until the server gives up on it."""
    answer = _until_closed(port, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
    assert answer.startswith(b"HTTP/1.1 408"), answer


def test_a_connection_whose_body_timed_out_is_freed_with_it() -> None:
    """Under R.U.D.Y. thousands of bodies time out a minute: each connection's handler, frames
    and deadline go when it does, by reference counting, never in a cycle that only a full
    pass of the collector would free (one such pass held the loop for half a second)."""
    left = _objects_left(
        _one_unfinished_body, 30, warm=3, max_body_bytes=1 << 20, body_timeout_s=10.0,
        body_read_timeout_s=0.02,
    )  # fmt: skip
    # A connection left in a cycle keeps some seventy objects: its frames, handler and socket
    # (2,103 for these 30, measured with the cycle put back).
    assert left < 10 * 30, f"{left} objects left by 30 timed-out bodies"
