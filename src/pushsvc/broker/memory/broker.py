"""The memory broker: the shared-log core (`pushsvc.broker.shared_log`) in one process.

`pushsvc serve` runs on it: its event log, leases, fenced publishing and checkpoints live in
a `Store` in this process, and the same `PartitionPool` and `ShardRunner` that drive Redis
drive it, so the embedded server is the core that every other mode runs and that the
simulation searches (`tests/simulation/`). The same contract tests pass on it, on one Redis and
on a Redis Cluster (`tests/integration/test_log_contract.py`, `test_broker_contract.py`).

One instance is one process's broker; the processes of a simulated deployment share the
store, as processes share one Redis. Serving, the store is the process's own, on the wall
clock, and nothing of it survives the process (`serve --data-dir` runs a private Redis).
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable, Iterable, Sequence
from itertools import islice

from pushsvc.broker.base import (
    DEFAULT_ALERT_RETENTION_US,
    DEFAULT_HISTORY_BYTES,
    AlertsPage,
    Appended,
    Applied,
    BridgeStats,
    HistoryPage,
    LatestPage,
    PartitionPage,
    Replayed,
    SeriesPage,
    ShardLag,
    TopicHead,
    TopicStats,
    UpdatesHandler,
)
from pushsvc.broker.memory.lease import MemoryLease, MemoryLeaseGroup
from pushsvc.broker.memory.log import MemoryEventLog
from pushsvc.broker.memory.published import Position
from pushsvc.broker.memory.store import Store
from pushsvc.broker.memory.waiter import MemoryWaiter
from pushsvc.broker.shared_log import EventLog, Lease, LeaseGroup, LogWaiter
from pushsvc.core.cursor import Cursor
from pushsvc.core.event import Event
from pushsvc.core.idempotency import Idempotency
from pushsvc.core.partitions import Partition, partition_of, partitions_matching
from pushsvc.core.topic_pages import IndexRange, TopicRange, scan_page, walk
from pushsvc.core.topics import ALERTS, TopicMatcher
from pushsvc.core.updates import Update, UpdateDraft, UpdateId
from pushsvc.errors import BrokerUnavailable

_processes = itertools.count(1)

PACED_DRAFTS = 500
"""How many drafts of an aggregator's batch a broker with a `pause` publishes between two
pauses (about 3 ms of the loop): a batch of 10,000 updates published at once held the
embedded server's loop 55-85 ms (2026-11-27), and every POST waited."""


class MemoryUpdatesFeed:
    """A process's feed of updates on the memory broker: its handler is in the store's list,
    so every update published reaches it in the publisher's greenlet (the hub filters), until
    `close` takes it out (idempotent).

    `watch` and `unwatch` have nothing to do here, and stay as the `UpdatesFeed` protocol's
    null object: a stream subscribes in one way on every broker (`deliver.subscription`
    watches, primes, and unwatches on close), where Redis subscribes channels
    (`RedisUpdatesFeed`). Without them every caller would ask which broker it has, at the
    watch and at the close, for no work saved."""

    __slots__ = ("_handler", "_handlers")

    def __init__(self, handlers: list[UpdatesHandler], handler: UpdatesHandler) -> None:
        handlers.append(handler)
        self._handlers = handlers
        self._handler: UpdatesHandler | None = handler

    def watch(self, selectors: Sequence[str]) -> None:
        pass

    def unwatch(self, selectors: Sequence[str]) -> None:
        pass

    def close(self) -> None:
        handler, self._handler = self._handler, None
        # Identity, not equality: the same function may be registered twice.
        for i, item in enumerate(self._handlers):
            if item is handler:
                del self._handlers[i]
                break


