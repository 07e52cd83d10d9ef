"""The hub: this process's subscribers, fed by its one broker subscription.

Consecutive updates of one topic (a batch POST) form a `Run`: its frames are encoded once,
joined into one block, and the same `Run` object goes to every matching client, so a client
writes a whole batch with one socket write.

Two ways to a client's socket, one part of its `Subscriber` each:
* **direct** (`Subscriber.direct_way`, a `DirectWay`) — a client whose stream is idle (nothing
  queued, no floor, nothing being written) and whose socket the hub may write has its direct way
  open (`Subscriber.direct`): `dispatch` appends the run to its `ready` list (no rendering, no
  wake-up) and lists the client as dirty once. The hub's one writer greenlet then sends each
  dirty client everything it holds with one non-blocking send (a single run goes out as bytes
  made once for every stream that renders alike: `pushsvc.deliver.rendering`; a stream over
  several partitions gets its own `id:` lines, its cursor, before the shared messages). The writer
  yields every few dozen clients, so while it works through many clients more updates arrive
  and the later ones get several runs in one send: coalescing without a queue. When a send
  would block, the rest is handed back to the client's stream (`handback`, a wake-up), which
  waits for the socket — the queued way below from then on.
* **queued** (`Subscriber.queue`, a `ConflatingQueue`) — every other client (busy writing,
  paced, TLS, gunicorn): the run goes to its bounded queue and its stream is woken (one turn
  of its `pushsvc.deliver.live_stream.LiveStream`).
  Delivering never blocks: a client whose queue already holds `queue_size` runs, or whose
  pending bytes would pass `max_stream_buffer` (`pushsvc.deliver.conflating_queue`), is
  switched to conflation (latest update per topic wins); one that has taken nothing for
  `slow_timeout_us` while conflated is closed.

Pending bytes: every stream's queue counts what it holds for its client (queued runs, and
what its writer rendered and its socket has not taken: a hand-back, a write's rest, a page of
its replay or snapshot) into the hub's `PendingBytes`, the process's total that a budget
bounds (32 times `--max-stream-buffer`). The sweeper (`sweep`, a greenlet, a few times per
slow-client timeout, walking nothing while nothing is pending) closes as `slow` every stream
that holds pending bytes its socket has taken nothing of for the timeout: a stream stuck in a
write, its head's or the hub's hand-back, is ended even when no update comes to notice it.

Per delivery on the direct way the hub does an attribute test and a list append at dispatch,
and one `send` per client per writer pass: the per-client work is kept out of everything else
(counters, the clock and the latency histogram are updated once per dispatch or per slice of
the writer).
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

import gevent
import gevent.event

from pushsvc.core.heap_trim import trim
from pushsvc.core.topics import TopicMatcher
from pushsvc.core.updates import Run, Update
from pushsvc.deliver.conflating_queue import ConflatingQueue, PendingBytes
from pushsvc.deliver.histogram import Histogram
from pushsvc.deliver.rendering import Rendering, run_of
from pushsvc.deliver.stream_socket import SEND_FLAGS, StreamSocket

log = logging.getLogger(__name__)

QUEUE_RUNS = 1000
"""Runs (one topic's batch each) a stream's queue holds before it is conflated. Fixed, not a
setting: memory is bounded in bytes (`--max-stream-buffer`, which conflates first whenever
runs are larger than 8 KiB), and a count only keeps a reader of many tiny runs from queueing
without end; a reader that far behind is served as well by the latest of each topic."""

TRIM_AFTER = 16 << 20
"""Pending bytes that streams held when they ended which make the sweeper give the C heap's
free pages back (`pushsvc.core.heap_trim`): streams that never read leave their rendered
writes' pages behind otherwise."""

Clock = Callable[[], int]
"""Monotonic time in integer microseconds."""


class StreamExit(StrEnum):
    """Why a stream ended (`Subscriber.closed_reason`), the `reason` label of
    `pushsvc_stream_disconnects_total`: the values are part of the metrics' contract."""

    GONE = "gone"
    """The client left, or a write to it failed."""
    SLOW = "slow"
    """Conflated, or holding pending bytes, and its socket took nothing for
    the slow-client timeout (`--body-timeout`)."""
    EXPIRED = "expired"
    """Its token's `exp` passed."""
    RESET = "reset"
    """The broker's updates feed was reset: the client resumes from the history."""
    SHUTDOWN = "shutdown"
    """The server is stopping."""
    ERROR = "error"
    """The stream's own code failed."""
    BEHIND = "behind"
    """A messages stream whose pending bytes passed its bound, or any stream whose rendered
    bytes would pass the process's budget: ended, never conflated, so that its client resumes
    from the history with `Last-Event-ID` (exactly, or with a gap)."""


def monotonic_us() -> int:
    return time.monotonic_ns() // 1000


@dataclass(eq=False, slots=True)
class DirectWay:
    """What the hub needs to write a stream's socket itself (the direct way): the socket, how
    the stream renders runs, and what the hub's writer holds for it or could not finish.

    Only the hub and the stream it belongs to touch it, in turns: the hub while the stream
    is idle (`Subscriber.direct` is this object then), the stream once woken (`leftovers`)."""

    sink: StreamSocket
    rendering: Rendering
    """How the stream's runs become bytes (`pushsvc.deliver.rendering`)."""
    ready: list[Run] = field(default_factory=list)
    """Runs the hub's writer is to send; older than anything in the stream's queue."""
    handback: memoryview | None = None
    """The unsent rest of a send that would have blocked: the stream sends it first."""
    last_write_us: int = 0
    """When the hub last wrote the stream (heartbeats count from it too)."""
    cut: bool = False
    """The rest of a send was dropped (it would have passed the process's budget): the
    response ends mid-chunk, never with a last chunk that would make it look whole."""

    def leftovers(self) -> tuple[memoryview | None, list[Run]]:
        """What the hub had meant to write and the stream must now write, in order: the rest
        of a send, then runs older than anything in the stream's queue."""
        handback, self.handback = self.handback, None
        ready, self.ready = self.ready, []
        return handback, ready


class Wakeup(Protocol):
    """How a subscriber's stream is woken: its live stream (`pushsvc.deliver.live_stream`)
    schedules its turn."""

    def set(self) -> None: ...


class _NotLive:
    """The wake-up of a subscriber with no live stream: its head is still being written (what
    comes meanwhile waits in its queue for the live stream's first turn), or it ended."""

    __slots__ = ()

    def set(self) -> None:
        pass


NOT_LIVE: Wakeup = _NotLive()


@dataclass(eq=False, slots=True)
class Subscriber:
    """One stream, as the hub sees it. Only the hub gives it runs; only the stream takes them.

    Two parts carry what is on its way to the client:
    * `queue`, the queued way: a `ConflatingQueue` (bounded, latest-wins per topic once full,
      and the floor: the stream's cursor after its replay or snapshot);
    * `direct_way`, when the hub may write the stream's socket: a `DirectWay`.

    The rest is the stream's life: its topics, its wake-up, the greenlet writing it, and why
    it ended.
    """

    matcher: TopicMatcher
    queue: ConflatingQueue
    clock: Clock = field(default=monotonic_us, repr=False)
    direct_way: DirectWay | None = field(default=None, repr=False)
    """Set by the stream once its head is out, where the hub may write its socket."""
    direct: DirectWay | None = field(default=None, repr=False)
    """`direct_way` while the hub may use it: the stream is idle, with nothing queued and no
    floor. Set by the stream after a turn that left nothing, None after every wake-up;
    `dispatch` tests only this."""
    wakeup: Wakeup = field(default=NOT_LIVE, repr=False)
    closed_reason: StreamExit | None = None
    last_take_us: int = 0
    _writer: gevent.Greenlet[..., object] | None = field(default=None, repr=False)
    """The greenlet in a write of this stream's that may block (`writing`): the server's,
    writing its head, or on TLS and gunicorn the stream's own."""

    @property
    def closed(self) -> bool:
        return self.closed_reason is not None

    def wake(self) -> None:
        self.direct = None
        self.wakeup.set()

    def writing(self, now: bool = True) -> None:
        """The calling greenlet writes this stream, and may block doing so (the head; on TLS
        and gunicorn every write): `close` raises in it when it is stuck. `now=False`: it is
        done."""
        self._writer = gevent.getcurrent() if now else None  # type: ignore[assignment]

    def progressed(self) -> None:
        """The stream's socket took something: the slow-client timeout counts from now."""
        self.last_take_us = self.clock()

    def gone(self) -> None:
        """The client left (its peer watch saw it): `close` as `gone`. A method of its own, so
        that a stream's watch holds a bound method, not a partial around one."""
        self.close(StreamExit.GONE)

    def close(self, reason: StreamExit) -> None:
        """End this client's stream: wake its writer, or, when it is stuck writing to a peer
        that stopped reading, raise ECONNRESET in it (only an exception gets it out; the
        WSGI server closes the connection quietly on that)."""
        if self.closed_reason is not None:
            return
        self.closed_reason = reason
        self.wake()
        writer = self._writer
        if writer is not None and writer is not gevent.getcurrent() and not writer.dead:
            error = ConnectionResetError(errno.ECONNRESET, f"stream closed: {reason}")
            gevent.kill(writer, error)  # asynchronous: never blocks the hub


@dataclass(eq=False)
class PatternGroup:
    """The pattern streams whose matchers answer alike (`TopicMatcher.key`): `matcher`, the
    first one's, answers for all of them."""

    matcher: TopicMatcher
    subscribers: set[Subscriber] = field(default_factory=set)


_NOTHING = memoryview(b"")
"""What `_send_ready` notes for a stream its group filter left nothing of: not a write."""


class Hub:
    """topic → local subscribers. `dispatch` is the broker's update handler.

    Greenlet-safe under gevent's cooperative scheduling: nothing here yields.
    """

    def __init__(
        self,
        *,
        queue_size: int = QUEUE_RUNS,
        slow_timeout_us: int,
        max_stream_buffer: int = 1 << 20,
        stream_buffer_budget: int = 256 << 20,
        clock: Clock = monotonic_us,
    ) -> None:
        self._queue_size = queue_size
        self._slow_timeout_us = slow_timeout_us
        self._clock = clock
        self.pending = PendingBytes(per_stream=max_stream_buffer, budget=stream_buffer_budget)
        """Every stream's pending bytes, and their bounds."""
        self.trims = 0
        """How often the sweeper gave memory back."""
        self._sweeper: gevent.Greenlet[..., object] | None = None
        self._by_topic: dict[str, set[Subscriber]] = {}
        self._patterned: dict[tuple[object, ...], PatternGroup] = {}
        """Pattern streams by `TopicMatcher.key`: a topic is matched once per distinct
        matcher, not once per stream (every Mercure stream has the same one)."""
        self._clients: set[Subscriber] = set()
        """Every subscriber, once: what the gauges count without walking every topic."""
        self._queued: set[Subscriber] = set()
        """Subscribers that were queued a run since `queued_runs` last looked: the others'
        queues are empty, so that an idle process's gauge walks no stream."""
        # Clients with runs for the direct writer, in the order they got them (a client is
        # listed when its `ready` goes from empty to not: at most once, but for one the
        # stream emptied itself meanwhile, which the writer skips).
        self._dirty: list[Subscriber] = []
        self._dirty_signal = gevent.event.Event()
        self._direct_writer: gevent.Greenlet[..., object] | None = None
        self.delivered = 0
        self.direct_sends = 0
        self.handbacks = 0
        self.conflated_runs = 0
        self.connects = 0
        # Every reason from the start, at 0: a series that appears only after its first event
        # breaks rate() and alerts on it.
        self.disconnects: dict[StreamExit, int] = dict.fromkeys(StreamExit, 0)
        self.delivery_latency = Histogram()
        """Receipt by this hub → written to a client's socket, once per write."""
        self.slow_disconnects = 0
        self.resets = 0
        self.received = 0

    def subscribe(self, matcher: TopicMatcher, *, lossless: bool = False) -> Subscriber:
        """A new stream of `matcher`'s topics; `lossless` for a messages stream (its queue never
        conflates: see `ConflatingQueue.lossless`)."""
        self.connects += 1
        queue = ConflatingQueue(self._queue_size, ledger=self.pending, lossless=lossless)
        if self._sweeper is None:
            self._sweeper = gevent.spawn(self._sweep_forever)
        subscriber = Subscriber(matcher, queue, self._clock, last_take_us=self._clock())
        self._clients.add(subscriber)
        if matcher.exact:
            for topic in matcher.names:
                self._by_topic.setdefault(topic, set()).add(subscriber)
        else:
            group = self._patterned.get(matcher.key)
            if group is None:
                group = self._patterned[matcher.key] = PatternGroup(matcher)
            group.subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        """Forget a stream that ended; counted by why it ended (`closed_reason`, else `gone`:
        the peer went away or the response failed)."""
        reason = subscriber.closed_reason or StreamExit.GONE
        self.disconnects[reason] = self.disconnects.get(reason, 0) + 1
        self._clients.discard(subscriber)
        subscriber.queue.release()
        self._queued.discard(subscriber)
        if not subscriber.matcher.exact:
            key = subscriber.matcher.key
            group = self._patterned.get(key)
            if group is not None:
                group.subscribers.discard(subscriber)
                if not group.subscribers:
                    del self._patterned[key]
            return
        for topic in subscriber.matcher.names:
            subscribers = self._by_topic.get(topic)
            if subscribers is not None:
                subscribers.discard(subscriber)
                if not subscribers:
                    del self._by_topic[topic]

    def dispatch(self, updates: list[Update]) -> None:
        """The broker's update handler: updates in id order, possibly of several topics."""
        start, count = 0, len(updates)
        self.received += count
        now = self._clock()
        dirty = self._dirty
        was_dirty = bool(dirty)
        while start < count:
            # A run of one topic (a batch POST) is matched and offered once per client.
            topic = updates[start].topic
            end = start + 1
            while end < count and updates[end].topic == topic:
                end += 1
            targets = self._by_topic.get(topic)
            patterned = (
                [g.subscribers for g in self._patterned.values() if g.matcher(topic)]
                if self._patterned
                else ()
            )
            if targets or patterned:
                run = run_of(updates[start:end])
                run.received_us = now
                offered = 0
                for group in (targets or (), *patterned):
                    offered += len(group)
                    for subscriber in group:
                        # The hot loop: per direct client, a test and an append.
                        direct = subscriber.direct
                        if direct is not None:
                            ready = direct.ready
                            if not ready:
                                dirty.append(subscriber)
                            ready.append(run)
                        elif not self._offer(subscriber, run):
                            offered -= 1  # closed
                self.delivered += offered * (end - start)
            start = end
        if dirty and not was_dirty:
            self._wake_direct_writer()

    def _offer(self, subscriber: Subscriber, run: Run) -> bool:
        """The queued way; False when the client is closed (or closed now, as slow)."""
        if subscriber.closed_reason is not None:
            return False
        queue = subscriber.queue
        if queue.latest and self._took_nothing_for_too_long(subscriber):
            log.info("disconnecting a subscriber that took nothing for the slow-client timeout")
            self.close_slow(subscriber)
            return False
        if queue.put(run):
            if queue.lossless:
                subscriber.close(StreamExit.BEHIND)
                return False
            if queue.overflowing:
                log.info("disconnecting a subscriber whose conflated updates overflowed its bound")
                self.close_slow(subscriber)
                # What it held goes now, not when its stream has ended: the next stream's
                # update must not find the budget spent by one that is over.
                queue.release()
                return False
            self.conflated_runs += 1
        self._queued.add(subscriber)
        subscriber.wake()
        return True

    def sweep(self) -> int:
        """Close as `slow` every stream that holds pending bytes and whose socket took nothing
        for the slow-client timeout; how many it closed. Walks nothing while no stream holds
        anything."""
        if not self.pending.total:
            return 0
        # Stuck: a write that waits for its socket (in flight), or a conflating queue. Not
        # merely queued runs: a stream waiting for its priming turn has those.
        stuck = [
            c
            for c in self._clients
            if c.closed_reason is None
            and (c.queue.in_flight or c.queue.latest)
            and self._took_nothing_for_too_long(c)
        ]
        for subscriber in stuck:
            self.close_slow(subscriber)
        if stuck:
            log.info(
                "disconnected %d streams whose sockets took nothing for the slow-client timeout",
                len(stuck),
            )
        return len(stuck)

    def _sweep_forever(self) -> None:
        # A few times per timeout, so a stuck stream goes within about 1.25 timeouts; at
        # most once a second for long timeouts, and not more often than 20 times a second.
        # Ends with the last stream (`subscribe` starts another).
        # Memory that ended streams held comes back at the pass after they let go of it.
        interval = min(max(self._slow_timeout_us / 4_000_000, 0.05), 1.0)
        try:
            while self._clients:
                gevent.sleep(interval)
                try:
                    self.sweep()
                except Exception:  # the sweeper must outlive any one stream's failure
                    log.exception("sweeping slow streams failed")
                self._give_back()
        finally:
            if self._sweeper is gevent.getcurrent():
                self._sweeper = None
                self._give_back()

    def _give_back(self) -> None:
        """Once ended streams have let go of `TRIM_AFTER` pending bytes, give the C heap's
        free pages back."""
        if self.pending.let_go >= TRIM_AFTER:
            self.pending.let_go = 0
            trim()
            self.trims += 1

    @property
    def budget_spent(self) -> bool:
        """The process's streams leave less of their budget than one stream may
        hold (`--max-stream-buffer`): new streams are refused."""
        return self.pending.spent

    def close_slow(self, subscriber: Subscriber) -> None:
        """End a stream whose socket took nothing for the slow-client timeout, or whose
        conflated updates overflowed its bound, counted."""
        if subscriber.closed_reason is None:
            self.slow_disconnects += 1
            subscriber.close(StreamExit.SLOW)

    def _took_nothing_for_too_long(self, subscriber: Subscriber) -> bool:
        direct_way = subscriber.direct_way
        last_write_us = 0 if direct_way is None else direct_way.last_write_us
        return self._clock() - max(subscriber.last_take_us, last_write_us) > self._slow_timeout_us

    # Clients the direct writer serves between two yields to the loop: small enough that a
    # POST or a pub/sub read is not held up for long, large enough to amortise the switch.
    DIRECT_SLICE = 64

    def _wake_direct_writer(self) -> None:
        if self._direct_writer is None or self._direct_writer.dead:
            self._direct_writer = gevent.spawn(self._write_directly)
        self._dirty_signal.set()

    def _write_directly(self) -> None:
        """The hub's writer: one non-blocking send per dirty client per pass (see the module
        docstring). Runs for the hub's lifetime, asleep while nothing is dirty."""
        while True:
            self._dirty_signal.wait()
            self._dirty_signal.clear()
            while self._dirty:
                self._write_pass()

    def _write_pass(self) -> None:
        """One pass over the dirty clients, yielding between slices. A method of its own so
        that its list of clients dies with it: held by the writer while it sleeps, it kept
        every ended stream of the last pass alive, and what their sockets had not taken."""
        # Clients dirtied while this pass yields go to a fresh list, served next pass.
        batch, self._dirty = self._dirty, []
        slice_size = self.DIRECT_SLICE
        for first in range(0, len(batch), slice_size):
            if first:
                gevent.sleep(0)
            self._send_ready(batch[first : first + slice_size])

    def _send_ready(self, subscribers: list[Subscriber]) -> None:
        """Send each client whose direct way is still open what it holds in `ready`. Delivery
        latency counts to the start of the slice (a slice of 64 sends takes well under a
        millisecond)."""
        now = self._clock()
        sends = 0
        latency = self.delivery_latency
        since, same = 0, 0  # consecutive clients mostly wait since the same run: one observe
        # The common case made cheap: consecutive clients sent the same single run, rendered
        # alike, share its bytes without a lookup (equal renderings are one object), sent on
        # the shortest path below: the send and what must follow it, inline. A run a group
        # filter emptied is never the shared one.
        shared_run: Run | None = None
        shared_rendering: Rendering | None = None
        shared_data = b""
        shared_size = 0
        shared_sends = 0  # sends of the shared run, all waiting since `shared_since`
        shared_since = 0
        for subscriber in subscribers:
            direct = subscriber.direct
            if direct is None:
                continue  # its stream is awake (or ending): it writes `ready` itself
            runs = direct.ready
            if not runs:
                continue
            run = runs[0]
            if run is shared_run and direct.rendering is shared_rendering and len(runs) == 1:
                # Nearly every delivery of a fan-out: one send of the shared bytes, the
                # bookkeeping (a count, the write time) and nothing else.
                sink = direct.sink
                try:
                    sent = sink.raw.send(shared_data, SEND_FLAGS)
                except BlockingIOError:
                    sent = 0
                except OSError:
                    runs.clear()
                    subscriber.close(StreamExit.GONE)  # the peer went away; its stream ends
                    continue
                # Emptied, not replaced: one list per client for its lifetime, not one per
                # update (nothing runs between the send and here: `dispatch` cannot append).
                runs.clear()
                direct.last_write_us = now
                shared_sends += 1
                to_earn = sink.to_earn
                if to_earn:
                    if to_earn > sent:
                        sink.to_earn = to_earn - sent
                    else:
                        sink.earned()
                if sent != shared_size:
                    self._handback(subscriber, direct, memoryview(shared_data)[sent:])
                continue
            rendering = direct.rendering
            oldest = run.received_us
            try:
                if len(runs) > 1 or rendering.per_stream:
                    # Several runs, or a stream's own `id:` lines before the shared messages:
                    # the parts go out as one chunk, unjoined.
                    blocks = rendering.blocks(runs)
                    rest = direct.sink.try_send(blocks) if blocks else _NOTHING
                else:
                    data = rendering.wire(run)
                    if data:
                        if shared_sends:
                            latency.observe(now - shared_since, shared_sends)
                            sends += shared_sends
                            shared_sends = 0
                        shared_run, shared_rendering, shared_data = run, rendering, data
                        shared_size = len(data)
                        shared_since = oldest
                    rest = direct.sink.try_send_bytes(data) if data else _NOTHING
            except OSError:
                runs.clear()
                subscriber.close(StreamExit.GONE)  # the peer went away; its stream ends
                continue
            runs.clear()
            if rest is _NOTHING:
                continue  # a group filter left nothing: no write (heartbeats stay due)
            sends += 1
            direct.last_write_us = now
            if oldest != since:
                if same:
                    latency.observe(now - since, same)
                since, same = oldest, 0
            same += 1
            if rest is not None:
                self._handback(subscriber, direct, rest)
        if same:
            latency.observe(now - since, same)
        if shared_sends:
            latency.observe(now - shared_since, shared_sends)
        self.direct_sends += sends + shared_sends

    def _handback(self, subscriber: Subscriber, direct: DirectWay, rest: memoryview) -> None:
        """The socket is full: the stream waits for it, queueing meanwhile, and sends `rest`
        first."""
        self.handbacks += 1
        if not subscriber.queue.may_hold(len(rest)):
            # Kept, its rest would pass the process's budget: the stream ends, its client
            # resumes from the history.
            direct.cut = True
            subscriber.close(StreamExit.BEHIND)
            return
        direct.handback = rest
        subscriber.queue.hold(len(rest))
        subscriber.wake()

    def subscriber_counts(self, topics: Iterable[str]) -> dict[str, int]:
        """How many of this process's streams watch each of `topics`."""
        counts = {}
        for topic in topics:
            exact = self._by_topic.get(topic)
            counts[topic] = (len(exact) if exact else 0) + sum(
                len(g.subscribers) for g in self._patterned.values() if g.matcher(topic)
            )
        return counts

    @property
    def queued_runs(self) -> int:
        """Runs waiting in clients' queues (not yet written), over every client."""
        queued = self._queued
        queued.difference_update([c for c in queued if not len(c.queue)])
        return sum(len(c.queue) for c in queued)

    @property
    def client_count(self) -> int:
        return len(self._clients)

    def close(self, reason: StreamExit = StreamExit.SHUTDOWN) -> None:
        """End every stream (server shutdown)."""
        if self._direct_writer is not None:
            self._direct_writer.kill(block=False)
            self._direct_writer = None
        if self._sweeper is not None:
            self._sweeper.kill(block=False)
            self._sweeper = None
        for subscriber in list(self._clients):
            subscriber.close(reason)

    def reset(self) -> None:
        """Updates may have been missed (the broker connection was lost): end every stream,
        so that each resumes from the history with its Last-Event-ID, exactly."""
        if self.client_count:
            log.warning("ending %d streams to resume after a broker reconnect", self.client_count)
        self.resets += 1
        self.close(StreamExit.RESET)
