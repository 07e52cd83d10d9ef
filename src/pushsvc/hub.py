"""The hub: this process's subscribers, fed by its one broker subscription.

Consecutive updates of one topic (a batch POST) form a `Run`: its frames are encoded once,
joined into one block, and the same `Run` object goes to every matching client's bounded
queue, so a client writes a whole batch with one socket write. Delivering never blocks: a
client whose queue already holds `queue_size` runs is switched to conflation (latest update
per topic wins); one that has taken nothing for `slow_timeout_us` while conflated is closed.
"""

from __future__ import annotations

import errno
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import gevent
from gevent.event import Event as Signal

from pushsvc.topics import TopicMatcher
from pushsvc.updates import Run, Update, UpdateId

log = logging.getLogger(__name__)

Clock = Callable[[], int]
"""Monotonic time in integer microseconds."""


def monotonic_us() -> int:
    return time.monotonic_ns() // 1000


@dataclass(eq=False, slots=True)
class Client:
    """One subscriber's bounded queue. Only the hub offers; only the client's stream takes.

    `floor` is the newest update the stream's replay or snapshot already covered: `take`
    drops queued updates up to it, so a stream subscribed before it read the history sends
    nothing twice (see `pushsvc.subscription`).
    """

    matcher: TopicMatcher
    capacity: int
    clock: Clock = field(default=monotonic_us, repr=False)
    floor: UpdateId | None = None
    queue: deque[Run] = field(default_factory=deque)
    conflated: dict[str, Update] = field(default_factory=dict)
    wakeup: Signal = field(default_factory=Signal)
    closed_reason: str | None = None
    last_take_us: int = 0
    _writer: gevent.Greenlet[..., object] | None = field(default=None, repr=False)
    """The greenlet that took last and has not come back to wait: it is writing."""

    def offer(self, run: Run) -> None:
        if len(self.queue) < self.capacity and not self.conflated:
            self.queue.append(run)
        else:
            # Statistics are full state: the latest update of a topic supersedes older ones.
            # Re-inserting keeps the dict in the order the latest updates arrived (id order).
            self.conflated.pop(run.topic, None)
            self.conflated[run.topic] = run.updates[-1]
        self.wakeup.set()

    def take(self, timeout_s: float) -> list[Run]:
        """All queued runs in id order; [] if `timeout_s` passes with none (heartbeat time).

        The calling greenlet counts as this client's writer until it takes again.
        """
        self._writer = None
        if not self.queue and not self.conflated and self.closed_reason is None:
            self.wakeup.clear()
            self.wakeup.wait(timeout_s)
        runs = list(self.queue)
        self.queue.clear()
        if self.conflated:
            runs.extend(Run.of([u]) for u in self.conflated.values())
            self.conflated.clear()
        if self.floor is not None and runs:
            runs = self._drop_covered(runs)
        self.last_take_us = self.clock()
        self._writer = gevent.getcurrent()  # type: ignore[assignment]
        return runs

    def _drop_covered(self, runs: list[Run]) -> list[Run]:
        floor = self.floor
        assert floor is not None
        for index, run in enumerate(runs):
            if run.updates[0].id.is_after(floor):
                self.floor = None  # ids only grow from here: stop comparing
                return runs[index:]
            if run.last_id.is_after(floor):
                self.floor = None
                fresh = [u for u in run.updates if u.id.is_after(floor)]
                return [Run.of(fresh), *runs[index + 1 :]]
        return []

    def close(self, reason: str) -> None:
        """End this client's stream: wake its writer, or, when it is stuck writing to a peer
        that stopped reading, raise ECONNRESET in it (only an exception gets it out; the
        WSGI server closes the connection quietly on that)."""
        if self.closed_reason is not None:
            return
        self.closed_reason = reason
        self.wakeup.set()
        writer = self._writer
        if writer is not None and writer is not gevent.getcurrent() and not writer.dead:
            error = ConnectionResetError(errno.ECONNRESET, f"stream closed: {reason}")
            gevent.kill(writer, error)  # asynchronous: never blocks the hub


class Hub:
    """topic → local subscribers. `dispatch` is the broker's update handler.

    Greenlet-safe under gevent's cooperative scheduling: nothing here yields.
    """

    def __init__(
        self, *, queue_size: int, slow_timeout_us: int, clock: Clock = monotonic_us
    ) -> None:
        self._queue_size = queue_size
        self._slow_timeout_us = slow_timeout_us
        self._clock = clock
        self._by_topic: dict[str, set[Client]] = {}
        self._patterned: set[Client] = set()
        self.delivered = 0
        self.slow_disconnects = 0
        self.resets = 0
        self.received = 0

    def subscribe(self, matcher: TopicMatcher) -> Client:
        client = Client(matcher, self._queue_size, self._clock, last_take_us=self._clock())
        if matcher.exact:
            for topic in matcher.names:
                self._by_topic.setdefault(topic, set()).add(client)
        else:
            self._patterned.add(client)
        return client

    def unsubscribe(self, client: Client) -> None:
        if not client.matcher.exact:
            self._patterned.discard(client)
            return
        for topic in client.matcher.names:
            clients = self._by_topic.get(topic)
            if clients is not None:
                clients.discard(client)
                if not clients:
                    del self._by_topic[topic]

    def dispatch(self, updates: list[Update]) -> None:
        """The broker's update handler: updates in id order, possibly of several topics."""
        start, count = 0, len(updates)
        self.received += count
        while start < count:
            # A run of one topic (a batch POST) is matched and offered once per client.
            topic = updates[start].topic
            end = start + 1
            while end < count and updates[end].topic == topic:
                end += 1
            targets = self._by_topic.get(topic)
            patterned = [c for c in self._patterned if c.matcher(topic)] if self._patterned else ()
            if targets or patterned:
                run = Run.of(updates[start:end])
                for group in (targets or (), patterned):
                    for client in group:
                        self._deliver(client, run)
            start = end

    def _deliver(self, client: Client, run: Run) -> None:
        if client.closed_reason is not None:
            return
        if client.conflated and self._clock() - client.last_take_us > self._slow_timeout_us:
            self.slow_disconnects += 1
            log.info("disconnecting a subscriber that took nothing for the slow-client timeout")
            client.close("slow")
            return
        client.offer(run)
        self.delivered += len(run.updates)

    def subscriber_counts(self, topics: Iterable[str]) -> dict[str, int]:
        """How many of this process's streams watch each of `topics`."""
        counts = {}
        for topic in topics:
            exact = self._by_topic.get(topic)
            counts[topic] = (len(exact) if exact else 0) + sum(
                1 for c in self._patterned if c.matcher(topic)
            )
        return counts

    @property
    def client_count(self) -> int:
        return len(self._patterned) + len({c for cs in self._by_topic.values() for c in cs})

    def close(self, reason: str = "shutdown") -> None:
        """End every stream (server shutdown)."""
        for client in list(self._patterned):
            client.close(reason)
        for clients in list(self._by_topic.values()):
            for client in list(clients):
                client.close(reason)

    def reset(self) -> None:
        """Updates may have been missed (the broker connection was lost): end every stream,
        so that each resumes from the history with its Last-Event-ID, exactly."""
        if self.client_count:
            log.warning("ending %d streams to resume after a broker reconnect", self.client_count)
        self.resets += 1
        self.close("reset")
