"""One SSE subscriber as an asyncio Protocol: request, response head, body, and its progress.

A Protocol rather than streams: the per-delivery path is one `data_received` call
with no task switch, which keeps 10,000 subscribers cheap. What a subscriber does with
the body is its `Reader`'s (loadgen/modes.py); this module only frames the response and
keeps the run's shared `Progress` up to date.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from bench.loadgen.dechunk import Dechunker
from bench.loadgen.http1 import ProtocolError, ResponseHead, split_head
from bench.loadgen.tally import Verdict


def stream_request(host: str, port: int, path: str, *, http10: bool, gzip: bool = False) -> bytes:
    # A browser's EventSource offers gzip, deflate and br: the server picks.
    offer = "Accept-Encoding: gzip, deflate, br\r\n" if gzip else ""
    if http10:
        return f"GET {path} HTTP/1.0\r\nAccept: text/event-stream\r\n{offer}\r\n".encode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n"
        f"Cache-Control: no-store\r\n{offer}\r\n"
    ).encode()


class Reader(Protocol):
    """What one subscriber does with its body (a mode: loadgen/modes.py)."""

    ready: bool
    """The subscription is live (from the start, or once the reader saw that it is)."""
    complete: bool
    """Every expected delivery arrived."""

    def feed(self, pieces: list[bytes], now: float) -> int:
        """Read body bytes that arrived at `now`; returns the deliveries among them."""
        ...

    def verdict(self) -> Verdict: ...


@dataclass
class Progress:
    """Shared by the subscribers of one run; `changed` is set whenever a count moves."""

    expected: int
    ready: int = 0
    failed: int = 0  # ended, or never connected, before it was ready
    complete: int = 0
    ended: int = 0
    first_delivery: float = 0.0
    last_delivery: float = 0.0
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class Subscriber(asyncio.Protocol):
    """One SSE response read off a raw socket: the request, the head (checked strictly), the
    body dechunked and handed to its reader."""

    def __init__(self, request: bytes, reader: Reader, progress: Progress) -> None:
        self.reader = reader
        self._feed = reader.feed
        self._request = request
        self._progress = progress
        self._head_buffer = b""
        self._dechunk: Dechunker | None = None
        self._inflate: Any = None
        """zlib's gzip decoder, for a response that came gzipped."""
        self.transport: asyncio.Transport | None = None
        self.head: ResponseHead | None = None
        self.ended = False
        self.closing = False
        self.error: str | None = None
        self.bytes = 0
        self.complete_at: float | None = None
        self.live = asyncio.Event()
        """Set once the subscription is live, or over."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.write(self._request)
        if self.reader.ready:
            self._now_ready()

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
            pieces = [data] if self._dechunk is None else self._dechunk.feed(data)
            if self._inflate is not None:
                # Each write of the server's ends at a byte boundary: what came decodes now.
                pieces = [self._inflate.decompress(b"".join(pieces))]
            self._body(pieces)
        except (ProtocolError, ValueError) as exc:
            self.fail(f"{type(exc).__name__}: {exc}")

    def _body(self, pieces: list[bytes]) -> None:
        # The hot path: one call per read, whatever the mode.
        now = time.time()
        reader = self.reader
        was_ready = reader.ready
        if self._feed(pieces, now):
            progress = self._progress
            progress.first_delivery = progress.first_delivery or now
            progress.last_delivery = now
            if reader.complete and self.complete_at is None:
                self.complete_at = now
                progress.complete += 1
                progress.changed.set()
        if reader.ready is not was_ready:
            self._now_ready()

    def _now_ready(self) -> None:
        self._progress.ready += 1
        self._progress.changed.set()
        self.live.set()

    def _check_head(self, head: ResponseHead) -> None:
        if head.status != 200:
            raise ProtocolError(f"status {head.status}")
        content_type = head.headers.get("content-type", "")
        if content_type.split(";")[0].strip().lower() != "text/event-stream":
            raise ProtocolError(f"content-type {content_type!r}")
        encoding = head.headers.get("content-encoding", "").strip().lower()
        if encoding == "gzip":
            self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding not in ("", "identity"):
            raise ProtocolError(f"content-encoding {encoding!r}")
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
            self._progress.ended += 1
            self._progress.failed += not self.reader.ready
            self._progress.changed.set()
            self.live.set()
