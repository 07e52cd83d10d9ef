"""pushsvc's server runs the reads that are ready in one turn of the loop as many a turn as
fit in `HOLD_S` (`pushsvc.loop_pause.take_turns`), with the sockets polled between turns:
gevent takes a burst of up to 100 connections in one turn and ran each one's request in it,
so a burst of streams opened at once kept every other socket waiting until all of it was
handled. A POST (a producer's) goes at once."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable

import gevent
from gevent import socket as gsocket

from pushsvc.loop_pause import HOLD_S
from pushsvc.server import Server, StreamingHandler, listen

WAIT_S = 10  # a bound for events awaited, never a sleep
BURST = 64


def _burst(method: str) -> Counter[int]:
    """64 connections waiting with a request each when the server starts, each request's app
    working at least a third of `HOLD_S`: how many were run in each turn of the loop, once
    every one was answered."""
    work_s = HOLD_S / 3
    turn = [0]
    run_in: list[int] = []

    def count_turn() -> None:
        turn[0] += 1

    def app(environ: dict[str, object], start_response: Callable[..., object]) -> Iterable[bytes]:
        run_in.append(turn[0])
        until = time.monotonic() + work_s
        while time.monotonic() < until:
            pass
        start_response("204 No Content", [])
        return [b""]

    listener = listen("127.0.0.1", 0)
    listener.setblocking(False)  # as a monkey-patched process's is: accept never blocks
    port = listener.getsockname()[1]
    # Connected and asked before the server takes any: the whole burst waits in the listen
    # queue, as connections do that arrive at once.
    clients = [gsocket.create_connection(("127.0.0.1", port), timeout=WAIT_S) for _ in range(BURST)]
    for client in clients:
        client.sendall(f"{method} / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".encode())
        client.sendall(b"Content-Length: 0\r\n\r\n")
    prepare = gevent.get_hub().loop.prepare()  # runs once a turn, before the loop polls
    prepare.start(count_turn)
    handler = type("Handler", (StreamingHandler,), {"header_timeout_s": 10.0, "greenlets": None})
    server = Server(listener, app, log=None, handler_class=handler)
    server.start()
    try:
        for client in clients:
            answer = b""
            while chunk := client.recv(4096):
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 204")
            client.close()
    finally:
        server.stop()
        prepare.close()
    assert len(run_in) == BURST
    return Counter(run_in)


def test_a_burst_of_reads_is_run_a_few_a_turn_of_the_loop() -> None:
    """A turn runs the first and those that start within `HOLD_S` of it: 3 more at most."""
    per_turn = _burst("GET")
    assert max(per_turn.values()) <= 4, per_turn


def test_a_burst_of_posts_is_run_as_it_comes() -> None:
    """A producer's POST never waits for a turn: the burst is run as gevent takes it."""
    per_turn = _burst("POST")
    assert max(per_turn.values()) > 4, per_turn
