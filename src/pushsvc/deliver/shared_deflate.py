"""Deflate computed once per subscription shape, not once per stream: the shared context.

Every stream of the same topics (the same `?topic=` selectors, or the same one topic) and the
same rendering (projection key; a rendering whose bytes differ has another key) receives the
same runs in the same order, as the same bytes (`pushsvc.deliver.rendering`). A
`SharedDeflate` compresses that sequence once: each run is one *segment*, its rendered block
compressed by one zlib context and ended with a sync flush (byte-aligned, so it can be written
at once and anything can follow it), numbered in the order made (`Segment.seq`).

**Reset points.** Every `RESET_UPDATES` segments or `RESET_BYTES` of input, and after the
context was idle for `idle_reset_us` (so that a stream that sent a heartbeat meanwhile can
rejoin at once), the context is fully flushed before the next segment: that segment
(`Segment.start`) and those after it reach back to nothing before it. A stream can begin
taking the shared segments only at such a segment.

**The invariant.** A stream never receives a compressed block whose back-references reach
bytes that the stream did not receive from that same context since its last reset point.
Deflate's back-references are distances into the decoder's output; any byte a stream got that
the context did not produce (its retry line, its snapshot or replay, a heartbeat, a stored
block of an update it got outside the context) shifts those distances. So a stream joins the
shared sequence only at a reset point and from then on takes every shared segment of it, in
order, and nothing else (`seq` is the one it expects next); anything private — or a segment
that is not the next one (a conflated queue skipped one, a gap) — puts it out until the next
reset point, and meanwhile its bytes go out as stored blocks (`stored_blocks`: no
back-references at all) or are compressed by a private compressor that is flushed fully before
the stream rejoins (every later shared segment reaches back only to its reset point).
A stream takes a segment only if the segment's bytes are the ones the stream would have sent
(`Segment.plain`): true by construction for streams that render alike, and compared for those
that write `id:` lines of their own (a cursor), which share a context only among themselves.
`pushsvc.deliver.compression.CompressedRendering` applies the rule per stream; tests/unit/
test_shared_deflate.py draws streams that join, skip, batch and write heartbeats, and decodes
each.

Segments are made in dispatch order only: a run older than the newest one compressed (a stream
that lags behind, one whose queue conflated) is never compressed late, which would put it out
of order for every stream in the context; such a stream gets it as stored blocks.

The context's memory (zlib's window and hash tables, ~260 KiB at the defaults) is spent per
shape in use, not per stream: `SharedDeflates` holds each while a stream uses it.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Final

from pushsvc.core.updates import Run
from pushsvc.deliver.stream_socket import http_chunk

GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
"""A gzip member's header (RFC 1952): deflate, no name, no time, unknown OS; raw deflate
follows. No trailer is ever written: a stream never ends cleanly in the middle of its own
life, and every client that offers gzip decodes a member cut short (docs/api.md)."""

RESET_UPDATES = 32
"""Segments between two reset points: fewer costs bytes, more (or none) keeps a new stream's
start stored longer (measured on the demo's topics: docs/performance.md, 'Compressed
streams')."""
RESET_BYTES = 64 * 1024
"""Input bytes between two reset points, whichever of the two comes first (grouped topics'
updates are tens of kB)."""
LEVEL = 6
"""zlib's default level: a faster one saves CPU and costs bytes, and the CPU is spent once per
update, not per stream (measured: docs/performance.md, 'Compressed streams')."""

_MAX_STORED = 65535
_KEEP_MADE = 64
"""Segments remembered per context, with their runs, for the streams still to write them: a
stream further behind gets stored blocks. Runs are otherwise let go of within milliseconds;
64 of a grouped topic's (tens of kB each) are still a few MB a context at most."""


def stored_blocks(data: bytes) -> list[bytes]:
    """`data` as raw deflate stored blocks (not final), from a byte boundary: no
    back-references, so safe at any point of a stream, and no compression either."""
    parts: list[bytes] = []
    for at in range(0, len(data), _MAX_STORED):
        piece = data[at : at + _MAX_STORED]
        size = len(piece)
        parts.append(struct.pack("<BHH", 0, size, size ^ 0xFFFF))
        parts.append(piece)
    return parts


@dataclass(eq=False, slots=True)
class Segment:
    """One run, compressed in its context: `data` is whole deflate blocks ending at a byte
    boundary."""

    seq: int
    start: bool
    """A reset point: its blocks (and those of the segments after it) reach back to nothing
    before it, so a stream may begin here."""
    data: bytes
    plain: bytes
    """What `data` decodes to."""
    chunk: bytes
    """`data` framed as one HTTP/1.1 chunk (a stream of pushsvc's server writes that)."""


Made = tuple[Run, Segment, int, bytes, bytes]
"""A segment made, as a stream's `wire` reads it without an attribute lookup: the run (kept
alive, so that its id, the key, is not reused meanwhile: a Run compares by value and is not
hashable), the segment, its `seq`, its `data` and its `chunk`."""
MADE_SEGMENT: Final = 1
MADE_SEQ: Final = 2
MADE_DATA: Final = 3
MADE_CHUNK: Final = 4


class SharedDeflate:
    """The deflate context of one subscription shape (see the module docstring)."""

    __slots__ = (
        "_compressor",
        "_input_since_reset",
        "_newest_us",
        "_segments_since_reset",
        "_seq",
        "idle_reset_us",
        "key",
        "level",
        "made",
        "streams",
    )

    def __init__(self, key: Hashable, *, level: int = LEVEL, idle_reset_us: int) -> None:
        self.key = key
        self.level = level
        self.idle_reset_us = idle_reset_us
        self.streams = 0
        """Streams using it (`SharedDeflates`)."""
        self._compressor: zlib._Compress | None = None
        self._seq = 0
        self._segments_since_reset = 0
        self._input_since_reset = 0
        self._newest_us = -1
        self.made: dict[int, Made] = {}
        """The segments made, by their run's id (see `Made`); read by a stream's `wire`
        directly, its fast path."""

    @property
    def next_seq(self) -> int:
        """The number the next segment made will have."""
        return self._seq

    def segment(self, run: Run, plain: bytes) -> Segment | None:
        """The run's segment, made on first call from `plain` (the run's rendered bytes as the
        first stream to ask renders it); None when the run came too late to be compressed in
        order (the caller sends its bytes stored). A stream may take the segment only when its
        own bytes for the run are `Segment.plain` (a stream writing a cursor of its own may
        differ until its cursor covers every partition of its topics)."""
        made = self.made
        found = made.get(id(run))
        if found is not None:
            return found[MADE_SEGMENT]
        if run.received_us < self._newest_us:
            return None  # never compressed out of order (see the module docstring)
        segment = self._compress(plain, run.received_us)
        made[id(run)] = (run, segment, segment.seq, segment.data, segment.chunk)
        if len(made) > _KEEP_MADE:
            del made[next(iter(made))]
        return segment

    def _compress(self, plain: bytes, received_us: int) -> Segment:
        compressor = self._compressor
        head = b""
        if compressor is None:
            compressor = self._compressor = zlib.compressobj(self.level, zlib.DEFLATED, -15)
            start = True
        else:
            start = (
                self._segments_since_reset >= RESET_UPDATES
                or self._input_since_reset >= RESET_BYTES
                or received_us - self._newest_us >= self.idle_reset_us
            )
            if start:
                # An empty stored block, and the compressor forgets everything before it.
                head = compressor.flush(zlib.Z_FULL_FLUSH)
        if start:
            self._segments_since_reset = 0
            self._input_since_reset = 0
        self._segments_since_reset += 1
        self._input_since_reset += len(plain)
        self._newest_us = max(self._newest_us, received_us)
        data = head + compressor.compress(plain) + compressor.flush(zlib.Z_SYNC_FLUSH)
        segment = Segment(self._seq, start, data, plain, http_chunk(data))
        self._seq += 1
        return segment


class SharedDeflates:
    """This process's shared contexts, by shape, each kept while a stream uses it, and about
    `limit` of them at most: a new shape is admitted (`admits`) only while there is room.
    (Streams admitted together may pass it by a few: the bound is on memory, ~260 KiB a
    context, not a count to the unit.)"""

    def __init__(self, *, idle_reset_us: int, limit: int = 256, level: int = LEVEL) -> None:
        self._idle_reset_us = idle_reset_us
        self._level = level
        self.limit = limit
        self._contexts: dict[Hashable, SharedDeflate] = {}

    def admits(self, key: Hashable) -> bool:
        """Whether a stream of this shape may be compressed: its context exists, or there is
        room for one."""
        return key in self._contexts or len(self._contexts) < self.limit

    def acquire(self, key: Hashable) -> SharedDeflate:
        context = self._contexts.get(key)
        if context is None:
            context = SharedDeflate(key, level=self._level, idle_reset_us=self._idle_reset_us)
            self._contexts[key] = context
        context.streams += 1
        return context

    def release(self, context: SharedDeflate) -> None:
        context.streams -= 1
        if context.streams <= 0 and self._contexts.get(context.key) is context:
            del self._contexts[context.key]

    def __len__(self) -> int:
        return len(self._contexts)

    def contexts(self) -> Iterable[SharedDeflate]:
        return self._contexts.values()