class MemoryBroker:
    """A `ServingBroker` and `LogBroker` on a `Store` (see the module's doc). `name` names
    the process among the aggregators (numbered when not given)."""

    def __init__(
        self, store: Store, *, name: str = "", pause: Callable[[], None] | None = None
    ) -> None:
        self.store = store
        self.partitions = store.partitions
        self.name = name or f"process-{next(_processes)}"
        self._pause = pause
        self._feeds: list[MemoryUpdatesFeed] = []
        self._closed = False

    @classmethod
    def serving(
        cls,
        *,
        history: int = 10_000,
        history_bytes: int = DEFAULT_HISTORY_BYTES,
        max_topics: int = 100_000,
        alert_retention_us: int = DEFAULT_ALERT_RETENTION_US,
        partitions: int = 1,
        pause: Callable[[], None] | None = None,
    ) -> MemoryBroker:
        """The embedded server's broker: a store of its own, on the wall clock (as Redis
        numbers its stream entries), whose waiters wait for appends. `pause`: what a big
        batch's publish calls between its parts (see `publish_updates`)."""
        store = Store(
            partitions,
            clock=time.time,
            history=history,
            history_bytes=history_bytes,
            max_topics=max_topics,
            alert_retention_us=alert_retention_us,
        )
        return cls(store, name="serve", pause=pause)

    def partition_of(self, topic: str) -> int:
        return partition_of(topic, self.partitions)

    # -- the shared log ----------------------------------------------------------------------

    def event_log(self, shard: Partition) -> EventLog:
        return MemoryEventLog(self.store, shard)

    def lease(self, shard: Partition, *, ttl_us: int) -> Lease:
        return MemoryLease(self.store, shard, ttl_us=ttl_us)

    def log_waiter(self) -> LogWaiter:
        return MemoryWaiter(self.store)

    def lease_group(self, *, ttl_us: int) -> LeaseGroup:
        return MemoryLeaseGroup(self.store, self.partitions, ttl_us=ttl_us, name=self.name)

    # -- producers and publishers ------------------------------------------------------

    def append_events(
        self,
        topic: str,
        events: Sequence[Event],
        *,
        lateness_us: int,
        idempotency: Idempotency | None = None,
        keep_late: bool = False,
    ) -> Appended:
        self._check_open()
        if not events and idempotency is None:
            return Appended(0)
        shard = (self.partition_of(topic), self.partitions)
        return self.store.run(
            "append",
            shard,
            lambda: self.store.append(topic, events, lateness_us, idempotency, keep_late),
        )

    def delete_topic(self, topic: str) -> bool:
        """See `Broker.delete_topic`: the clock and latest update go and a delete entry is
        logged in one step (`Store.delete`); the aggregator publishes the deletion."""
        self._check_open()
        shard = (self.partition_of(topic), self.partitions)
        return self.store.run("delete", shard, lambda: self.store.delete(topic))

    def publish_updates(
        self,
        drafts: Sequence[UpdateDraft],
        *,
        applied: Applied,
        fence: str,
    ) -> list[Update]:
        """As on Redis: an aggregator's batch goes to its partition whole, alert changes
        included.

        With a `pause`, a batch of more than `PACED_DRAFTS` is published in parts, with a
        pause between two: the first part is checked (the fence, the position) as the
        script's start is, and the rest follow unchecked, as the rest of one script does. The
        batch's entries count as unpublished (`lag`) until its last part is out. A reader
        may see the batch's first parts before the rest, as it may see one batch before the
        next: each part is kept, then delivered, and a stream being primed drops what its
        read already had (`pushsvc.deliver.subscription`)."""
        self._check_open()
        index = applied.shard[0]
        parts = [drafts]
        if self._pause is not None and len(drafts) > PACED_DRAFTS:
            parts = [drafts[at : at + PACED_DRAFTS] for at in range(0, len(drafts), PACED_DRAFTS)]
        first = parts[0]
        updates = self.store.run(
            "publish", applied.shard, lambda: self.store.publish(index, first, applied, fence)
        )
        if len(parts) == 1:
            return updates
        assert self._pause is not None
        with self.store.finishing(index, applied.entries):
            for number, rest in enumerate(parts[1:], start=1):
                try:
                    self._pause()
                except BaseException:
                    # Killed in a pause (gevent's kill raises there): the rest goes out
                    # first, as a script that started runs to its end.
                    for remaining in parts[number:]:
                        updates += self.store.continue_publish(index, remaining)
                    raise
                updates += self.store.continue_publish(index, rest)
        return updates

    def consume_updates(
        self, handler: UpdatesHandler, *, on_reset: Callable[[], None] = lambda: None
    ) -> MemoryUpdatesFeed:
        """Every update reaches every handler as it is published, in the publisher's greenlet
        (the hub filters); nothing is ever missed, so `on_reset` never runs."""
        self._check_open()
        feed = MemoryUpdatesFeed(self.store.handlers, handler)
        self._feeds.append(feed)
        return feed

    # -- reads -------------------------------------------------------------------------------

    def replay(self, after: Cursor, match: TopicMatcher) -> Replayed:
        """See `Broker.replay`; each partition as `RedisBroker._replay_partition` reads it."""
        self._check_open()
        lost = {index for index in after if index >= self.partitions}
        updates: list[Update] = []
        heads: dict[int, UpdateId] = {}
        several = False  # whether updates of more than one partition were read
        for index in partitions_matching(match, self.partitions):
            published = self.store.parts[index].published
            head = published.head()
            if head is not None:
                heads[index] = head
            replayed = published.replay(after.get(index), match)
            if replayed is None:
                lost.add(index)
            elif replayed:
                several = several or bool(updates)
                updates += replayed
        if several:
            updates.sort(key=lambda u: (u.id.ms, u.id.seq))
        return Replayed(updates, frozenset(lost), heads)

    def history_page(
        self, partition: int, after: UpdateId | None, match: TopicMatcher, limit: int
    ) -> PartitionPage:
        """See `HistoryPages.history_page`: a slice of the partition's history."""
        self._check_open()
        published = self.store.parts[partition].published
        head = published.head()
        read = published.page(after, match, limit)
        if read is None:
            return PartitionPage([], None, False, head, lost=True)
        updates, last, more = read
        epoch = published.epoch
        at = None if last is None or epoch is None else UpdateId(epoch, *last)
        return PartitionPage(updates, at, more, head)

    def history_heads(self) -> dict[int, UpdateId]:
        """See `HistoryPages.history_heads`."""
        self._check_open()
        heads = ((index, part.published.head()) for index, part in enumerate(self.store.parts))
        return {index: head for index, head in heads if head is not None}

    def history_starts(self) -> dict[int, UpdateId]:
        """See `HistoryStarts.history_starts`."""
        self._check_open()
        starts: dict[int, UpdateId] = {}
        for index, part in enumerate(self.store.parts):
            published = part.published
            if published.epoch is not None and published.trimmed is not None:
                starts[index] = UpdateId(published.epoch, *published.trimmed)
        return starts

    def history(
        self,
        topic: str,
        *,
        after: UpdateId | None = None,
        since_us: int | None = None,
        limit: int,
    ) -> HistoryPage:
        self._check_open()
        if topic == ALERTS:
            # The changes of every partition; by the partition `after` names, else the first.
            index = 0 if after is None or after.partition >= self.partitions else after.partition
            return self.store.parts[index].published.alert_history(
                after=after, since_us=since_us, limit=limit
            )
        published = self.store.part(topic).published
        return published.topic_history(topic, after=after, since_us=since_us, limit=limit)

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
        clock = self.store.part(topic).clocks.get(topic)
        if clock is not None:
            since_us = max(since_us, clock - retention_us + 1)
        return self.store.series.read((topic, group_id, resolution), since_us, until_us, limit)

    def latest(self, match: TopicMatcher) -> dict[str, Update]:
        self._check_open()
        if match.exact:
            found = ((t, self.store.part(t).published.latest.get(t)) for t in sorted(match.names))
            return {topic: u for topic, u in found if u is not None}
        return {
            t: u for part in self.store.parts for t, u in part.published.latest.items() if match(t)
        }

    def latest_page(
        self, ranges: Sequence[TopicRange], *, after: str | None, limit: int
    ) -> LatestPage:
        """See `TopicLister.latest_page`: slices of each partition's sorted names, merged."""
        self._check_open()
        parts = [part.published.latest for part in self.store.parts]

        def read(index_range: IndexRange, count: int) -> list[str]:
            bounds = (index_range.low_inclusive, index_range.high_inclusive)
            names = (p.irange(index_range.low, index_range.high, bounds) for p in parts)
            return list(islice(heapq.merge(*names), count))

        page = walk(ranges, after, limit, read)
        following = page.names[-1] if page.more else None
        latest = {}
        for name in page.names:
            found = self.store.part(name).published.latest.get(name)
            if found is not None:
                latest[name] = TopicHead(found.id.text, found.clock_us)
        return LatestPage(latest, following)

    def latest_groups(self, topics: Sequence[str]) -> dict[str, list[bytes]]:
        self._check_open()
        found = {}
        for topic in topics:
            groups = self.store.part(topic).published.groups.get(topic)
            if groups:
                found[topic] = list(groups.values())
        return found

    def active_alerts(self) -> list[bytes]:
        self._check_open()
        return [body for part in self.store.parts for body in part.published.alerts.values()]

    def active_alerts_page(
        self, *, after: str | None, limit: int, scan: int, keep: Callable[[str], bool]
    ) -> AlertsPage:
        self._check_open()
        alerts = [part.published.alerts for part in self.store.parts]
        keys: Iterable[str] = heapq.merge(
            *(a.irange(minimum=after, inclusive=(False, False)) for a in alerts)
        )
        page = scan_page(list(islice(keys, scan + 1)), limit, scan, keep)
        changes = []
        for key in page.keys:
            for kept in alerts:
                if key in kept:
                    changes.append(kept[key])
                    break
        return AlertsPage(changes, page.next)

    def derived_through(self, topics: Sequence[str]) -> dict[str, int]:
        self._check_open()
        return {t: self.store.derived[t] for t in topics if t in self.store.derived}

    def note_derived_through(self, topic: str, boundary_us: int) -> None:
        self._check_open()
        if boundary_us > self.store.derived.get(topic, boundary_us - 1):
            self.store.derived[topic] = boundary_us

    def session_state(self, topic: str) -> bytes | None:
        self._check_open()
        return self.store.sessions.get(topic)

    def save_session_state(self, topic: str, state: bytes) -> None:
        self._check_open()
        self.store.sessions[topic] = state

    def hold_history(self, reader: str, after: Cursor, match: TopicMatcher) -> None:
        self._check_open()
        now_ms = self.store.now_ms()
        for index in partitions_matching(match, self.partitions):
            held = after.get(index)
            published = self.store.parts[index].published
            if held is None:
                published.hold(reader, None, (0, 0), now_ms)
            else:
                published.hold(reader, held.epoch, held.position, now_ms)

    # -- what operators read -----------------------------------------------------------------

    def remembered_keys(self) -> int:
        """Idempotency keys held now (expired ones go as appends come)."""
        return sum(len(part.keys) for part in self.store.parts)

    def topic_stats(self) -> TopicStats:
        self._check_open()
        return TopicStats(self.store.topics(), sum(p.forgotten for p in self.store.parts))

    def keeps_topic(self, topic: str) -> bool:
        self._check_open()
        return topic in self.store.part(topic).clocks

    def lag(self) -> list[ShardLag]:
        """Each partition's entries logged and not yet published, and the age of the oldest."""
        self._check_open()
        store = self.store
        now_ms = store.now_ms()
        lags = []
        for part in store.parts:
            count = 0 if part.applied is None else part.applied[1]
            behind = part.logged - count + part.unfinished
            oldest_age_s = None
            if behind > 0 and part.ids:  # the unpublished entries are the newest kept
                first: Position = part.ids[-min(behind, len(part.ids))]
                oldest_age_s = max(0.0, (now_ms - first[0]) / 1000)
            lags.append(
                ShardLag(
                    (part.index, store.partitions),
                    behind,
                    oldest_age_s,
                    store.holder(part.index) is not None,
                    part.rules,
                )
            )
        return lags

    def bridge_stats(self) -> BridgeStats | None:
        return None  # producers on Redis need Redis

    def ping(self) -> None:
        self._check_open()

    def close(self) -> None:
        """This process's broker goes (its feeds with it); the store stays, like Redis."""
        self._closed = True
        for feed in self._feeds:
            feed.close()

    def _check_open(self) -> None:
        if self._closed:
            raise BrokerUnavailable("the broker is closed")
