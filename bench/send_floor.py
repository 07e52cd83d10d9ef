"""The floor under server CPU per delivery: what one non-blocking `send` of an update's
bytes costs the sending process on loopback, with nothing else around it.

N TCP connections on 127.0.0.1, read by a child process (epoll, as the load generator does);
the parent sends B bytes to each of them, M rounds at R rounds/s (or `max`), and reports its own
user + system CPU per send. On loopback the sender's `send` also runs the receiver's TCP input
and wakes it, so this is what one delivery costs a server that sends each update to each client
on its own, before any Python of its own.

    python -m bench.send_floor --subscribers 500 --bytes 660 --rate 50
"""

from __future__ import annotations

import argparse
import os
import resource
import selectors
import socket
import sys
import time

_FLAGS = socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL


def _reader(port: int, n: int) -> None:
    """The child: connect n sockets, read each until the parent closes it, exit."""
    sel = selectors.EpollSelector()
    for _ in range(n):
        conn = socket.create_connection(("127.0.0.1", port))
        conn.setblocking(False)
        sel.register(conn, selectors.EVENT_READ)
    open_ = n
    deadline = time.monotonic() + 300
    while open_ and time.monotonic() < deadline:
        for key, _ in sel.select(1):
            conn = key.fileobj
            try:
                data = conn.recv(1 << 16)  # type: ignore[union-attr]
            except BlockingIOError:
                continue
            if not data:
                sel.unregister(conn)
                open_ -= 1
    os._exit(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", "-n", type=int, default=500)
    parser.add_argument("--bytes", "-b", type=int, default=660)
    parser.add_argument("--rounds", "-m", type=int, default=200)
    parser.add_argument("--rate", "-r", default="50", help="rounds per second, or max")
    args = parser.parse_args(argv)
    n, size, rounds = args.subscribers, args.bytes, args.rounds
    interval = 0.0 if args.rate == "max" else 1 / float(args.rate)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    port = listener.getsockname()[1]
    child = os.fork()
    if child == 0:
        _reader(port, n)
    conns = [listener.accept()[0] for _ in range(n)]
    for conn in conns:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.setblocking(False)
    block = b"x" * size
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.monotonic()
    full = 0  # sends refused because the reader fell behind (not counted)
    for k in range(rounds):
        for conn in conns:
            try:
                conn.send(block, _FLAGS)
            except BlockingIOError:
                full += 1
        if interval:
            time.sleep(max(0.0, start + (k + 1) * interval - time.monotonic()))
    after = resource.getrusage(resource.RUSAGE_SELF)
    for conn in conns:
        conn.close()
    os.waitpid(child, 0)
    sends = n * rounds - full
    user = (after.ru_utime - before.ru_utime) * 1e6 / sends
    system = (after.ru_stime - before.ru_stime) * 1e6 / sends
    print(
        f"N={n} B={size} R={args.rate}: {user + system:.2f} µs CPU per send "
        f"(user {user:.2f}, system {system:.2f}; {full} sends refused: socket full)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
