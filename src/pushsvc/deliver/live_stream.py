"""A stream after its head: what owns the stream's writes, however its connection is written,
until one of its named exits.

Two writers send a stream's bytes, in turns, never at once: this object, and, while the
stream is idle on plain TCP, the hub's direct writer (`pushsvc.deliver.hub`), which sends a
run to every idle stream of a topic in one loop with no wake-up per stream. The turns are
handed over explicitly (`Subscriber.direct` opened by this object when it leaves nothing
pending, closed by the hub on a send that would block, whose rest comes back as `handback`).
The second writer is kept because it halves the CPU per delivery of an ordinary fan-out
(measured: docs/journal/fanout.md, "Step 1: the direct way"); everything else a stream writes
(hand-backs, queues, heartbeats, pacing, its end) is written here.

It is a few objects the event loop and the hub call back (as nchan's and Centrifugo's are),
not a greenlet: its hub subscriber (`pushsvc.deliver.hub`), its sink, an io watcher for its
client leaving (`pushsvc.deliver.peer_watch`) and one timer, for its next heartbeat, its
token's expiry or its next paced update. It owns, written once:

* **writes**, two ways:
  - *direct*: while nothing is pending, queued or held by a floor, the hub's writer sends it
    its runs (`Subscriber.direct`); only where the sink is the connection itself (plain TCP,
    `StreamSocket`) and the stream is not paced;
  - *a turn*: anything else — the rest of a send of the hub's that would have blocked
    (`handback`), runs queued while the direct way was closed, the stream ending — wakes the
    subscriber, which schedules one turn on the event loop (`set`, this stream's
    `Subscriber.wakeup`). A turn writes, in order, the hand-back, the hub's `ready` runs and
    the queue (or, paced, what its `Paced` admits now) as one chunk, with one send.
* **slow readers**: what the sink has not taken waits (`flush`) while the queue fills and
  conflates; it is counted in flight (`ConflatingQueue.hold`) against the stream's bound and
  the process's budget, and each bit taken is progress (`Subscriber.progressed`): the hub's
  sweeper ends as `slow` a stream that takes nothing for the slow-client timeout.
* **heartbeats**: due `heartbeat_s` after the stream's last write (the hub's included); the
  timer writes one when nothing else is on its way.
* **token expiry**: at `expires_at` (wall clock) the stream ends as `expired`; or, given a
  `renew` hook (a grant of the application's backend), it asks it and goes on until the
  hook's answer: a new expiry, or None to end as `expired`.
* **release**: every exit ends the same way. What waits is offered to the sink once, without
  waiting; the sink ends (`StreamSink.end`: a quiet exit — shutdown, reset, expired, slow —
  ends the response whole, `gone` as a failed write), and `on_end` (the subscription's end,
  the stream slot's release) is called, once.

The sink is the connection itself on plain TCP under pushsvc's server (`StreamSocket`, once
pywsgi has handed it over: no greenlet at all), or, where only the WSGI server can write it
(TLS, gunicorn, any other server), the response's greenlet (`pushsvc.deliver.server_writes`).
Time is injected (`pushsvc.deliver.stream_clock`): tests drive it.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable, Sequence
from typing import Protocol

import gevent

from pushsvc.core.sse import HEARTBEAT
from pushsvc.core.updates import Run
from pushsvc.deliver.histogram import Histogram
from pushsvc.deliver.hub import NOT_LIVE, DirectWay, StreamExit, Subscriber
from pushsvc.deliver.pacer import Paced
from pushsvc.deliver.peer_watch import PeerWatch
from pushsvc.deliver.rendering import Rendering
from pushsvc.deliver.stream_clock import LOOP_CLOCK, StreamClock, Timer
from pushsvc.deliver.stream_socket import StreamSocket, http_chunk

log = logging.getLogger(__name__)

_CHUNKED_HEARTBEAT = http_chunk(HEARTBEAT)
Renew = Callable[[Callable[[float | None], None]], None]
"""A renewal hook: asked at the expiry, it calls back once, from a greenlet of its own, with
the new expiry (epoch seconds) or None."""
_QUIET = (StreamExit.SHUTDOWN, StreamExit.GONE)
"""Exits not worth a log line (a reconnect storm or a shutdown ends thousands at once)."""


class StreamSink(Protocol):
    """Where a live stream's bytes go. Never blocks; greenlet-safe as the hub is."""

    @property
    def chunked(self) -> bool:
        """Whether the stream frames its bytes as HTTP/1.1 chunks itself."""

    def send(self, data: bytes | memoryview, /) -> int:
        """Send `data` (or as much as goes now); how many bytes are left. Raises OSError
        when the peer is gone."""

    def flush(self, progressed: Callable[[int], None], failed: Callable[[], None], /) -> None:
        """Send what `send` left, in the background: `progressed(left)` each time some goes
        (0: all out), `failed()` if the peer is gone."""

    def end(self, quiet: bool, /) -> None:
        """The stream is over: end the response (whole when `quiet`), close the connection."""


