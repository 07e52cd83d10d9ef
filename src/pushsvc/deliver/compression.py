"""A stream's gzip: negotiated by `Accept-Encoding`, its live updates taken from the shared
context of its shape (`pushsvc.deliver.shared_deflate`), everything else its own.

A stream that offers gzip (a browser's `EventSource`, httpx, curl `--compressed`) gets
`Content-Encoding: gzip`: a gzip header, then raw
deflate blocks, each write ending at a byte boundary (a sync flush) so the client decodes
every update the moment it arrives. No trailer, ever: the stream is one gzip member cut short
when it ends, which every such client accepts (tested with each, docs/api.md).

What goes out, in order:
* the head (`HeadCompressor`): the `retry:` line and the snapshot or replay pages, each
  compressed on its own (no compressor is kept while a page waits for the socket);
* live runs (`CompressedRendering`): the shared segment of each run when the stream is in the
  shared sequence — it joined at a reset point and has taken every segment since, nothing else
  — otherwise the run's bytes as stored blocks, until a reset point lets it join;
* its own bytes after the head (heartbeats, a paced stream's updates: `CompressedRendering.
  own`): stored blocks, and the stream is out of the shared sequence until the next reset
  point.

That is the invariant of `pushsvc.deliver.shared_deflate` (never a block that reaches back
to bytes the stream did not receive from the same context since its reset point), kept here
by one number per stream: the `seq` of the segment it expects next (`_next`, -1 when out).

A stream that writes its own `id:` lines (a cursor over several partitions: a multi-topic
stream) takes a shared segment only when its bytes for the run equal the segment's
(`Segment.plain`): the cursors of two streams of the same topics are the same text once each
has written an update of every partition it reads, so such streams share too, after their
first updates. A paced stream (`?max_hz=`) writes its own messages: stored blocks, gzip
framing and no saving.
"""

from __future__ import annotations

import zlib
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any, Literal

from pushsvc.core.cursor import Cursor
from pushsvc.core.updates import Run, Update
from pushsvc.deliver.rendering import Rendering
from pushsvc.deliver.shared_deflate import (
    GZIP_HEADER,
    LEVEL,
    MADE_CHUNK,
    MADE_DATA,
    MADE_SEQ,
    Segment,
    SharedDeflate,
    SharedDeflates,
    stored_blocks,
)
from pushsvc.deliver.stream_socket import http_chunk

GZIP = "gzip"


def negotiate(accept_encoding: str | None) -> str | None:
    """`gzip` when the client's `Accept-Encoding` takes it (named, or `*`, with a quality
    above 0); else None: the stream goes out as it is."""
    if not accept_encoding:
        return None
    qualities: dict[str, float] = {}
    for item in accept_encoding.split(","):
        coding, _, params = item.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        qualities[coding.strip().lower()] = quality
    for name in (GZIP, "x-gzip", "*"):
        if name in qualities:
            return GZIP if qualities[name] > 0 else None
    return None


SHARED_CONTEXTS = 256
"""Shared deflate contexts a process keeps at most, one per topics and projection that gzip
streams use (their memory: docs/api.md#compression); a stream of a new shape past it is sent
plain. Fixed: the shapes in use are what a deployment's clients ask for, not a tuning."""

_CONTEXTS: dict[tuple[int, int], SharedDeflates] = {}


