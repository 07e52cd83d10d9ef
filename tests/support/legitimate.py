"""What the hostile tests run beside an attack: a client whose service they assert, and a
reader that never reads.

`LegitimateClient` is a producer and a subscriber on a topic of their own: each round posts
two events, timed, and reads them back, checking that every one comes, in order (as updates on
`/stream`, or as messages on `/messages`); `assert_fast` holds its POSTs' p99 to a bound
generous for a loaded 2-core machine.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Mapping

from harness.live import SSEClient, post

P99_BOUND_S = 1.0


def never_reader(port: int, path: str, headers: Mapping[str, str] | None = None) -> socket.socket:
    """A client that asks for a stream and never reads it, with a tiny receive buffer."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    lines = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n{lines}\r\n".encode())
    return sock


def next_message(stream: SSEClient) -> tuple[str, str]:
    """A messages stream's next message (id, data), past its head (an `id:` alone)."""
    while True:
        message = stream.next(15)
        if message.data:
            return message.id, message.data


class LegitimateClient:
    """A producer and its subscriber on `topic` (see the module docstring)."""

    def __init__(
        self,
        port: int,
        topic: str,
        *,
        messages: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """`headers`: sent with every POST and the stream (a token, with auth on)."""
        self.port = port
        self.topic = topic
        self.messages = messages
        self.headers = dict(headers or {})
        if messages:
            self.client = SSEClient(port, f"/topics/{topic}/messages", headers=self.headers)
        else:
            self.client = SSEClient(port, f"/topics/{topic}/stream", headers=self.headers)
            self.client.next_data("snapshot")
        self.sent = 0
        self.latencies: list[float] = []

    def round(self) -> None:
        numbers = [self.sent, self.sent + 1]
        if self.messages:
            events = [{"type": "n", "data": n} for n in numbers]
        else:
            events = [{"value": n} for n in numbers]
        start = time.monotonic()
        status, _ = post(self.port, self.topic, events, headers=self.headers)
        self.latencies.append(time.monotonic() - start)
        assert status == 202
        if self.messages:
            got = [json.loads(next_message(self.client)[1]) for _ in numbers]
        else:
            got = [u["event"]["value"] for _, u in self.client.take(len(numbers))]
        assert got == numbers
        self.sent += len(numbers)

    def assert_fast(self) -> None:
        """The producer's p99 latency."""
        latencies = sorted(self.latencies)
        assert latencies, "no legitimate round ran"
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        assert p99 < P99_BOUND_S, f"legitimate POST p99 {p99:.3f} s"

    def close(self) -> None:
        self.client.close()
