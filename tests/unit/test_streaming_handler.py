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


def _one_request(port: int) -> None:
    with gsocket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"ok")
    gevent.sleep(0)  # the server's greenlet ends the connection


def test_a_handler_is_freed_once_its_response_is_done() -> None:
    handler = type("Handler", (StreamingHandler,), {"header_timeout_s": 10.0, "greenlets": None})
    server = Server(("127.0.0.1", 0), _app, log=None, handler_class=handler)
    server.start()
    try:
        _one_request(server.server_port)  # anything made once is made here
        gc.collect()
        gc.disable()
        try:
            before = len(gc.get_objects())
            for _ in range(50):
                _one_request(server.server_port)
            left = len(gc.get_objects()) - before
        finally:
            gc.enable()
    finally:
        server.stop()
    # A handler kept in a cycle with its environ keeps a dozen objects or more.
    assert left < 25, f"{left} objects left by 50 requests"


def _one_unfinished_body(port: int) -> None:
    """A POST whose body never comes, kept open until the server gives up on it."""
    with gsocket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 408"), answer
    gevent.sleep(0)


def test_a_connection_whose_body_timed_out_is_freed_with_it() -> None:
    """Under R.U.D.Y. thousands of bodies time out a minute: each connection's handler, frames
    and deadline go when it does, by reference counting, never in a cycle that only a full
    pass of the collector would free (one such pass held the loop for half a second)."""
    fields = {"header_timeout_s": 10.0, "greenlets": None, "max_body_bytes": 1 << 20,
              "body_timeout_s": 10.0, "body_read_timeout_s": 0.02}  # fmt: skip
    handler = type("Handler", (StreamingHandler,), fields)
    server = Server(("127.0.0.1", 0), _app, log=None, handler_class=handler)
    server.start()
    try:
        for _ in range(3):
            _one_unfinished_body(server.server_port)  # anything made once is made here
        gc.collect()
        gc.disable()
        try:
            before = len(gc.get_objects())
            for _ in range(30):
                _one_unfinished_body(server.server_port)
            left = len(gc.get_objects()) - before
        finally:
            gc.enable()
    finally:
        server.stop()
    # A connection left in a cycle keeps some seventy objects: its frames, handler and socket
    # (2,103 for these 30, measured with the cycle put back).
    assert left < 10 * 30, f"{left} objects left by 30 timed-out bodies"
