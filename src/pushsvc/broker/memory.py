"""The embedded broker: plain function calls inside ONE process.

It serves one process only: handlers registered here never see events or
updates published by another process, and the history dies with the process.
For several processes, use the Redis broker.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from itertools import islice
from typing import Generic, TypeVar

from pushsvc.broker.base import (
    BridgeStats,
    EventsHandler,
    ShardLag,
    Subscription,
    UpdatesHandler,
)
from pushsvc.errors import BrokerUnavailable
from pushsvc.events import Event, check_lateness
from pushsvc.topics import TopicMatcher
from pushsvc.updates import Update, UpdateDraft, UpdateId, new_epoch

log = logging.getLogger(__name__)

H = TypeVar("H")


class _Handlers(Generic[H]):
    """Copy-on-write handler list: delivery iterates a snapshot, so a handler may
    subscribe or close while a delivery is under way."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.current: tuple[H, ...] = ()

    def add(self, handler: H) -> Subscription:
        with self._lock:
            self.current = (*self.current, handler)
        return Subscription(lambda: self._remove(handler))

    def clear(self) -> None:
        with self._lock:
            self.current = ()

    def _remove(self, handler: H) -> None:
        with self._lock:
            items = list(self.current)
            # Identity, not equality: the same function may be registered twice.
            for i, item in enumerate(items):
                if item is handler:
                    del items[i]
                    break
            self.current = tuple(items)


class MemoryUpdatesFeed:
    """The hub's subscription: watching is free, every update is delivered anyway."""

    def __init__(self, subscription: Subscription) -> None:
        self._subscription = subscription

    def watch(self, selectors: Sequence[str]) -> None:
        pass

    def unwatch(self, selectors: Sequence[str]) -> None:
        pass

    def close(self) -> None:
        self._subscription.close()


class MemoryBroker:
    """In-process broker for `pushsvc serve` without Redis. One process only.

    Handlers run synchronously in the publisher's greenlet (or thread). The topic clock
    that `append_events` judges lateness by is the largest event time appended, or idle
    tick clock published, for the topic. Event
    batches are delivered one at a time, so events of a topic reach the
    aggregator in publish order. `publish_updates` holds one lock while it
    numbers, records and delivers a batch, so delivery order is id order even
    with several publishing greenlets. Ids are `{epoch}:0-{n}`: a random epoch
    per broker instance and a counter. A handler that raises is logged and the
    others still get the batch. Handlers must not block, and an updates handler
    must not publish events (the aggregator publishes updates from inside an
    events delivery; the other way round the two locks could deadlock).
    """

    def __init__(self, *, history: int = 10_000) -> None:
        if history < 1:
            raise ValueError(f"history must be at least 1, got {history}")
        self.epoch = new_epoch()
        self._events_handlers: _Handlers[EventsHandler] = _Handlers()
        self._updates_handlers: _Handlers[UpdatesHandler] = _Handlers()
        # Reentrant: a handler may publish again from inside a delivery.
        self._events_lock = threading.RLock()
        self._updates_lock = threading.RLock()
        self._seq = 0
        self._history: deque[tuple[int, Update]] = deque(maxlen=history)
        self._latest: dict[str, Update] = {}
        self._clocks: dict[str, int] = {}  # topic -> T: largest event time or tick clock
        self._closed = False

    def append_events(self, topic: str, events: Sequence[Event], *, lateness_us: int) -> None:
        self._check_open()
        batch = list(events)
        if not batch:
            return
        with self._events_lock:
            clock = self._clocks.get(topic)
            check_lateness(clock, batch, lateness_us)
            newest = max(e.ts_us for e in batch)
            self._clocks[topic] = newest if clock is None else max(clock, newest)
            handlers = self._events_handlers.current
            for handler in handlers:
                try:
                    handler(topic, batch)
                except Exception:
                    log.exception("events handler %r failed on topic %r", handler, topic)

    def consume_events(self, handler: EventsHandler) -> Subscription:
        self._check_open()
        return self._events_handlers.add(handler)

    def publish_updates(self, drafts: Sequence[UpdateDraft]) -> list[Update]:
        self._check_open()
        with self._updates_lock:
            updates: list[Update] = []
            for draft in drafts:
                self._seq += 1
                update = Update.of(draft, UpdateId(self.epoch, 0, self._seq))
                self._history.append((self._seq, update))
                self._latest[update.topic] = update
                clock = self._clocks.get(update.topic)
                if clock is None or update.clock_us > clock:
                    self._clocks[update.topic] = update.clock_us  # an idle tick moved T
                updates.append(update)
            if updates:
                for handler in self._updates_handlers.current:
                    try:
                        handler(list(updates))
                    except Exception:
                        log.exception("updates handler %r failed", handler)
        return updates

    def consume_updates(
        self, handler: UpdatesHandler, *, on_reset: Callable[[], None] = lambda: None
    ) -> MemoryUpdatesFeed:
        """Every update reaches every handler (the hub filters); nothing is ever missed, so
        `on_reset` never runs."""
        self._check_open()
        return MemoryUpdatesFeed(self._updates_handlers.add(handler))

    def replay(self, after: UpdateId, match: TopicMatcher) -> list[Update] | None:
        seq = after.seq
        with self._updates_lock:
            if after.epoch != self.epoch or after.ms != 0 or seq > self._seq:
                return None  # another history, or an id this broker never issued
            oldest = self._history[0][0] if self._history else self._seq + 1
            if seq + 1 < oldest:
                return None  # the update right after `after_id` was trimmed
            # Sequence numbers are contiguous in the deque, so skip by position.
            start = seq + 1 - oldest
            return [u for _, u in islice(self._history, start, None) if match(u.topic)]

    def latest(self, match: TopicMatcher) -> dict[str, Update]:
        with self._updates_lock:
            if match.exact:
                found = ((t, self._latest.get(t)) for t in match.names)
                return {topic: u for topic, u in found if u is not None}
            return {topic: u for topic, u in self._latest.items() if match(topic)}

    def ping(self) -> None:
        self._check_open()

    def bridge_stats(self) -> BridgeStats | None:
        return None  # producers on Redis need Redis

    def lag(self) -> list[ShardLag]:
        """Nothing waits: batches are applied inside `append_events`."""
        self._check_open()
        return [ShardLag((0, 1), 0, None, bool(self._events_handlers.current))]

    def close(self) -> None:
        self._closed = True
        self._events_handlers.clear()
        self._updates_handlers.clear()

    def _check_open(self) -> None:
        if self._closed:
            raise BrokerUnavailable("the broker is closed")
