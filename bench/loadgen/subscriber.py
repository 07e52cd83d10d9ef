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


class Subscriber(asyncio.Protocol):
    def __init__(
        self,
        request: bytes,
        kind: Kind,
        tally: Tally,
        latencies: array[float],
        hooks: Hooks,
        progress: list[float],
    ) -> None:
        self._request = request
        self._kind = kind
        self.tally = tally
        self._latencies = latencies
        self._hooks = hooks
        self._progress = progress  # [time of the newest delivery, shared by all subscribers]
        self._head_buffer = bytearray()
        self._dechunk: Dechunker | None = None
        self._parser = EventStreamParser()
        self.transport: asyncio.Transport | None = None
        self.head: ResponseHead | None = None
        self.ready = False
        self.ended = False
        self.closing = False
        self.error: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        transport = self.transport
        transport.write(self._request)
        if not self._kind.ready_on_snapshot:
            self._set_ready()

    def data_received(self, data: bytes) -> None:
        now = time.time()
        try:
            if self.head is None:
                self._head_buffer += data
                split = split_head(self._head_buffer)
                if split is None:
                    return
                self.head, data = split
                self._head_buffer = bytearray()
                self._check_head(self.head)
                if not data:
                    return
            pieces = [data] if self._dechunk is None else self._dechunk.feed(data)
            messages = [m for piece in pieces for m in self._parser.feed(piece)]
            for message in messages:
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
        except (ProtocolError, ValueError) as exc:
            self.fail(f"{type(exc).__name__}: {exc}")

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

    def _set_ready(self) -> None:
        if not self.ready:
            self.ready = True
            self._hooks.on_ready(self)

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
        self._end()

    def _end(self) -> None:
        if not self.ended:
            self.ended = True
            self._hooks.on_end(self)
