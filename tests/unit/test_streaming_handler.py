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
