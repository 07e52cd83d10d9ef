"""The memory twin of the Redis broker's core: a `LogBroker` whose shared log, leases,
membership and fenced publishing live in a `Store` in this process, on an injected clock.

It is not the embedded broker (`pushsvc.broker.memory`: one process, its aggregator driven
in process, no log): it has the Redis broker's shape, so the code that drives Redis
(`pushsvc.aggregate.partition_pool`, `shard_runner`) runs on it unchanged, and a test can
play many processes, crashes, pauses and store errors in one process, step by step, with
every run repeatable (`tests/simulation/`). The same contract tests pass on it, on one Redis
and on a Redis Cluster (`tests/integration/test_log_contract.py`).

One instance is one process's broker; the processes of a deployment share the store.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Sequence

from pushsvc.broker.base import Appended, Applied, Replayed, Subscription, UpdatesHandler
from pushsvc.broker.memory import MemoryUpdatesFeed
from pushsvc.broker.shared_log import EventLog, Lease, LeaseGroup, LogWaiter
from pushsvc.broker.twin.lease import MemoryLease, MemoryLeaseGroup
from pushsvc.broker.twin.log import MemoryEventLog
from pushsvc.broker.twin.store import PartitionData, Store
from pushsvc.broker.twin.waiter import MemoryWaiter
from pushsvc.core.cursor import Cursor
from pushsvc.core.event import Event
from pushsvc.core.idempotency import Idempotency
from pushsvc.core.partitions import Partition, partition_of
from pushsvc.core.topics import ALERTS, TopicMatcher
from pushsvc.core.updates import Update, UpdateDraft, UpdateId
from pushsvc.errors import BrokerUnavailable

_processes = itertools.count(1)


class MemoryLogBroker:
    """`shared_log.LogBroker` on a twin's `Store` (see the module's doc). `name` names the
    process among the aggregators (numbered when not given)."""

    def __init__(self, store: Store, *, name: str = "") -> None:
        self.store = store
        self.partitions = store.partitions
        self.name = name or f"process-{next(_processes)}"
        self._subscriptions: list[Subscription] = []
        self._closed = False

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
    ) -> Appended:
        self._check_open()
        if not events:
            return Appended(0)
        shard = (self.partition_of(topic), self.partitions)
        return self.store.run(
            "append", shard, lambda: self.store.append(topic, events, lateness_us, idempotency)
        )

    def publish_updates(
        self,
        drafts: Sequence[UpdateDraft],
        *,
        applied: Applied | None = None,
        fence: str | None = None,
    ) -> list[Update]:
        """As on Redis: an aggregator's batch (`applied`) goes to its partition whole, alert
        changes included; other drafts each to their topic's partition."""
        self._check_open()
        if not drafts and applied is None:
            return []
        if applied is not None:
            index = applied.shard[0]
            return self.store.run(
                "publish",
                applied.shard,
                lambda: self.store.publish(index, drafts, applied, fence),
            )
        by_partition: dict[int, list[UpdateDraft]] = {}
        for d in drafts:
            by_partition.setdefault(self.partition_of(d.topic), []).append(d)
        published: list[Update] = []
        for index, of_partition in by_partition.items():
            published += self.store.run(
                "publish",
                (index, self.partitions),
                functools.partial(self.store.publish, index, of_partition, None, fence),
            )
        return published

    def consume_updates(
        self, handler: UpdatesHandler, *, on_reset: Callable[[], None] = lambda: None
    ) -> MemoryUpdatesFeed:
        """Every update reaches every handler, as it is published (the hub filters)."""
        self._check_open()
        handlers = self.store.handlers
        handlers.append(handler)

        def remove() -> None:
            if handler in handlers:
                handlers.remove(handler)

        subscription = Subscription(remove)
        self._subscriptions.append(subscription)
        return MemoryUpdatesFeed(subscription)

    # -- reads -------------------------------------------------------------------------------

    def replay(self, after: Cursor, match: TopicMatcher) -> Replayed:
        """See `Broker.replay`; each partition as `RedisBroker._replay_partition` reads it."""
        self._check_open()
        lost = {index for index in after if index >= self.partitions}
        updates: list[Update] = []
        if match.exact and ALERTS not in match.names:
            indexes = sorted({self.partition_of(name) for name in match.names})
        else:
            indexes = list(range(self.partitions))
        for index in indexes:
            replayed = _replay(self.store.parts[index], after.get(index), match)
            if replayed is None:
                lost.add(index)
            else:
                updates += replayed
        if len({u.id.partition for u in updates}) > 1:
            updates.sort(key=lambda u: (u.id.ms, u.id.seq))
        return Replayed(updates, frozenset(lost))

    def latest(self, match: TopicMatcher) -> dict[str, Update]:
        self._check_open()
        if match.exact:
            found = ((t, self.store.part(t).latest.get(t)) for t in sorted(match.names))
            return {topic: u for topic, u in found if u is not None}
        return {t: u for part in self.store.parts for t, u in part.latest.items() if match(t)}

    def latest_groups(self, topics: Sequence[str]) -> dict[str, list[bytes]]:
        self._check_open()
        found = {}
        for topic in topics:
            groups = self.store.part(topic).groups.get(topic)
            if groups:
                found[topic] = list(groups.values())
        return found

    def derived_through(self, topics: Sequence[str]) -> dict[str, int]:
        self._check_open()
        return {t: self.store.derived[t] for t in topics if t in self.store.derived}

    def note_derived_through(self, topic: str, boundary_us: int) -> None:
        self._check_open()
        if boundary_us > self.store.derived.get(topic, boundary_us - 1):
            self.store.derived[topic] = boundary_us

    def ping(self) -> None:
        self._check_open()

    def close(self) -> None:
        """This process's broker goes (its feeds with it); the store stays, like Redis."""
        self._closed = True
        for subscription in self._subscriptions:
            subscription.close()

    def _check_open(self) -> None:
        if self._closed:
            raise BrokerUnavailable("the broker is closed")


def _replay(
    part: PartitionData, after: UpdateId | None, match: TopicMatcher
) -> list[Update] | None:
    """The partition's updates after `after` (everything kept for None) of the topics `match`
    takes; None when its history cannot cover `after`."""
    history = part.history
    if after is not None:
        if part.epoch != after.epoch or not history:
            return None  # another history, or a stranger's id
        if (after.ms, after.seq) > part.last_update:
            return None  # never issued
        if part.trimmed is not None and (after.ms, after.seq) < part.trimmed:
            return None  # an update after `after` was trimmed
    if part.epoch is None:
        return []
    if after is None and part.trimmed is not None:
        trimmed = part.trimmed
        if any(first <= trimmed and match(t) for t, first in part.first.items()):
            return None  # a matching topic's first update was trimmed
    start = (0, 0) if after is None else (after.ms, after.seq)
    return [u for u in history if (u.id.ms, u.id.seq) > start and match(u.topic)]
