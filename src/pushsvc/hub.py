"""The hub: this process's subscribers, fed by its one broker subscription.

Consecutive updates of one topic (a batch POST) form a run. Each run is encoded to SSE
bytes once, joined into one block, and the same `Run` object goes to every matching
client's bounded queue, so a client writes a whole batch with one socket write.
Delivering never blocks: a client whose queue already holds `queue_size` runs is
switched to conflation (latest update per topic wins); one that has taken nothing for
`slow_timeout_us` while conflated is disconnected.
"""

from __future__ import annotations

import errno
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import gevent
from gevent.event import Event as Signal

from pushsvc.broker.base import Update
from pushsvc.sse import encode_update

log = logging.getLogger(__name__)

Matcher = Callable[[str], bool]


def monotonic_us() -> int:
    return time.monotonic_ns() // 1000


@dataclass(slots=True)
class Delivery:
    """One update: `order` is the hub's arrival counter, which follows id order."""

    order: int
    update: Update
    frame: bytes


@dataclass(slots=True)
class Run:
    """Consecutive updates of one topic, in id order, shared by every client that gets them.

    `block` is their frames joined once; `projected` caches the same for each projection
    (by its key), so clients asking for the same fields share one encoding too.
    """

    deliveries: list[Delivery]
    block: bytes
    projected: dict[str, bytes] | None = None

    @classmethod
    def of(cls, deliveries: list[Delivery]) -> Run:
        if len(deliveries) == 1:
            return cls(deliveries, deliveries[0].frame)
        return cls(deliveries, b"".join([d.frame for d in deliveries]))

    @property
    def topic(self) -> str:
        return self.deliveries[0].update.topic


@dataclass(eq=False, slots=True)
class Client:
    """One subscriber's bounded queue. Only the hub puts; only the client's stream takes."""

    matcher: Matcher
    exact: frozenset[str] | None
    capacity: int
    clock: Callable[[], int] = field(default=lambda: monotonic_us(), repr=False)
    queue: deque[Run] = field(default_factory=deque)
    conflated: dict[str, Delivery] = field(default_factory=dict)
    wakeup: Signal = field(default_factory=Signal)
    closed_reason: str | None = None
    last_take_us: int = 0
    writer: gevent.Greenlet | None = None
    """The greenlet writing this client's stream, while it is between two takes (writing)."""

    def offer(self, run: Run) -> None:
        if len(self.queue) < self.capacity and not self.conflated:
            self.queue.append(run)
        else:
            # Statistics are full state: the latest update of a topic supersedes older ones.
            self.conflated[run.topic] = run.deliveries[-1]
        self.wakeup.set()

    def take(self, timeout_s: float) -> list[Run]:
        """All queued runs in id order; [] if `timeout_s` passes with none (heartbeat time)."""
        if not self.queue and not self.conflated and self.closed_reason is None:
            self.wakeup.clear()
            self.wakeup.wait(timeout_s)
        runs = list(self.queue)
        self.queue.clear()
        if self.conflated:
            latest = sorted(self.conflated.values(), key=lambda d: d.order)
            runs.extend(Run.of([d]) for d in latest)
            self.conflated.clear()
        self.last_take_us = self.clock()
        return runs

    def close(self, reason: str) -> None:
        if self.closed_reason is None:
            self.closed_reason = reason
        self.wakeup.set()


class Hub:
    """topic → local subscribers. `dispatch` is the broker's update handler.

    Greenlet-safe under gevent's cooperative scheduling: nothing here yields.
    """

    def __init__(
        self,
        *,
        queue_size: int,
        slow_timeout_us: int,
        clock: Callable[[], int] = monotonic_us,
    ) -> None:
        self._queue_size = queue_size
        self._slow_timeout_us = slow_timeout_us
        self._clock = clock
        self._by_topic: dict[str, set[Client]] = {}
        self._patterned: set[Client] = set()
        self._order = 0
        self.topic_clocks: dict[str, int] = {}
        """Latest event clock (µs) seen per topic: what the producer API checks lateness against."""
        self.delivered = 0
        self.slow_disconnects = 0

    def subscribe(self, matcher: Matcher, exact: frozenset[str] | None) -> Client:
        """`exact`: the topic names when the selectors hold no pattern (fast path)."""
        client = Client(matcher, exact, self._queue_size, self._clock, last_take_us=self._clock())
        if exact is None:
            self._patterned.add(client)
        else:
            for topic in exact:
                self._by_topic.setdefault(topic, set()).add(client)
        return client

    def unsubscribe(self, client: Client) -> None:
        if client.exact is None:
            self._patterned.discard(client)
            return
        for topic in client.exact:
            clients = self._by_topic.get(topic)
            if clients is not None:
                clients.discard(client)
                if not clients:
                    del self._by_topic[topic]

    def dispatch(self, updates: list[Update]) -> None:
        """The broker's update handler: updates in id order, possibly of several topics."""
        start, count = 0, len(updates)
        while start < count:
            # A run of one topic (a batch POST) is matched and offered once per client.
            topic = updates[start].topic
            end = start + 1
            while end < count and updates[end].topic == topic:
                end += 1
            self.topic_clocks[topic] = updates[end - 1].clock_us
            order = self._order
            self._order += end - start
            targets = self._by_topic.get(topic)
            patterned = [c for c in self._patterned if c.matcher(topic)] if self._patterned else ()
            if targets or patterned:
                run = Run.of(
                    [
                        Delivery(order + i, u, encode_update(u.id, u.data))
                        for i, u in enumerate(updates[start:end], start=1)
                    ]
                )
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
            if client.writer is not None:
                # Stuck in a socket write to a client that stopped reading: only an exception
                # gets it out. The WSGI server closes the connection quietly on ECONNRESET.
                gevent.kill(client.writer, ConnectionResetError(errno.ECONNRESET, "slow consumer"))
            return
        client.offer(run)
        self.delivered += len(run.deliveries)

    def subscriber_counts(self) -> dict[str, int]:
        counts = {topic: len(clients) for topic, clients in self._by_topic.items()}
        for client in self._patterned:
            for topic in self.topic_clocks:
                if client.matcher(topic):
                    counts[topic] = counts.get(topic, 0) + 1
        return counts

    @property
    def client_count(self) -> int:
        return len(self._patterned) + len({c for cs in self._by_topic.values() for c in cs})

    def close(self) -> None:
        """Ask every stream to end (server shutdown)."""
        for client in list(self._patterned):
            client.close("shutdown")
        for clients in list(self._by_topic.values()):
            for client in list(clients):
                client.close("shutdown")
