"""One SSE subscriber as an asyncio Protocol: request, response head, body, messages, tally.

A Protocol rather than streams: the per-delivery path is one `data_received` call
with no task switch, which keeps 10,000 subscribers cheap.
"""

from __future__ import annotations

import asyncio
import time
from array import array
from collections.abc import Callable
from typing import cast

from loadgen.dechunk import Dechunker
from loadgen.http1 import ProtocolError, ResponseHead, split_head
from loadgen.kinds import READY, Kind
from loadgen.tally import Tally
from pushsvc.sse_parser import EventStreamParser


def stream_request(host: str, port: int, path: str, *, http10: bool) -> bytes:
    if http10:
        return f"GET {path} HTTP/1.0\r\nAccept: text/event-stream\r\n\r\n".encode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n"
        "Cache-Control: no-store\r\n\r\n"
    ).encode()


class Hooks:
    """What the run wants to hear about; a subscriber calls each at most once."""

    def __init__(self) -> None:
        self.on_ready: Callable[[Subscriber], None] = lambda s: None
        self.on_complete: Callable[[Subscriber], None] = lambda s: None
        self.on_end: Callable[[Subscriber], None] = lambda s: None


class StreamProtocol(asyncio.Protocol):
    """One SSE response read off a raw socket: the request, the head (checked strictly), the
    body dechunked; subclasses take the body pieces (`body`) and hear the end (`ended_`)."""

    def __init__(self, request: bytes) -> None:
        self._request = request
        self._head_buffer = b""
        self._dechunk: Dechunker | None = None
        self.transport: asyncio.Transport | None = None
        self.head: ResponseHead | None = None
        self.ended = False
        self.closing = False
        self.error: str | None = None
        self.bytes = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        self.bytes += len(data)
        try:
            if self.head is None:
                split = split_head(self._head_buffer + data)
                if split is None:
                    self._head_buffer += data
                    return
                self.head, data = split
                self._head_buffer = b""
                self._check_head(self.head)
                if not data:
                    return
            self.body([data] if self._dechunk is None else self._dechunk.feed(data))
        except (ProtocolError, ValueError) as exc:
            self.fail(f"{type(exc).__name__}: {exc}")

    def body(self, pieces: list[bytes]) -> None:
        raise NotImplementedError

    def _check_head(self, head: ResponseHead) -> None:
        if head.status != 200:
            raise ProtocolError(f"status {head.status}")
        content_type = head.headers.get("content-type", "")
        if content_type.split(";")[0].strip().lower() != "text/event-stream":
            raise ProtocolError(f"content-type {content_type!r}")
        if head.chunked:
            self._dechunk = Dechunker()
        elif head.content_length is not None:
            raise ProtocolError("an event stream with a Content-Length")

    def fail(self, reason: str) -> None:
        if self.error is None:
            self.error = reason
        self.close()

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closing and self.error is None:
            self.error = f"closed by the server ({exc or 'EOF'})"
        if not self.ended:
            self.ended = True
            self.ended_()

    def ended_(self) -> None:
        """The connection is gone (once)."""


class Subscriber(StreamProtocol):
    """Decodes every delivery (value, sent time) and tallies it: the fan-out benchmark's."""

    def __init__(
        self,
        request: bytes,
        kind: Kind,
        tally: Tally,
        latencies: array[float],
        hooks: Hooks,
        progress: list[float],
    ) -> None:
        super().__init__(request)
        self._kind = kind
        self.tally = tally
        self._latencies = latencies
        self._hooks = hooks
        self._progress = progress  # [time of the newest delivery, shared by all subscribers]
        self._parser = EventStreamParser()
        self.ready = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if not self._kind.ready_on_snapshot:
            self._set_ready()

    def body(self, pieces: list[bytes]) -> None:
        now = time.time()
        for message in [m for piece in pieces for m in self._parser.feed(piece)]:
            decoded = self._kind.decode(message)
            if decoded is None:
                continue
            if decoded == READY:
                self._set_ready()
                continue
            value, sent = decoded  # type: ignore[misc]
            self._latencies.append(now - sent)
            self._progress[0] = now
            if self.tally.record(value):
                self._hooks.on_complete(self)

    def _set_ready(self) -> None:
        if not self.ready:
            self.ready = True
            self._hooks.on_ready(self)

    def ended_(self) -> None:
        self._hooks.on_end(self)
