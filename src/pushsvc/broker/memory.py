"""The embedded broker: plain function calls inside ONE process.

It serves one process only: handlers registered here never see events or
updates published by another process, and the history dies with the process.
For several processes, use the Redis broker.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from itertools import islice, takewhile
from typing import Generic, TypeVar

from sortedcontainers import SortedDict

from pushsvc.broker.base import (
    DEFAULT_ALERT_RETENTION_US,
    AlertsPage,
    Appended,
    Applied,
    BridgeStats,
    DeleteHandler,
    EventsHandler,
    ForgetHandler,
    HistoryPage,
    LatestPage,
    Replayed,
    SeriesPage,
    ShardLag,
    Subscription,
    TopicStats,
    UpdatesHandler,
)
from pushsvc.core.cursor import Cursor
from pushsvc.core.event import Event
from pushsvc.core.idempotency import Idempotency, key_reused
from pushsvc.core.lateness import check_lateness
from pushsvc.core.topic_pages import IndexRange, TopicRange, scan_page, walk
from pushsvc.core.topics import ALERTS, TopicMatcher
from pushsvc.core.updates import Update, UpdateDraft, UpdateId, new_epoch
from pushsvc.errors import BrokerUnavailable, TooManyTopics
from pushsvc.series.store import SeriesStore

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


class _RememberedKeys:
    """Idempotency keys by (topic, key): the digest of the request that logged a batch, its
    answer, and when the key expires. Not locked: the broker's append lock guards it."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, str], tuple[bytes, Appended, float]] = {}
        # Expiry order is insertion order while the window is the same for every key (it is
        # a setting); a key whose window differs is found expired on lookup all the same.
        self._order: deque[tuple[float, tuple[str, str]]] = deque()

    def get(self, topic: str, idempotency: Idempotency, now: float) -> Appended | None:
        """The earlier answer (replayed) for a repeat; IdempotencyKeyReused for another body."""
        found = self._by_key.get((topic, idempotency.key))
        if found is None or found[2] <= now:
            return None
        digest, answer, _ = found
        if digest != idempotency.digest:
            raise key_reused()
        return answer._replace(replayed=True)

    def remember(self, topic: str, idempotency: Idempotency, accepted: int, now: float) -> None:
        expires = now + idempotency.window_ms / 1000
        self._by_key[(topic, idempotency.key)] = (idempotency.digest, Appended(accepted), expires)
        self._order.append((expires, (topic, idempotency.key)))

    def expire(self, now: float) -> None:
        while self._order and self._order[0][0] <= now:
            _, name = self._order.popleft()
            found = self._by_key.get(name)
            if found is not None and found[2] <= now:
                del self._by_key[name]

    def __len__(self) -> int:
        return len(self._by_key)


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


_ALL = frozenset({0})
"""Every partition the memory broker has."""


