"""Publishing drafts in a test or a benchmark the way the product does: as an aggregator's
batch, fenced by its shard's lease and recorded as covering a log entry
(`Broker.publish_updates(drafts, applied=..., fence=...)`, the broker's one way to publish),
on any `LogBroker` (memory, Redis, a Redis Cluster).

`publish(broker, drafts)` splits the drafts by their topics' partitions, and for each takes
the shard's lease, logs an empty tick entry after the applied position (what the batch
covers), publishes the partition's drafts under the lease with that entry as applied, and
gives the lease up. So what the history, replay, latest and the feed do with updates is
reached through the one publish step production takes. `covering_ticks` logs those entries
alone, for a caller that holds the lease across many publishes (a benchmark whose timed part
is the publish itself).

In harness/, not tests/support/: the benchmarks publish so too, and import no test code.
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
_TURNS: dict[tuple[int, int], threading.Lock] = {}
"""A shard's publishers in a test (threads, several brokers) take turns, as the holders of
its lease do: each holds the lease from its take to its release. Those of different shards
publish at once, as their aggregators do."""
_TURNS_MADE = threading.Lock()


def _turn(shard: tuple[int, int]) -> threading.Lock:
    with _TURNS_MADE:
        return _TURNS.setdefault(shard, threading.Lock())


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
    with _turn(shard):
        return _under_lease(broker, shard, drafts)


def _under_lease(
    broker: LogBroker, shard: tuple[int, int], drafts: Sequence[UpdateDraft]
) -> list[Update]:
    index = shard[0]
    lease: Any = broker.lease(shard, ttl_us=LEASE_US)
    try:
        assert lease.renew(), f"partition {index}'s lease is held by another"
        applied = covering_tick(broker, shard, lease.token)
        return broker.publish_updates(drafts, applied=applied, fence=lease.token)
    finally:
        lease.release()
        lease.close()


def covering_tick(broker: LogBroker, shard: tuple[int, int], token: str) -> Applied:
    """Log an empty tick entry in `shard` under the lease `token` holds, after the position
    recorded as published: the `Applied` of the next batch, which covers that entry."""
    (applied,) = covering_ticks(broker, shard, token, 1)
    return applied


def covering_ticks(
    broker: LogBroker, shard: tuple[int, int], token: str, count: int
) -> list[Applied]:
    """`count` empty tick entries logged at once under the lease `token` holds: the `Applied`
    of each of the next `count` batches, in order (each covers one entry, after the one
    before), for a benchmark that logs before it measures."""
    log = broker.event_log(shard)
    try:
        after = log.applied()
        covered = []
        for _ in range(count):
            entry = log.append_ticks(token, {}, after)
            assert entry is not None
            covered.append(Applied(shard, entry, 1, after))
            after = entry
        return covered
    finally:
        log.close()


def publish_applied(
    broker: LogBroker,
    shard: tuple[int, int],
    drafts: Sequence[UpdateDraft],
    entry_id: str,
    after: str,
) -> list[Update]:
    """`drafts` as a test's own aggregator publishes them, having applied the shard's log
    entry `entry_id` (the one after `after`): under the shard's lease, recorded as applied."""
    with _turn(shard):
        lease: Any = broker.lease(shard, ttl_us=LEASE_US)
        try:
            assert lease.renew(), f"partition {shard[0]}'s lease is held by another"
            return broker.publish_updates(
                drafts, applied=Applied(shard, entry_id, 1, after), fence=lease.token
            )
        finally:
            lease.release()
            lease.close()