class LiveStream:
    """One stream after its head (see the module docstring). It keeps itself alive through
    its subscriber, its watchers and the callbacks it schedules; `close` ends it at once."""

    __slots__ = (
        "_aside",
        "_client",
        "_clock",
        "_context",
        "_direct_way",
        "_expires_at",
        "_heartbeat_us",
        "_last_write_us",
        "_latency",
        "_on_end",
        "_paced",
        "_rendering",
        "_renew",
        "_scheduled",
        "_sink",
        "_timer",
        "_watch",
        "_writing",
    )

    def __init__(
        self,
        client: Subscriber,
        sink: StreamSink,
        rendering: Rendering,
        *,
        heartbeat_s: float,
        expires_at: float | None,
        latency: Histogram,
        on_end: Callable[[], None],
        paced: Paced | None = None,
        watch: PeerWatch | None = None,
        clock: StreamClock = LOOP_CLOCK,
        renew: Renew | None = None,
    ) -> None:
        self._client = client
        self._sink = sink
        self._rendering = rendering
        self._paced = paced
        self._heartbeat_us = int(heartbeat_s * 1_000_000)
        self._expires_at = expires_at
        self._renew = renew
        self._latency = latency
        self._on_end: Callable[[], None] | None = on_end
        self._watch = watch  # it closes the subscriber as gone; stopped at the end
        self._clock = clock
        # The request's context (its request id, for the log lines of its end): the loop's
        # callbacks run in the hub's.
        self._context = contextvars.copy_context()
        self._writing = False
        """A send waits for the sink (`flush`): a turn writes nothing else meanwhile."""
        self._aside = b""
        """A message outside the updates' sequence, for the next turn (`send_aside`)."""
        self._timer: Timer | None = None
        self._scheduled = False
        self._last_write_us = clock.monotonic_us()
        # The hub may write the stream only where the sink is the connection itself, and
        # never a paced one (it would write every update).
        self._direct_way = (
            DirectWay(sink, rendering) if paced is None and isinstance(sink, StreamSocket) else None
        )
        client.direct_way = self._direct_way
        client.wakeup = self  # the hub and the peer watch wake it: a turn, not a greenlet
        self._arm_timer()
        self.set()  # the first turn: what was queued since the subscription, else go direct

    # The subscriber's wake-up (`Subscriber.wakeup`): `set` schedules a turn.
    def set(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            gevent.get_hub().loop.run_callback(self._turn)

    def send_aside(self, message: bytes) -> None:
        """Write `message`, whole SSE messages outside the updates' sequence (no `id:`: the
        client's Last-Event-ID stays), at the stream's next turn, before what waits. One not
        written yet is replaced: the newest wins (presence events,
        `pushsvc.deliver.presence_events`)."""
        self._aside = message
        self._client.wake()

    def close(self) -> None:
        """End the stream now, if it has not ended: as `gone` when nothing closed it (its
        WSGI server stopped writing it: the client left, or its write failed)."""
        self._client.close(StreamExit.GONE)
        self._end()

    def _turn(self) -> None:
        self._scheduled = False
        client = self._client
        try:
            if client.closed_reason is not None:
                self._end()
            elif not self._writing:  # else the sink is full: its flush goes on
                self._write_what_waits()
        except Exception:
            self._context.run(log.exception, "a stream's turn failed")
            client.close(StreamExit.ERROR)
            self._end()

    def _what_waits(self) -> tuple[bytes, list[Run]]:
        """The bytes to send next, in order: the hub's hand-back, then its ready runs and the
        queue (paced: what the pacer admits now), rendered; and the runs in them."""
        client = self._client
        client.direct = None
        handback: memoryview | None = None
        runs: list[Run] = []
        if self._direct_way is not None:
            handback, runs = self._direct_way.leftovers()
        queued = client.queue.drain()
        if queued:
            runs = runs + queued if runs else queued
        client.last_take_us = client.clock()
        aside = b""
        if self._aside:
            # Before the runs are rendered: the stream's own bytes take a compressed stream
            # out of its shared sequence (`Rendering.own`), and the runs after them with it.
            aside = self._rendering.own(self._aside)
            self._aside = b""
        blocks: Sequence[bytes] = ()
        if self._paced is not None:
            blocks = self._paced.blocks(runs, self._clock.monotonic_us() / 1_000_000)
        elif runs:
            blocks = self._rendering.blocks(runs)
        data = b"".join(blocks)
        if data and self._paced is not None:
            data = self._rendering.own(data)  # the pacer's messages are the stream's own
        if aside:
            data = aside + data
        if data and self._sink.chunked:
            data = http_chunk(data)
        if handback is not None:
            data = bytes(handback) + data
        return data, runs

    def _write_what_waits(self) -> None:
        """One send of what waits; then the direct way again when nothing is left."""
        data, runs = self._what_waits()
        sent = True
        if data:
            queue = self._client.queue
            if not queue.may_hold(len(data)):
                # Rendered, it would pass the process's budget: the stream ends, its client
                # resumes from the history (mid-chunk if the hub had sent part of it).
                if self._direct_way is not None and queue.in_flight:
                    self._direct_way.cut = True
                queue.hold(0)
                self._client.close(StreamExit.BEHIND)
                self._end()
                return
            queue.hold(len(data))
            sent = self._send(data, runs)
        if self._paced is not None and self._paced.next_due() is not None:
            self._arm_timer()  # what the pacer held back may fall due before the heartbeat
        if sent:
            self._go_direct()

    def _send(self, data: bytes, runs: list[Run]) -> bool:
        """Send `data`; False when the rest waits for the sink (or the peer is gone and the
        stream ends)."""
        client = self._client
        try:
            left = self._sink.send(data)
        except OSError:
            client.close(StreamExit.GONE)
            return False
        self._last_write_us = now = self._clock.monotonic_us()
        if runs and (oldest_us := runs[0].received_us):
            self._latency.observe(now - oldest_us)
        if not left:
            client.queue.hold(0)
            return True
        if left < len(data):
            client.progressed()
        client.queue.hold(left)
        self._writing = True
        self._sink.flush(self._flushed, self._failed)
        return False

    def _flushed(self, left: int) -> None:
        client = self._client
        client.progressed()  # the sink took some: not stuck
        client.queue.hold(left)
        if left:
            return
        self._writing = False
        self._last_write_us = self._clock.monotonic_us()
        queue = client.queue
        if (
            self._direct_way is None
            and self._paced is None
            and not queue.runs
            and not queue.latest
            and not self._aside
            and client.closed_reason is None
        ):
            return  # nothing came meanwhile: the next wake-up is the next turn
        self._turn()  # what queued meanwhile, as a stream takes again once its write is done

    def _failed(self) -> None:
        self._writing = False
        self._client.queue.hold(0)
        self._client.close(StreamExit.GONE)

    def _go_direct(self) -> None:
        """Let the hub write the stream while nothing waits: nothing queued, no floor (what
        is queued may be below it), nothing handed back or ready."""
        client = self._client
        direct_way = self._direct_way
        queue = client.queue
        if (
            direct_way is not None
            and client.closed_reason is None
            and not queue.runs
            and not queue.latest
            and queue.floor is None
            and not direct_way.ready
            and direct_way.handback is None
        ):
            client.direct = direct_way

    def _last_write(self) -> int:
        """When the stream was last written, by itself or by the hub."""
        if self._direct_way is None:
            return self._last_write_us
        return max(self._last_write_us, self._direct_way.last_write_us)

    def _arm_timer(self) -> None:
        """The next heartbeat, or the token's expiry, or the next paced update, if sooner; a
        token expired already ends the stream."""
        clock = self._clock
        now_us = clock.monotonic_us()
        wait_us = self._heartbeat_us - (now_us - self._last_write())
        if wait_us <= 0:  # due, but something else is being written: the next one
            wait_us = self._heartbeat_us
        wait_s = wait_us / 1_000_000
        if self._expires_at is not None:
            left = self._expires_at - clock.wall()
            if left <= 0 and self._expired():
                return
            if self._expires_at is not None:
                wait_s = min(wait_s, left)
        paced = self._paced
        # Not while a turn is coming or a write waits: that turn, or the one after the
        # write, arms the timer again with what the pacer holds then.
        if paced is not None and not self._scheduled and not self._writing:
            due = paced.next_due()
            if due is not None:
                wait_s = min(wait_s, max(due - now_us / 1_000_000, 0.0))
        if self._timer is not None:
            self._timer.close()
        self._timer = clock.call_later(wait_s, self._on_timer)

    def _on_timer(self) -> None:
        client = self._client
        if client.closed_reason is not None:
            return
        clock = self._clock
        paced = self._paced
        if self._expires_at is not None and clock.wall() >= self._expires_at and self._expired():
            return
        now_us = clock.monotonic_us()
        if paced is not None and (due := paced.next_due()) is not None and due * 1e6 <= now_us:
            self.set()  # a turn writes what the pacer lets go now
        direct_way = self._direct_way
        idle = (
            not self._writing
            and not self._scheduled
            and (direct_way is None or (direct_way.handback is None and not direct_way.ready))
        )
        if idle and now_us - self._last_write() >= self._heartbeat_us:
            # Between two chunks for sure: nothing of the hub's or a turn's is half sent.
            heartbeat = self._rendering.own(HEARTBEAT)
            if heartbeat is HEARTBEAT and self._sink.chunked:
                heartbeat = _CHUNKED_HEARTBEAT
            elif self._sink.chunked:
                heartbeat = http_chunk(heartbeat)  # encoded for this stream (compression)
            self._send(heartbeat, [])
        self._arm_timer()

    def _expired(self) -> bool:
        """The grant ran out: end the stream (True), or ask the renewal hook and go on,
        without an expiry, until it answers (`_renewed`)."""
        if self._renew is None:
            self._client.close(StreamExit.EXPIRED)
            return True
        self._expires_at = None
        self._renew(self._renewed)
        return False

    def _renewed(self, expires_at: float | None) -> None:
        if self._client.closed_reason is not None or self._on_end is None:
            return
        if expires_at is None or expires_at <= self._clock.wall():
            self._client.close(StreamExit.EXPIRED)
            return
        self._expires_at = expires_at
        self._arm_timer()

    def _end(self) -> None:
        on_end, self._on_end = self._on_end, None
        if on_end is None:
            return
        client = self._client
        reason = client.closed_reason
        if self._timer is not None:
            self._timer.close()
            self._timer = None
        if self._watch is not None:
            self._watch.stop()  # before the socket is closed and its descriptor reused
            self._watch = None
        if not self._writing:
            # What was on its way when the stream was closed: offered once, never waited for.
            data, _ = self._what_waits()
            if data:
                try:
                    self._sink.send(data)
                except OSError:
                    reason = StreamExit.GONE
        client.direct = None
        cut = self._direct_way is not None and self._direct_way.cut
        self._sink.end(reason != StreamExit.GONE and not cut)
        if reason not in _QUIET:
            self._context.run(log.info, "stream ended: %s", reason)
        # The subscriber wakes this stream (`set`) and the stream holds the subscriber: let
        # go of it, so that an ended stream is freed at once, not by the collector's next
        # full pass (thousands end together in a reconnect storm).
        client.wakeup = NOT_LIVE
        on_end()