class MemoryBroker:
    """In-process broker for `pushsvc serve` without Redis. One process only.

    Handlers run synchronously in the publisher's greenlet (or thread). The topic clock
    that `append_events` judges lateness by is the largest event time appended, or idle
    tick clock published, for the topic. Event
    batches are delivered one at a time, so events of a topic reach the
    aggregator in publish order. `publish_updates` holds one lock while it
    numbers, records and delivers a batch, so delivery order is id order even
    with several publishing greenlets. Ids are `{epoch}:0-{n}`: a random epoch
    per broker instance and a counter; one partition (0) holds every topic. A handler
    that raises is logged and the others still get the batch. Handlers must not block,
    and an updates handler must not publish events (the aggregator publishes updates
    from inside an events delivery; the other way round the two locks could deadlock).

    The topics it keeps are those with a clock: at most `max_topics` (a batch for another
    raises TooManyTopics); `forget_topics` forgets idle ones.

    Idempotency keys are remembered under the append lock with the batch they logged, until
    their window passes on `clock` (monotonic seconds); expired ones are dropped as appends
    come, oldest first.
    """

    def __init__(
        self,
        *,
        history: int = 10_000,
        max_topics: int = 100_000,
        alert_retention_us: int = DEFAULT_ALERT_RETENTION_US,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if history < 1:
            raise ValueError(f"history must be at least 1, got {history}")
        if alert_retention_us < 1:
            raise ValueError(f"alert_retention_us must be positive, got {alert_retention_us}")
        if max_topics < 1:
            raise ValueError(f"max_topics must be at least 1, got {max_topics}")
        self._max_topics = max_topics
        self._forget_handlers: _Handlers[ForgetHandler] = _Handlers()
        self._delete_handlers: _Handlers[DeleteHandler] = _Handlers()
        self._forgotten = 0
        self.epoch = new_epoch()
        self._events_handlers: _Handlers[EventsHandler] = _Handlers()
        self._updates_handlers: _Handlers[UpdatesHandler] = _Handlers()
        # Reentrant: a handler may publish again from inside a delivery.
        self._events_lock = threading.RLock()
        self._updates_lock = threading.RLock()
        self._seq = 0
        self._history: deque[tuple[int, Update]] = deque(maxlen=history)
        # Sorted by name: a listing reads a page of it (`latest_page`), not every topic.
        self._latest: SortedDict[str, Update] = SortedDict()
        self._first: dict[str, int] = {}  # topic -> the seq of its first update in `_latest`
        self._groups: dict[str, dict[str, bytes]] = {}  # topic -> group id -> group JSON
        # Topic -> the seq of its newest deletion, while the history holds it: the topic's
        # history reads start after it.
        self._deletions: dict[str, int] = {}
        # Series points by (topic, group id, resolution); they outlive a forgotten topic
        # (its next event continues them), trimmed to each tier's retention as points come.
        self._series = SeriesStore()
        self._series_due: dict[tuple[str, str, str], float] = {}  # key -> when it expires
        # Instance key -> its latest change (active ones), sorted: /alerts reads pages of it.
        self._alerts: SortedDict[str, bytes] = SortedDict()
        # Alert changes apart from the history every topic shares, each with when it was
        # published (on `clock`), kept `alert_retention_us`; the seq of the newest dropped.
        self._alert_changes: deque[tuple[float, Update]] = deque()
        self._alert_retention_s = alert_retention_us / 1e6
        self._alert_changes_dropped = 0
        self._clocks: dict[str, int] = {}  # topic -> T: largest event time or tick clock
        self._derived: dict[str, int] = {}  # derived topic -> the boundary evaluated through
        self._sessions: dict[str, bytes] = {}  # session topic -> its sessionizer's state
        self._clock = clock
        self._keys = _RememberedKeys()
        self._closed = False

    def append_events(
        self,
        topic: str,
        events: Sequence[Event],
        *,
        lateness_us: int,
        idempotency: Idempotency | None = None,
    ) -> Appended:
        self._check_open()
        batch = list(events)
        if not batch:
            return Appended(0)
        with self._events_lock:
            if idempotency is not None:
                now = self._clock()
                self._keys.expire(now)
                earlier = self._keys.get(topic, idempotency, now)
                if earlier is not None:
                    return earlier
            clock = self._clocks.get(topic)
            if clock is None and len(self._clocks) >= self._max_topics:
                raise TooManyTopics.at(self._max_topics)
            check_lateness(clock, batch, lateness_us)
            newest = max(e.ts_us for e in batch)
            self._clocks[topic] = newest if clock is None else max(clock, newest)
            if idempotency is not None:
                self._keys.remember(topic, idempotency, len(batch), now)
            handlers = self._events_handlers.current
            for handler in handlers:
                try:
                    handler(topic, batch)
                except Exception:
                    log.exception("events handler %r failed on topic %r", handler, topic)
        return Appended(len(batch))

    def remembered_keys(self) -> int:
        """Idempotency keys held now (expired ones go as appends come)."""
        with self._events_lock:
            return len(self._keys)

    def consume_events(self, handler: EventsHandler) -> Subscription:
        self._check_open()
        return self._events_handlers.add(handler)

    def consume_forgets(self, handler: ForgetHandler) -> Subscription:
        """`handler` gets the topics `forget_topics` forgot (the aggregator drops them)."""
        self._check_open()
        return self._forget_handlers.add(handler)

    def forget_topics(self, choose: Callable[[], Iterable[str]]) -> list[str]:
        """Forget the topics `choose()` names: their clocks and latest updates here, and every
        forget handler drops them; the topics forgotten. `choose` runs under the append lock,
        so the choice and the forgetting are one step: an event appended before it was
        applied and `choose` saw it, one appended after it finds a new topic."""
        self._check_open()
        with self._events_lock:
            topics = [topic for topic in choose() if topic in self._clocks]
            with self._updates_lock:
                self._expire_series()  # as often as idle topics are looked for
            if not topics:
                return []
            with self._updates_lock:
                for topic in topics:
                    del self._clocks[topic]
                    self._latest.pop(topic, None)
                    self._first.pop(topic, None)
                    self._groups.pop(topic, None)
                self._forgotten += len(topics)
            for handler in self._forget_handlers.current:
                try:
                    handler(topics)
                except Exception:
                    log.exception("forget handler %r failed", handler)
        return topics

    def consume_deletes(self, handler: DeleteHandler) -> Subscription:
        """`handler` gets each topic `delete_topic` deleted (the aggregator publishes it)."""
        self._check_open()
        return self._delete_handlers.add(handler)

    def delete_topic(self, topic: str) -> bool:
        """See `Broker.delete_topic`: under the append lock, so no batch falls between the
        check, the clock dropped and the aggregator's deletion (delete handlers run here)."""
        self._check_open()
        with self._events_lock:
            if self._clocks.pop(topic, None) is None:
                return False
            with self._updates_lock:
                self._latest.pop(topic, None)
            for handler in self._delete_handlers.current:
                try:
                    handler(topic)
                except Exception:
                    log.exception("delete handler %r failed on topic %r", handler, topic)
        return True

    def _drop(self, topic: str, seq: int) -> None:
        """A deletion of `topic` is published (as update `seq`): drop what the broker keeps of
        the topic. Its history stays (trimmed as usual) but reads by topic start after the
        deletion; a stream with nothing of the partition wants it as the topic's first."""
        self._latest.pop(topic, None)
        self._groups.pop(topic, None)
        self._first[topic] = seq
        self._deletions[topic] = seq
        for key in [key for key in self._series_due if key[0] == topic]:
            del self._series_due[key]
            self._series.drop(key)

    def publish_updates(
        self,
        drafts: Sequence[UpdateDraft],
        *,
        applied: Applied | None = None,
        fence: str | None = None,
    ) -> list[Update]:
        """See `Broker.publish_updates`; `applied` and `fence` are for a shared log, which
        this one-process broker has not: its one aggregator publishes as it applies."""
        self._check_open()
        with self._updates_lock:
            updates: list[Update] = []
            for draft in drafts:
                if draft.series is not None and not self._keep_point(draft):
                    continue
                self._seq += 1
                update = Update.of(draft, UpdateId(self.epoch, 0, self._seq))
                self._history.append((self._seq, update))
                if draft.series is not None:
                    updates.append(update)
                    continue
                if draft.instance is not None:
                    self._keep_instance(*draft.instance)
                    self._alert_changes.append((self._clock(), update))
                    self._expire_alert_changes()
                    updates.append(update)
                    continue
                if update.is_deletion:
                    self._drop(update.topic, self._seq)
                    updates.append(update)
                    continue
                self._first.setdefault(update.topic, self._seq)
                self._latest[update.topic] = update
                if draft.groups or draft.forgotten:
                    self._keep_groups(draft)
                clock = self._clocks.get(update.topic)
                if clock is not None and update.clock_us > clock:
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

    partitions = 1
    """One partition, one history: every topic is partition 0's."""

    def partition_of(self, topic: str) -> int:
        return 0

    def replay(self, after: Cursor, match: TopicMatcher) -> Replayed:
        """See `Broker.replay`. A cursor that names a partition other than 0 comes from
        another deployment: partition 0 is lost."""
        with self._updates_lock:
            position = after.get(0)
            if position is None:
                # A stream with nothing of the partition wants each matching topic's first update.
                oldest = self._history[0][0] if self._history else self._seq + 1
                trimmed = any(s < oldest and match(t) for t, s in self._first.items())
                start: int | None = None if trimmed else 0
            else:
                start = self._start_after(position)
            if start is None or any(partition != 0 for partition in after):
                return Replayed([], lost=_ALL.union(after))
            updates = [u for _, u in islice(self._history, start, None) if match(u.topic)]
            return Replayed(updates)

    def _start_after(self, after: UpdateId) -> int | None:
        """The position in the history right after `after`; None when the history cannot
        continue from it."""
        seq = after.seq
        if after.epoch != self.epoch or after.ms != 0 or seq > self._seq:
            return None  # another history, or an id this broker never issued
        oldest = self._history[0][0] if self._history else self._seq + 1
        if seq + 1 < oldest:
            return None  # the update right after `after` was trimmed
        # Sequence numbers are contiguous in the deque, so skip by position.
        return seq + 1 - oldest

    def history(
        self,
        topic: str,
        *,
        after: UpdateId | None = None,
        since_us: int | None = None,
        limit: int,
    ) -> HistoryPage:
        if topic == ALERTS:
            return self._alerts_history(after, since_us, limit)
        with self._updates_lock:
            head = UpdateId(self.epoch, 0, self._seq) if self._history else None
            gap = False
            if after is None and since_us is None:
                newest = takewhile(
                    lambda u: not u.is_deletion,
                    (u for _, u in reversed(self._history) if u.topic == topic and not u.is_point),
                )
                page = list(islice(newest, limit + 1))
                return HistoryPage(page[:limit][::-1], head, len(page) > limit)
            start = 0
            if after is not None:
                found = self._start_after(after)
                gap, start = found is None, found or 0
            # The topic's history starts after its newest deletion: from `after` before it, the
            # updates after it only, and a gap.
            deleted = self._deleted_at(topic, start)
            if deleted is not None:
                gap, start = gap or after is not None, deleted
            matched = (
                u
                for _, u in islice(self._history, start, None)
                if u.topic == topic
                and not u.is_point
                and (since_us is None or u.clock_us >= since_us)
            )
            page = list(islice(matched, limit + 1))
        more = len(page) > limit
        page = page[:limit]
        return HistoryPage(page, page[-1].id if more else head, more, gap)

    def _alerts_history(
        self, after: UpdateId | None, since_us: int | None, limit: int
    ) -> HistoryPage:
        """`_alerts`' page from the alert changes kept (not the shared history)."""
        with self._updates_lock:
            self._expire_alert_changes()
            head = UpdateId(self.epoch, 0, self._seq) if self._seq else None
            changes = [u for _, u in self._alert_changes]
            gap = False
            if after is not None:
                # Another history, an id never issued, or changes after it dropped: a gap.
                gap = (
                    after.epoch != self.epoch
                    or after.ms != 0
                    or after.seq > self._seq
                    or after.seq < self._alert_changes_dropped
                )
                if not gap:
                    changes = [u for u in changes if u.id.seq > after.seq]
            if since_us is not None:
                changes = [u for u in changes if u.clock_us >= since_us]
        if after is None and since_us is None:
            page = changes[-(limit + 1) :]
            more = len(page) > limit
            return HistoryPage(page[-limit:], head, more)
        more = len(changes) > limit
        page = changes[:limit]
        return HistoryPage(page, page[-1].id if more else head, more, gap)

    def _expire_alert_changes(self) -> None:
        oldest = self._clock() - self._alert_retention_s
        while self._alert_changes and self._alert_changes[0][0] < oldest:
            self._alert_changes_dropped = self._alert_changes.popleft()[1].id.seq

    def _deleted_at(self, topic: str, start: int) -> int | None:
        """The position right after `topic`'s newest deletion at or after position `start` of
        the history; None when it has none there."""
        seq = self._deletions.get(topic)
        if seq is None:
            return None
        oldest = self._history[0][0] if self._history else self._seq + 1
        if seq < oldest:
            del self._deletions[topic]  # trimmed: the history holds nothing from before it
            return None
        return seq - oldest + 1 if seq - oldest >= start else None

    def _keep_instance(self, key: str, body: bytes) -> None:
        if body:
            self._alerts[key] = body
        else:
            self._alerts.pop(key, None)

    def active_alerts(self) -> list[bytes]:
        with self._updates_lock:
            return list(self._alerts.values())

    def active_alerts_page(
        self, *, after: str | None, limit: int, scan: int, keep: Callable[[str], bool]
    ) -> AlertsPage:
        with self._updates_lock:
            keys = self._alerts.irange(minimum=after, inclusive=(False, False))
            page = scan_page(list(islice(keys, scan + 1)), limit, scan, keep)
            return AlertsPage([self._alerts[key] for key in page.keys], page.next)

    def _keep_point(self, draft: UpdateDraft) -> bool:
        """Keep a point in its tier; False when the tier holds it already."""
        write = draft.series
        assert write is not None
        key = (draft.topic, write.group_id, write.resolution)
        if not self._series.append(key, write.t_us, write.packed):
            return False
        self._series.trim(key, write.keep_from_us - 1)
        # As on Redis: kept its retention after its newest point, also once its topic is gone.
        self._series_due[key] = self._clock() + (draft.clock_us - write.keep_from_us) / 1e6 + 60
        return True

    def _expire_series(self) -> None:
        now = self._clock()
        for key in [key for key, due in self._series_due.items() if due <= now]:
            del self._series_due[key]
            self._series.drop(key)

    def series(
        self,
        topic: str,
        *,
        resolution: str,
        group_id: str = "",
        since_us: int,
        until_us: int,
        retention_us: int,
        limit: int,
    ) -> SeriesPage:
        self._check_open()
        with self._updates_lock:
            clock = self._clocks.get(topic)
            if clock is not None:
                since_us = max(since_us, clock - retention_us + 1)
            if until_us <= since_us:
                return SeriesPage([], False)
            points, more = self._series.read(
                (topic, group_id, resolution), since_us, until_us, limit
            )
        return SeriesPage(points, more)

    def _keep_groups(self, draft: UpdateDraft) -> None:
        kept = self._groups.get(draft.topic)
        if kept is None:
            kept = self._groups[draft.topic] = {}
        kept.update(draft.groups)
        for gid in draft.forgotten:
            kept.pop(gid, None)

    def latest_groups(self, topics: Sequence[str]) -> dict[str, list[bytes]]:
        with self._updates_lock:
            return {t: list(self._groups[t].values()) for t in topics if self._groups.get(t)}

    def derived_through(self, topics: Sequence[str]) -> dict[str, int]:
        with self._updates_lock:
            return {t: self._derived[t] for t in topics if t in self._derived}

    def note_derived_through(self, topic: str, boundary_us: int) -> None:
        with self._updates_lock:
            if boundary_us > self._derived.get(topic, boundary_us - 1):
                self._derived[topic] = boundary_us

    def session_state(self, topic: str) -> bytes | None:
        with self._updates_lock:
            return self._sessions.get(topic)

    def save_session_state(self, topic: str, state: bytes) -> None:
        with self._updates_lock:
            self._sessions[topic] = state

    def latest(self, match: TopicMatcher) -> dict[str, Update]:
        with self._updates_lock:
            if match.exact:
                found = ((t, self._latest.get(t)) for t in match.names)
                return {topic: u for topic, u in found if u is not None}
            return {topic: u for topic, u in self._latest.items() if match(topic)}

    def latest_page(
        self, ranges: Sequence[TopicRange], *, after: str | None, limit: int
    ) -> LatestPage:
        def read(part: IndexRange, count: int) -> list[str]:
            names = self._latest.irange(
                part.low, part.high, (part.low_inclusive, part.high_inclusive)
            )
            return list(islice(names, count))

        with self._updates_lock:
            page = walk(ranges, after, limit, read)
            following = page.names[-1] if page.more else None
            return LatestPage({name: self._latest[name] for name in page.names}, following)

    def ping(self) -> None:
        self._check_open()

    def bridge_stats(self) -> BridgeStats | None:
        return None  # producers on Redis need Redis

    def topic_stats(self) -> TopicStats:
        self._check_open()
        return TopicStats(len(self._clocks), self._forgotten)

    def lag(self) -> list[ShardLag]:
        """Nothing waits: batches are applied inside `append_events`."""
        self._check_open()
        return [ShardLag((0, 1), 0, None, bool(self._events_handlers.current))]

    def close(self) -> None:
        self._closed = True
        self._events_handlers.clear()
        self._updates_handlers.clear()
        self._forget_handlers.clear()

    def _check_open(self) -> None:
        if self._closed:
            raise BrokerUnavailable("the broker is closed")
