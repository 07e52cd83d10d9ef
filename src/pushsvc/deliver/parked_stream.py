"""A stream with no greenlet: once its head is out, pushsvc's server hands its connection over
and the stream lives on as a few objects the event loop calls back (as nchan's and
Centrifugo's do), not as a greenlet parked in the WSGI server's call stack.

An idle stream is then its hub subscriber (`pushsvc.deliver.hub`), its socket, an io watcher
for its client leaving (`pushsvc.deliver.peer_watch`) and one timer for its next heartbeat or
its token's expiry: what a greenlet saved of its C stack, its frames, the WSGI server's
handler and Werkzeug's response are gone (docs/journal/stream-memory.md).

It is written the two ways of the hub, as `OwnSocket` writes a stream from its greenlet:
* **direct**: while nothing is pending, queued or held by a floor, the hub's writer sends it
  its runs (`Subscriber.direct`);
* **a turn**: anything else — the rest of a send that would have blocked (`handback`), runs
  queued while the direct way was closed, the stream ending — wakes the subscriber, which
  schedules one turn on the event loop (`set`, the `Subscriber.wakeup` of this stream). A
  turn writes, in order, the hand-back, the hub's `ready` runs and the queue as one chunk, with
  one non-blocking send. What does not go out waits for the socket to turn writable (an io
  watcher), and the queue meanwhile fills and conflates, and a stream that takes nothing
  for the slow-client timeout is evicted, as for a stream whose greenlet waits in `sendall`.
  What waits is counted in flight (`ConflatingQueue.hold`): its bytes are part of the
  stream's bound and of the process's budget, and the hub's sweeper ends a stream whose
  socket takes none of them for the timeout.

Heartbeats: a timer due `heartbeat_s` after the stream's last write (the hub's included);
when it fires with nothing to wait for, the stream writes a heartbeat. The same timer ends
the stream at its token's expiry.

Every exit ends as the stream loop's: a quiet exit (shutdown, reset, expired, slow) writes
the response's last chunk when it can; `gone` writes nothing; then the socket is closed and
`on_end` (the subscription's end and the stream slot's release) is called, once.
"""

from __future__ import annotations

import _socket
import contextlib
import contextvars
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import gevent

from pushsvc.core.sse import HEARTBEAT
from pushsvc.core.updates import Run
from pushsvc.deliver.histogram import Histogram
from pushsvc.deliver.hub import DirectWay, StreamExit, Subscriber
from pushsvc.deliver.peer_watch import PeerWatch
from pushsvc.deliver.rendering import Rendering
from pushsvc.deliver.stream_socket import StreamSocket, http_chunk
from pushsvc.gevent_private import loop_watcher

log = logging.getLogger(__name__)

_WRITE = 2  # libev's EV_WRITE
_LAST_CHUNK = b"0\r\n\r\n"
_CHUNKED_HEARTBEAT = http_chunk(HEARTBEAT)
_QUIET = (StreamExit.SHUTDOWN, StreamExit.GONE)
"""Exits not worth a log line (a reconnect storm or a shutdown ends thousands at once)."""


class _Ended:
    """The wake-up of a subscriber whose parked stream has ended: nothing is left to wake."""

    def set(self) -> None:
        pass

    def clear(self) -> None:
        pass

    def wait(self, timeout: float) -> bool:
        return True


_ENDED = _Ended()


