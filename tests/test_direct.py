"""Direct writes to a subscriber's socket (the hub's fast path), on a real socket pair."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from pushsvc.direct import ClientGone, DirectWriter


@dataclass
class Response:
    """The two things DirectWriter reads from gevent's WSGI handler."""

    socket: socket.socket | None
    response_use_chunked: bool


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    server, client = socket.socketpair()
    server.setblocking(False)  # as gevent keeps it
    yield server, client
    server.close()
    client.close()


def test_chunked_and_raw_framing(pair: tuple[socket.socket, socket.socket]) -> None:
    server, client = pair
    assert DirectWriter(Response(server, True)).send_now(b"id: 1\n\n") == b""
    assert client.recv(100) == b"7\r\nid: 1\n\n\r\n"
    assert DirectWriter(Response(server, False)).send_now(b"id: 2\n\n") == b""
    assert client.recv(100) == b"id: 2\n\n"


def test_full_socket_writes_nothing_or_returns_the_rest(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    server, client = pair
    writer = DirectWriter(Response(server, True))
    block = b"x" * 65536
    rests = []
    while True:
        rest = writer.send_now(block)
        if rest is None:
            break  # nothing written: the caller queues it
        rests.append(rest)
        assert len(rests) < 10_000, "the socket never filled"
    partial = [r for r in rests if r]
    # Whatever was cut short is exactly the tail of one framed block.
    assert all(len(r) < len(block) + 10 for r in partial)
    received = bytearray()
    client.setblocking(False)
    try:
        while chunk := client.recv(1 << 20):
            received += chunk
    except BlockingIOError:
        pass
    sent = sum(len(block) + len(b"10000\r\n\r\n") - len(r) for r in rests)
    assert len(received) == sent


def test_closed_peer_is_client_gone(pair: tuple[socket.socket, socket.socket]) -> None:
    server, client = pair
    client.close()
    writer = DirectWriter(Response(server, True))
    with pytest.raises(ClientGone):
        for _ in range(100):  # the first write may still be accepted by the kernel
            writer.send_now(b"data: x\n\n")
    with pytest.raises(ClientGone):
        DirectWriter(Response(None, True)).send_now(b"data: x\n\n")