def shared_deflates(heartbeat_us: int, limit: int) -> SharedDeflates:
    """This process's shared contexts for streams whose heartbeat is `heartbeat_us` (at most
    about `limit` of them): a context idle for half of it is reset, so that a stream that
    wrote a heartbeat meanwhile (and left the shared sequence) joins again with the next
    update."""
    contexts = _CONTEXTS.get((heartbeat_us, limit))
    if contexts is None:
        contexts = SharedDeflates(idle_reset_us=heartbeat_us // 2, limit=limit)
        _CONTEXTS[heartbeat_us, limit] = contexts
    return contexts


def encoding_headers(encoding: str | None) -> tuple[tuple[str, str], ...]:
    """A stream's headers for its encoding, where compression is on: caches and proxies must
    tell gzip streams from plain ones (`Vary`)."""
    vary = ("Vary", "Accept-Encoding")
    if encoding is None:
        return (vary,)
    return (("Content-Encoding", encoding), vary)


def shape_key(selectors: Sequence[str], rendering_key: str, own_ids: bool = False) -> Hashable:
    """What streams that receive the same bytes share: their topics' selectors (as a set: the
    hub delivers by them), their rendering's key (`Rendering.key`), and whether they write
    `id:` lines of their own (`Rendering.per_stream`: a pattern stream may have one partition
    when it starts, several later): streams without are sure to render alike, and take a
    segment without comparing its bytes to theirs."""
    return (tuple(sorted(set(selectors))), rendering_key, own_ids)


class HeadCompressor:
    """A stream's head, compressed: the gzip header first, then each piece (the `retry:`
    line, each page of the snapshot or replay) compressed on its own by a compressor made for
    it and dropped at once, flushed to a byte boundary. No compressor outlives a piece: a
    page may wait for a slow socket, and a reconnect storm's thousands of heads would
    otherwise hold zlib's ~260 KiB each meanwhile. (Pieces compressed apart lose what they
    share, a little: a page is 4 to 64 KiB.)"""

    __slots__ = ("_level", "_started")

    def __init__(self, level: int = LEVEL) -> None:
        self._level = level
        self._started = False

    def compress(self, data: bytes) -> bytes:
        if len(data) < _WORTH_COMPRESSING:
            out = b"".join(stored_blocks(data))
        else:
            compressor = zlib.compressobj(self._level, zlib.DEFLATED, -15)
            out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
        if not self._started:
            self._started = True
            out = GZIP_HEADER + out
        return out


_WORTH_COMPRESSING = 128
"""A piece shorter than this (the `retry:` line, an empty snapshot) goes out stored: making
a compressor costs more than the few bytes it would save."""


class CompressedRendering(Rendering):
    """One gzip stream's rendering: `inner` renders its runs as a plain stream would, and this
    compresses them (shared segments, or stored blocks) for this one stream. It is the
    stream's own (it keeps the stream's place in the shared sequence), so the hub calls
    `wire` for it every time, which costs a lookup when the segment is made already.

    `per_stream` stays False: the hub's writer then sends what `wire` returns (the segment's
    chunk, made once) with one `send`, as for a shared rendering; it never hands one stream's
    bytes to another, since each stream's `CompressedRendering` is an object of its own."""

    __slots__ = ("_context", "_inner", "_made", "_next", "_pick", "own_ids")

    def __init__(self, inner: Rendering, context: SharedDeflate | None) -> None:
        super().__init__(inner.projection, chunked=inner.chunked)
        self._inner = inner
        self._context = context
        self.own_ids = inner.per_stream
        """Its bytes may differ from the other streams' of its shape (its own `id:` lines):
        each segment is checked against them. Otherwise they are the same by construction."""
        # The hot path's reads: the context's segments (None: no fast path), and which of a
        # `Made`'s bytes this stream writes.
        self._made = None if context is None or self.own_ids else context.made
        self._pick: Literal[3, 4] = MADE_CHUNK if inner.chunked else MADE_DATA
        self._next = -1
        """The `seq` of the shared segment the stream takes next; -1: out of the sequence
        until a reset point."""

    @property
    def key(self) -> str:
        return self._inner.key

    @property
    def joined(self) -> bool:
        """Whether the stream is in its context's shared sequence now."""
        return self._next >= 0

    def _take(self, run: Run) -> tuple[Segment | None, bytes]:
        """What this stream sends of `run`, and the run's bytes as it renders them: the
        shared segment when it may take it; else None (the stream then sends those bytes
        stored, out of the sequence until a reset point, or nothing when they are empty)."""
        plain = self._inner.block(run)
        if not plain:
            return None, plain
        context = self._context
        if context is not None:
            segment = context.segment(run, plain)
            if (
                segment is not None
                and (segment.seq == self._next or segment.start)
                and (not self.own_ids or segment.plain is plain or segment.plain == plain)
            ):
                self._next = segment.seq + 1
                return segment, plain
        self._next = -1
        return None, plain

    def _add(self, run: Run, parts: list[bytes]) -> None:
        segment, plain = self._take(run)
        if segment is not None:
            parts.append(segment.data)
        elif plain:
            parts.extend(stored_blocks(plain))

    def block(self, run: Run) -> bytes:
        parts: list[bytes] = []
        self._add(run, parts)
        return b"".join(parts)

    def blocks(self, runs: Sequence[Run]) -> list[bytes]:
        parts: list[bytes] = []
        for run in runs:
            self._add(run, parts)
        return parts

    def wire(self, run: Run) -> bytes:
        # The hub's hot path, once per stream per update: the next segment, made already.
        made = self._made
        if made is not None:
            found = made.get(id(run))
            if found is not None and found[MADE_SEQ] == self._next:
                self._next += 1
                return found[self._pick]
        segment, plain = self._take(run)
        if segment is None:
            if not plain:
                return plain
            block = b"".join(stored_blocks(plain))
            return http_chunk(block) if self.chunked else block
        return segment.chunk if self.chunked else segment.data

    def own(self, data: bytes) -> bytes:
        """Bytes of this stream's own (a heartbeat, a paced stream's updates), stored: the
        stream leaves the shared sequence until the next reset point."""
        if not data:
            return data
        self._next = -1
        return b"".join(stored_blocks(data))

    # What the stream renders plainly (a paced stream's messages go out through `own`).
    def message(self, update: Update, with_id: bool = True) -> bytes:
        return self._inner.message(update, with_id)

    def replay(self, updates: Sequence[Update]) -> bytes:
        return self._inner.replay(updates)

    def snapshot(
        self,
        latest: Mapping[str, Update],
        groups: Mapping[str, list[bytes]],
        *,
        gap: bool,
        cursor: Cursor,
        named: Iterable[str] = (),
    ) -> bytes:
        return self._inner.snapshot(latest, groups, gap=gap, cursor=cursor, named=named)

    def unnumbered(self, run: Run) -> list[bytes]:
        return self._inner.unnumbered(run)

    def __repr__(self) -> str:
        extra: Any = self._context.key if self._context is not None else None
        return f"CompressedRendering({self._inner!r}, {extra!r}, next={self._next})"