class ParkedStream:
    """One stream after its head, written by the hub and by event-loop callbacks (see the
    module docstring). Created by the stream once the server has handed its connection over
    (`pushsvc.deliver.stream_loop.events`); it keeps itself alive through the subscriber, its
    watchers and the callbacks it schedules."""

    __slots__ = (
        "_client",
        "_context",
        "_direct_way",
        "_expires_at",
        "_heartbeat_s",
        "_last_write",
        "_latency",
        "_on_end",
        "_pending",
        "_rendering",
        "_scheduled",
        "_sink",
        "_sock",
        "_timer",
        "_watch",
        "_writable",
    )

    def __init__(
        self,
        client: Subscriber,
        sock: _socket.socket,
        sink: StreamSocket,
        rendering: Rendering,
        *,
        heartbeat_s: float,
        expires_at: float | None,
        latency: Histogram,
        on_end: Callable[[], None],
    ) -> None:
        self._client = client
        self._sock = sock
        self._sink = sink
        self._rendering = rendering
        self._heartbeat_s = heartbeat_s
        self._expires_at = expires_at
        self._latency = latency
        self._on_end: Callable[[], None] | None = on_end
        # The request's context (its request id, for the log lines of its end): the loop's
        # callbacks run in the hub's.
        self._context = contextvars.copy_context()
        self._pending: memoryview | None = None
        """Bytes of a write that waits for the socket (a turn writes nothing else first)."""
        self._writable: Any = None
        self._timer: Any = None
        self._scheduled = False
        self._last_write = time.monotonic()
        self._direct_way = client.direct_way = DirectWay(sink, rendering)
        client.wakeup = self  # the hub and the peer watch wake it: a turn, not a greenlet
        self._watch: PeerWatch | None = PeerWatch(sock, self._gone)
        self._arm_timer()
        self.set()  # the first turn: what was queued since the subscription, else go direct

    # The subscriber's wake-up (`Subscriber.wakeup`): `set` schedules a turn.
    def set(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            gevent.get_hub().loop.run_callback(self._turn)

    def clear(self) -> None:
        """Nothing to clear: a turn takes what is there when it runs."""

    def wait(self, timeout: float) -> bool:
        raise AssertionError("a parked stream never waits in Subscriber.take")

    def _gone(self) -> None:
        self._client.close(StreamExit.GONE)

    def _turn(self) -> None:
        self._scheduled = False
        client = self._client
        try:
            if client.closed_reason is not None:
                self._end()
            elif self._pending is None:  # else the socket is full: its watcher goes on
                self._write_what_waits()
        except Exception:
            self._context.run(log.exception, "a stream's turn failed")
            client.close(StreamExit.ERROR)
            self._end()

    def _write_what_waits(self) -> None:
        """The queued way: the hand-back, the hub's ready runs and the queue, in that order,
        in one send; then the direct way again when nothing is left."""
        client = self._client
        client.direct = None
        handback, runs = self._direct_way.leftovers()
        queued = client.queue.drain()
        if queued:
            runs = runs + queued if runs else queued
        client.last_take_us = client.clock()
        blocks: Sequence[bytes] = self._rendering.blocks(runs) if runs else ()
        if handback is not None or blocks:
            data = b"".join(blocks)
            if data and self._sink.chunked:
                data = http_chunk(data)
            if handback is not None:
                data = bytes(handback) + data
            client.queue.hold(len(data))
            if not self._send(data, runs):
                return
        self._go_direct()

    def _send(self, data: bytes | memoryview, runs: list[Run]) -> bool:
        """Send `data` without blocking; False when the rest waits for the socket (or the
        peer is gone and the stream ends)."""
        try:
            rest = self._sink.try_send_bytes(data)
        except OSError:
            self._client.close(StreamExit.GONE)
            self.set()
            return False
        self._wrote()
        if runs and (oldest_us := runs[0].received_us):
            self._latency.observe(time.monotonic_ns() // 1000 - oldest_us)
        if rest is None:
            self._client.queue.hold(0)
            return True
        if len(rest) < len(data):
            self._client.progressed()
        self._client.queue.hold(len(rest))
        self._pending = rest
        if self._writable is None:
            self._writable = loop_watcher("io", self._sock.fileno(), _WRITE)
        self._writable.start(self._on_writable)
        return False

    def _on_writable(self) -> None:
        pending = self._pending
        assert pending is not None
        try:
            rest = self._sink.try_send_bytes(pending)
        except OSError:
            rest = None
            self._client.close(StreamExit.GONE)
        self._pending = rest
        if rest is None or len(rest) < len(pending):
            self._client.progressed()  # the socket took some: not stuck
        self._client.queue.hold(0 if rest is None else len(rest))
        if rest is not None:
            return
        self._writable.stop()
        self._wrote()
        self._turn()  # as a stream's loop takes again once its write is done

    def _go_direct(self) -> None:
        """Let the hub write the stream while nothing waits (`Subscriber.take`'s test)."""
        client = self._client
        queue = client.queue
        if (
            client.closed_reason is None
            and not queue.runs
            and not queue.latest
            and queue.floor is None
            and not self._direct_way.ready
            and self._direct_way.handback is None
        ):
            client.direct = self._direct_way

    def _wrote(self) -> None:
        self._last_write = time.monotonic()

    def _arm_timer(self) -> None:
        """The next heartbeat, or the token's expiry if sooner."""
        last = max(self._last_write, self._direct_way.last_write_us / 1_000_000)
        wait = self._heartbeat_s - (time.monotonic() - last)
        if wait <= 0:  # due, but something else is being written: the next one
            wait = self._heartbeat_s
        if self._expires_at is not None:
            wait = min(wait, self._expires_at - time.time())
        if self._timer is not None:
            self._timer.close()
        self._timer = loop_watcher("timer", max(wait, 0.0))
        self._timer.start(self._on_timer)

    def _on_timer(self) -> None:
        client = self._client
        if client.closed_reason is not None:
            return
        if self._expires_at is not None and time.time() >= self._expires_at:
            client.close(StreamExit.EXPIRED)
            return
        direct_way = self._direct_way
        last = max(self._last_write, direct_way.last_write_us / 1_000_000)
        idle = (
            self._pending is None
            and not self._scheduled
            and direct_way.handback is None
            and not direct_way.ready
        )
        if idle and time.monotonic() - last >= self._heartbeat_s:
            # Between two chunks for sure: nothing of the hub's or a turn's is half sent.
            heartbeat = _CHUNKED_HEARTBEAT if self._sink.chunked else HEARTBEAT
            self._send(heartbeat, [])
        self._arm_timer()

    def _end(self) -> None:
        on_end, self._on_end = self._on_end, None
        if on_end is None:
            return
        client = self._client
        client.direct = None
        reason = client.closed_reason
        for watcher in (self._timer, self._writable):
            if watcher is not None:
                watcher.stop()
                watcher.close()
        self._timer = self._writable = None
        if self._watch is not None:
            self._watch.stop()  # before the socket is closed and its descriptor reused
            self._watch = None
        if reason != StreamExit.GONE and self._pending is None and self._sink.chunked:
            with contextlib.suppress(OSError):
                self._sink.try_send_bytes(_LAST_CHUNK)
        if reason not in _QUIET:
            self._context.run(log.info, "stream ended: %s", reason)
        self._sock.close()
        # The subscriber wakes this stream (`set`) and the stream holds the subscriber: let
        # go of it, so that an ended stream is freed at once, not by the collector's next
        # full pass (thousands end together in a reconnect storm).
        client.wakeup = _ENDED
        on_end()
