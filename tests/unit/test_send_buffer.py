"""A stream's kernel send buffer (`pushsvc.deliver.stream_socket`): held small at first, so
that a client that never reads pins little kernel memory, and grown once the client has taken
`EARNED_AFTER` bytes, so that one that reads keeps up with a burst. Over a real loopback TCP
connection (the buffer is the kernel's)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from pushsvc.deliver.stream_socket import (
    EARNED_AFTER,
    EARNED_SEND_BUFFER,
    SEND_BUFFER,
    StreamSocket,
)

BLOCK = b"x" * (64 * 1024)


@pytest.fixture
def connection() -> Iterator[tuple[socket.socket, socket.socket]]:
    """The server's end, its send buffer capped as a stream's is, and the client's."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
    client.setblocking(False)
    try:
        yield server, client
    finally:
        server.close()
        client.close()


def _send_buffer(sock: socket.socket) -> int:
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)


def _drain(client: socket.socket) -> int:
    taken = 0
    while True:
        try:
            chunk = client.recv(1 << 20)
        except BlockingIOError:
            return taken
        taken += len(chunk)


def test_a_client_that_reads_earns_a_larger_send_buffer(
    connection: tuple[socket.socket, socket.socket],
) -> None:
    server, client = connection
    stream = StreamSocket(server, chunked=False)
    started = _send_buffer(server)
    taken = 0
    while taken < EARNED_AFTER:
        rest = stream.try_send_bytes(BLOCK)
        while rest is not None:  # the client reads; what the socket took goes on
            taken += _drain(client)
            rest = stream.try_send_bytes(rest)
        taken += _drain(client)
    assert started <= 2 * SEND_BUFFER  # Linux doubles what it is given
    assert _send_buffer(server) >= 2 * EARNED_SEND_BUFFER


def test_a_client_that_never_reads_keeps_the_small_one(
    connection: tuple[socket.socket, socket.socket],
) -> None:
    server, _ = connection
    stream = StreamSocket(server, chunked=False)
    taken = 0
    for _ in range(100):  # until the socket takes nothing more
        rest = stream.try_send_bytes(BLOCK)
        taken += len(BLOCK) - (0 if rest is None else len(rest))
        if rest is not None and len(rest) == len(BLOCK):
            break
    assert taken < EARNED_AFTER, f"a never-reader took {taken} bytes"  # some 560 KiB here
    assert _send_buffer(server) <= 2 * SEND_BUFFER
