"""Publishing drafts in a test the way the product does: as an aggregator's batch, fenced by
its shard's lease and recorded as covering a log entry (`Broker.publish_updates(drafts,
applied=..., fence=...)`), on any `LogBroker` (memory, Redis, a Redis Cluster).

`publish(broker, drafts)` splits the drafts by their topics' partitions, and for each takes
the shard's lease, logs an empty tick entry after the applied position (what the batch
covers), publishes the partition's drafts under the lease with that entry as applied, and
gives the lease up. So a test of what the history, replay, latest and the feed do with
updates reaches them through the one publish step production takes, where it once took an
unfenced branch that only tests used.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from pushsvc.broker.base import Applied
from pushsvc.broker.shared_log import LogBroker
from pushsvc.core.partitions import partition_of
from pushsvc.core.updates import Update, UpdateDraft

LEASE_US = 10_000_000
"""Long enough for any one publish; the lease is given up right after it."""
_ONE_AT_A_TIME = threading.Lock()
"""A test's publishers (threads, several brokers) take turns, as the holders of one lease
do: each holds the lease from its take to its release."""


def publish(broker: LogBroker, drafts: Sequence[UpdateDraft]) -> list[Update]:
    """The drafts published, partition by partition (see the module's doc)."""
    by_partition: dict[int, list[UpdateDraft]] = {}
    for draft in drafts:
        by_partition.setdefault(partition_of(draft.topic, broker.partitions), []).append(draft)
    published: list[Update] = []
    for index, of_partition in by_partition.items():
        published += publish_partition(broker, index, of_partition)
    return published


def publish_partition(broker: LogBroker, index: int, drafts: Sequence[UpdateDraft]) -> list[Update]:
    """`drafts` as one batch of partition `index` (alert changes go with the partition of
    the topics they watch, as an aggregator's do)."""
    shard = (index, broker.partitions)
    # Both leases renew and release; the protocol names only what an aggregator calls.
    with _ONE_AT_A_TIME:
        return _under_lease(broker, shard, drafts)


def _under_lease(
    broker: LogBroker, shard: tuple[int, int], drafts: Sequence[UpdateDraft]
) -> list[Update]:
    index = shard[0]
    lease: Any = broker.lease(shard, ttl_us=LEASE_US)
    try:
        assert lease.renew(), f"partition {index}'s lease is held by another"
        log = broker.event_log(shard)
        try:
            after = log.applied()
            entry = log.append_ticks(lease.token, {}, after)
            assert entry is not None
        finally:
            log.close()
        return broker.publish_updates(
            drafts, applied=Applied(shard, entry, 1, after), fence=lease.token
        )
    finally:
        lease.release()
        lease.close()


def publish_applied(
    broker: LogBroker,
    shard: tuple[int, int],
    drafts: Sequence[UpdateDraft],
    entry_id: str,
    after: str,
) -> list[Update]:
    """`drafts` as a test's own aggregator publishes them, having applied the shard's log
    entry `entry_id` (the one after `after`): under the shard's lease, recorded as applied."""
    with _ONE_AT_A_TIME:
        lease: Any = broker.lease(shard, ttl_us=LEASE_US)
        try:
            assert lease.renew(), f"partition {shard[0]}'s lease is held by another"
            return broker.publish_updates(
                drafts, applied=Applied(shard, entry_id, 1, after), fence=lease.token
            )
        finally:
            lease.release()
            lease.close()
