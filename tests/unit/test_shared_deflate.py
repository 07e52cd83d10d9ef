"""Compression once per shape: every stream decodes exactly the bytes a plain stream gets, and
never receives a shared block that reaches back to bytes it did not get from the context
(pushsvc.deliver.shared_deflate, pushsvc.deliver.compression)."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from pushsvc.core.sse import HEARTBEAT
from pushsvc.core.updates import Run
from pushsvc.deliver.compression import CompressedRendering, HeadCompressor, negotiate
from pushsvc.deliver.rendering import Rendering, rendering_for
from pushsvc.deliver.shared_deflate import RESET_UPDATES, SharedDeflate, SharedDeflates

IDLE_US = 7_500_000


def _message(n: int, value: float) -> bytes:
    return (
        f'id: e:{n}-0\nevent: stats\ndata: {{"id":"e:{n}-0","topic":"t","windows":'
        f'{{"1m":{{"count":{n},"mean":{value!r},"p99":{value * 1.5!r}}}}}}}\n\n'
    ).encode()


def _runs(values: list[float], gaps: list[bool]) -> list[Run]:
    runs, now = [], 1_000_000
    for n, (value, idle) in enumerate(zip(values, gaps, strict=True)):
        now += IDLE_US if idle else 1000
        runs.append(Run([], _message(n, value), received_us=now))
    return runs


def _dechunk(data: bytes) -> bytes:
    size_line, _, rest = data.partition(b"\r\n")
    size = int(size_line, 16)
    assert rest[size:] == b"\r\n"
    return rest[:size]


class _CursorLike(Rendering):
    """A stream's own `id:` line before each of its first `until` runs' bytes, as a stream
    writing a cursor of its own does until its cursor covers every partition."""

    per_stream = True

    def __init__(self, name: str, until: int) -> None:
        super().__init__(None, chunked=False)
        self._name, self._until, self._seen = name, until, 0

    def block(self, run: Run) -> bytes:
        self._seen += 1
        if self._seen <= self._until:
            return f"id: {self._name}\n".encode() + run.block
        return run.block


@dataclass
class _Stream:
    """One client: what it was sent (compressed) and what a plain stream would have sent."""

    rendering: CompressedRendering
    head: bytes
    chunked: bool
    wire: bytearray = field(default_factory=bytearray)
    plain: bytearray = field(default_factory=bytearray)

    def __post_init__(self) -> None:
        head = HeadCompressor()
        self.wire += head.compress(b"retry: 3000\n\n") + head.compress(self.head)
        self.plain += b"retry: 3000\n\n" + self.head

    def take(self, runs: list[Run]) -> None:
        # What a plain stream writes: each run's block, or, for a stream with ids of its own,
        # what its rendering rendered (`_Recorder`: a cursor's text depends on what went by).
        if not self.rendering.own_ids:
            for run in runs:
                self.plain += run.block
        if len(runs) == 1:
            data = self.rendering.wire(runs[0])
            self.wire += _dechunk(data) if self.chunked and data else data
        else:
            self.wire += b"".join(self.rendering.blocks(runs))

    def heartbeat(self) -> None:
        self.wire += self.rendering.own(HEARTBEAT)
        self.plain += HEARTBEAT

    def decoded(self) -> bytes:
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(bytes(self.wire))


class _Recorder(Rendering):
    """Passes `block` through to a rendering, adding what it returned to `written`: what a
    plain stream would have written."""

    def __init__(self, inner: Rendering, written: bytearray) -> None:
        super().__init__(None, chunked=inner.chunked)
        self.inner, self.written = inner, written

    per_stream = True

    def block(self, run: Run) -> bytes:
        plain = self.inner.block(run)
        self.written += plain
        return plain


_action = st.sampled_from(["take", "take", "take", "take", "skip", "heartbeat", "batch"])


@settings(max_examples=150, deadline=None)
@given(
    values=st.lists(st.floats(0, 1e6, allow_nan=False), min_size=1, max_size=120),
    data=st.data(),
)
def test_every_stream_decodes_what_a_plain_stream_gets(
    values: list[float], data: st.DataObject
) -> None:
    """Streams join the context at any run (between reset points too), skip runs (a
    conflated queue), write heartbeats of their own, take runs one at a time or several at
    once: each decodes, byte for byte, what the plain stream of the same runs carries."""
    gaps = data.draw(st.lists(st.booleans(), min_size=len(values), max_size=len(values)))
    runs = _runs(values, gaps)
    context = SharedDeflate("shape", idle_reset_us=IDLE_US)
    count = data.draw(st.integers(1, 4))
    # The streams of a context write ids of their own (a cursor), or all render alike.
    own_ids = data.draw(st.booleans())
    streams: list[tuple[int, _Stream]] = []
    for name in range(count):
        chunked = False if own_ids else data.draw(st.booleans())
        inner: Rendering = rendering_for(None, chunked=chunked)
        if own_ids:
            inner = _CursorLike(str(name), data.draw(st.integers(0, 40)))
        head = data.draw(st.binary(max_size=200)).replace(b"\n", b" ") + b"\n\n"
        plain = bytearray()
        recorded = _Recorder(inner, plain) if own_ids else inner
        stream = _Stream(CompressedRendering(recorded, context), head, chunked, plain=plain)
        streams.append((data.draw(st.integers(0, len(runs) - 1)), stream))
    pending: dict[int, list[Run]] = {i: [] for i in range(count)}
    for n, run in enumerate(runs):
        # Streams take the runs in an order of their own each time (the hub's writer, the
        # streams' turns): any of them may be the one that makes the segment.
        order = data.draw(st.permutations(range(count)))
        for i in order:
            joined_at, stream = streams[i]
            if n < joined_at:
                continue
            action = data.draw(_action)
            if action == "skip":
                continue  # conflated away: the stream never gets this run
            if action == "heartbeat":
                stream.heartbeat()
            if action == "batch":
                pending[i].append(run)
                continue
            stream.take([*pending[i], run])
            pending[i] = []
    for i, (_, stream) in enumerate(streams):
        if pending[i]:
            stream.take(pending[i])
        assert stream.decoded() == bytes(stream.plain)


def test_a_stream_that_takes_every_update_gets_the_shared_bytes() -> None:
    """The point of it all: from its first reset point on, a stream that takes every run gets
    the context's segments themselves (the same objects for every stream), and far fewer
    bytes than plain."""
    runs = _runs([i * 1.25 for i in range(3 * RESET_UPDATES)], [False] * (3 * RESET_UPDATES))
    context = SharedDeflate("shape", idle_reset_us=IDLE_US)
    inner = rendering_for(None, chunked=False)
    early = CompressedRendering(inner, context)
    late = CompressedRendering(inner, context)
    sent_early = [early.wire(run) for run in runs]
    sent_late = [late.wire(run) for run in runs[5:]]
    # The late one joined mid-context: stored blocks until the next reset point, then the
    # very bytes the early one got.
    joined_at = RESET_UPDATES - 5
    assert all(b is not a for a, b in zip(sent_early[5:RESET_UPDATES], sent_late, strict=False))
    assert all(
        b is a for a, b in zip(sent_early[RESET_UPDATES:], sent_late[joined_at:], strict=True)
    )
    assert sum(map(len, sent_early)) * 3 < sum(len(r.block) for r in runs)


def test_a_heartbeat_puts_a_stream_out_until_the_next_reset_point() -> None:
    runs = _runs([1.0, 2.0, 3.0, 4.0], [False, False, False, True])
    context = SharedDeflate("shape", idle_reset_us=IDLE_US)
    stream = CompressedRendering(rendering_for(None, chunked=False), context)
    stream.wire(runs[0])
    assert stream.joined
    stream.own(HEARTBEAT)
    assert not stream.joined
    stream.wire(runs[1])  # stored: not a reset point
    assert not stream.joined
    stream.wire(runs[2])
    assert not stream.joined
    stream.wire(runs[3])  # after an idle topic: a reset point, so it joins again at once
    assert stream.joined


def test_a_late_run_is_never_compressed_out_of_order() -> None:
    """A stream far behind (its queue held an old run) gets that run stored: compressing it
    now would put every joined stream out of the sequence."""
    runs = _runs([1.0, 2.0, 3.0], [False] * 3)
    context = SharedDeflate("shape", idle_reset_us=IDLE_US)
    ahead = CompressedRendering(rendering_for(None, chunked=False), context)
    ahead.wire(runs[0])
    ahead.wire(runs[2])  # run 1 was conflated away for this one
    behind = CompressedRendering(rendering_for(None, chunked=False), context)
    behind.wire(runs[1])
    assert context.next_seq == 2
    assert not behind.joined


def test_contexts_live_while_streams_use_them() -> None:
    contexts = SharedDeflates(idle_reset_us=IDLE_US)
    a = contexts.acquire("a")
    assert contexts.acquire("a") is a
    contexts.release(a)
    assert len(contexts) == 1
    contexts.release(a)
    assert len(contexts) == 0
    assert contexts.acquire("a") is not a


def test_negotiation() -> None:
    assert negotiate("gzip, deflate, br") == "gzip"
    assert negotiate("gzip, deflate") == "gzip"
    assert negotiate("deflate, gzip;q=0") is None
    assert negotiate("br;q=1, *;q=0.1") == "gzip"
    assert negotiate("*;q=0") is None
    assert negotiate("identity") is None
    assert negotiate("GZip;q=0.5") == "gzip"
    assert negotiate("gzip;q=x") is None
    assert negotiate(None) is None
    assert negotiate("") is None


def test_a_new_shape_is_admitted_while_there_is_room() -> None:
    contexts = SharedDeflates(idle_reset_us=IDLE_US, limit=1)
    assert contexts.admits("a") and contexts.admits("b")
    a = contexts.acquire("a")
    assert contexts.admits("a") and not contexts.admits("b")
    contexts.release(a)
    assert contexts.admits("b")
