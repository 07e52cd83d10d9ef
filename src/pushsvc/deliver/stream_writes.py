"""How a stream's runs reach its client: one write strategy per way a stream is written, each
three steps that the one stream loop (`pushsvc.deliver.stream_loop`) calls in turn.

* `take(wait_s)` — the runs to write, oldest first, waiting at most `wait_s` for some ([] when
  none came: heartbeat time, or the stream was woken to end);
* `render(runs)` — the blocks to write for them (`pushsvc.deliver.rendering`); empty when there
  is nothing to write (nothing came, or a group filter left nothing of it);
* `write(blocks)` — write them: what it returns is yielded to the WSGI server (nothing where
  the stream writes its socket itself).

The strategies:

* `OwnSocket` — pushsvc's own pywsgi on plain TCP: the stream writes its socket itself
  (`pushsvc.deliver.stream_socket`) and lets the hub write it while it sleeps (the direct way,
  `pushsvc.deliver.hub`);
* `YieldToServer` — gunicorn, TLS, any other server: blocks are yielded to it;
* `Paced` — `?max_hz=`: the pacer picks the updates (`pushsvc.deliver.pacer`), yielded to the
  WSGI server.

A step of the queued ways runs once per update a stream is woken for, so `YieldToServer`'s
steps are the subscriber's, the rendering's and `coalesce` themselves, with nothing around them.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Final, Protocol

from pushsvc.core.cursor import Cursor
from pushsvc.core.sse import coalesce
from pushsvc.core.updates import Run, UpdateId
from pushsvc.deliver.hub import DirectWay, Subscriber
from pushsvc.deliver.pacer import Pacer
from pushsvc.deliver.projection import Projection
from pushsvc.deliver.rendering import rendering_for_stream
from pushsvc.deliver.stream_socket import StreamSocket


class WriteStrategy(Protocol):
    """One way a stream is written (the module docstring): the loop decides when, this how."""

    def take(self, wait_s: float, /) -> list[Run]: ...

    def render(self, runs: list[Run], /) -> Sequence[bytes]: ...

    def write(self, blocks: Sequence[bytes], /) -> Iterable[bytes]: ...


class YieldToServer:
    """Under gunicorn, on TLS, or wherever the socket cannot be had: every run comes through
    the stream's queue and is yielded to the WSGI server as its block, consecutive small
    ones joined (`coalesce`)."""

    __slots__ = ("render", "take")

    write = staticmethod(coalesce)

    def __init__(
        self, client: Subscriber, projection: Projection | None, *, cursor: Cursor | None = None
    ) -> None:
        self.take: Callable[[float], list[Run]] = client.take
        self.render: Callable[[list[Run]], Sequence[bytes]] = rendering_for_stream(
            projection, chunked=False, cursor=cursor
        ).blocks


_REST_ONLY: Final[Sequence[bytes]] = (b"",)
"""What `OwnSocket.render` gives when the hub handed back the rest of a send and nothing else
is to be written: not empty, so the loop writes (the rest) and counts it as a write; `write`
knows it by identity and sends no chunk for it (an empty chunk would end the response)."""


class OwnSocket:
    """Under pushsvc's own pywsgi on plain TCP, once the response head is out: the stream
    writes its socket itself, and lets the hub write it while it sleeps (the direct way,
    `pushsvc.deliver.hub`; opening it sets `Subscriber.direct_way`).

    Each wake-up writes, in order, what the hub handed back, then the runs the hub had meant
    to write, then those queued meanwhile — the runs as one chunk of the blocks rendered once
    for every stream alike. Nothing is yielded; a failed write raises ConnectionResetError.
    While the socket is full, the write's rest is counted in flight (`ConflatingQueue.hold`)
    and each bit the socket takes is progress (`Subscriber.progressed`): the hub's sweeper
    ends the stream when the socket takes nothing for the slow-client timeout.
    """

    __slots__ = ("_client", "_direct_way", "_handback", "_rendering", "_sink", "_take")

    def __init__(
        self,
        client: Subscriber,
        sink: StreamSocket,
        projection: Projection | None,
        *,
        cursor: Cursor | None = None,
    ) -> None:
        self._sink = sink
        self._client = client
        self._take = client.take
        self._rendering = rendering_for_stream(projection, chunked=sink.chunked, cursor=cursor)
        self._direct_way = client.direct_way = DirectWay(sink, self._rendering)
        self._handback: memoryview | None = None

    def take(self, wait_s: float) -> list[Run]:
        runs = self._take(wait_s)
        handback, ready = self._direct_way.leftovers()
        self._handback = handback
        if ready:  # runs the hub had meant to write: older than what take returned
            runs = ready + runs
        return runs

    def render(self, runs: list[Run]) -> Sequence[bytes]:
        blocks = self._rendering.blocks(runs)
        if not blocks and self._handback is not None:
            return _REST_ONLY
        return blocks

    def write(self, blocks: Sequence[bytes]) -> tuple[()]:
        handback, self._handback = self._handback, None
        sink = self._sink
        try:
            if handback is not None:
                self._send_rest(handback)
            if blocks is not _REST_ONLY:
                rest = sink.try_send(blocks)
                if rest is not None:
                    self._send_rest(rest)
        except OSError as exc:
            # The peer is gone: end the response the way pywsgi ends one whose write failed.
            raise ConnectionResetError(errno.ECONNRESET, f"stream closed: {exc}") from None
        return ()

    def _send_rest(self, rest: memoryview | None) -> None:
        sink, client = self._sink, self._client
        queue = client.queue
        while rest is not None:
            queue.hold(len(rest))
            sink.wait_writable()
            left = len(rest)
            rest = sink.try_send_bytes(rest)
            if rest is None or len(rest) < left:
                client.progressed()
        queue.hold(0)


class Paced:
    """`?max_hz=`: at most one update per topic per interval, always its latest (`Pacer`),
    decided update by update, so the stream keeps the queued way and yields to the WSGI
    server. An update held back behind newer ones of its partition goes without `id:`, so
    the client's Last-Event-ID never moves backwards. `monotonic` is the loop's clock;
    `cursor`: where a stream that writes its cursor as `id:` is (None: own ids)."""

    __slots__ = ("_admit", "_held", "_message", "_monotonic", "_pacer", "_sent", "_take")

    write = staticmethod(coalesce)

    def __init__(
        self,
        client: Subscriber,
        projection: Projection | None,
        interval_s: float,
        monotonic: Callable[[], float] = time.monotonic,
        *,
        cursor: Cursor | None = None,
    ) -> None:
        self._take = client.take
        self._pacer = Pacer(interval_s)
        self._admit = self._pacer.admit
        self._held = self._pacer.held
        self._message = rendering_for_stream(projection, chunked=False, cursor=cursor).message
        self._monotonic = monotonic
        self._sent: dict[int, UpdateId] = {}
        """The newest update sent with its id, per partition."""

    def take(self, wait_s: float) -> list[Run]:
        if self._held:  # a held-back update falls due before the heartbeat, maybe
            wait_s = max(min(wait_s, self._pacer.next_due() - self._monotonic()), 0.0)
        return self._take(wait_s)

    def render(self, runs: list[Run]) -> Sequence[bytes]:
        message = self._message
        sent = self._sent
        messages = []
        # One run, the common case, is admitted as it is (`admit` only reads the list).
        taken = runs[0].updates if len(runs) == 1 else [u for run in runs for u in run.updates]
        for update in self._admit(taken, self._monotonic()):
            update_id = update.id
            last = sent.get(update_id.partition)
            fresh = last is None or update_id.is_after(last)
            data = message(update, fresh)  # with its id when fresh
            if data:  # empty: a group filter left nothing of it
                messages.append(data)
                if fresh:
                    sent[update_id.partition] = update_id
        return [b"".join(messages)] if messages else []
