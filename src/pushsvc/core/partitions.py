"""Partitions: which of `count` partitions owns a topic.

A partition is the unit of ordering, ownership and placement (docs/scaling.md, Redis Cluster).
Topics map to partitions by crc32 of the name, modulo the count: the same hash `--shard i/N`
has always used, so a deployment that moves from shards to partitions keeps its topics where
they were. crc32 (not Python's `hash`) because every process on every host must agree.

A topic's late stream (`<topic>.late`) lives in its topic's partition: its hash is its
topic's. So one append step on one partition (one Redis Cluster slot) logs a batch's on-time
events and its events past the grace together (`pushsvc.core.lateness`).

One group of topics is placed together, whatever their names: the Mercure hub's
(`HUB_PREFIX`, `HUB_TOPICS`: its updates and its subscription events). The Mercure
specification has a hub's ids be cursors into one hub-wide sequence, and a subscriber of
several topics expects one publisher's updates in the order they were published: kept in one
partition, they are one log, delivered in its order live and after any failover, and a
resume from any update's id is exact. The price is that the hub's updates go at the rate of
the one aggregator that owns that partition (docs/mercure.md, "One sequence").

Pure arithmetic: where a partition's keys live in a Redis Cluster is the broker's business
(`pushsvc.broker.redis.slots`).
"""

from __future__ import annotations

import zlib

from pushsvc.core.topics import ALERTS, LATE_SUFFIX, TopicMatcher

DEFAULT_PARTITIONS = 16
# Enough to spread over a large cluster, few enough that a stream's resume cursor (one
# position per partition) and the work of walking every partition stay small.
MAX_PARTITIONS = 1024

Partition = tuple[int, int]
"""A partition as the processes name it: its index and the partition count, `(9, 16)` (the
count travels with it so that a process started with another count cannot mistake it)."""


def check_partitions(count: int) -> int:
    """`count` if it is a valid partition count, else ValueError with a one-line message."""
    if not 1 <= count <= MAX_PARTITIONS:
        raise ValueError(f"the partition count must be between 1 and {MAX_PARTITIONS}, not {count}")
    return count


HUB_PREFIX = "mercure."
"""Every topic under it is the Mercure hub's (`pushsvc.deliver.mercure_updates.PREFIX`)."""
HUB_TOPICS = frozenset({"mercure-subscriptions"})
"""The hub's other topics (`pushsvc.deliver.mercure_subscriptions.SUBSCRIPTIONS_TOPIC`)."""
_HUB_KEY = b"mercure"
"""What the hub's topics are placed by, together."""


def is_hub_topic(topic: str) -> bool:
    """Whether `topic` is one of the Mercure hub's, placed together; only the hub appends to
    them (`pushsvc.ingest.accept`): a Mercure update is made only by the hub's publication,
    after the hub's authorization."""
    return topic.startswith(HUB_PREFIX) or topic in HUB_TOPICS


def partition_of(topic: str, count: int) -> int:
    """The partition (0..count-1) that owns `topic`: the crc32 of its name, or of the hub's
    key for the Mercure hub's topics (module docstring).

    `count` is not checked here (this runs for every event): check it once where it is read,
    with `check_partitions`. A late stream is placed by its topic's name (a late stream's
    late stream too: every `.late` at the end is taken off)."""
    while topic.endswith(LATE_SUFFIX):
        topic = topic[: -len(LATE_SUFFIX)]
    if topic.startswith("mercure") and is_hub_topic(topic):
        return zlib.crc32(_HUB_KEY) % count
    return zlib.crc32(topic.encode()) % count


def partitions_matching(match: TopicMatcher, partitions: int) -> list[int]:
    """The partitions that may hold a topic `match` takes: those of its names when it holds
    names only (`_alerts`' changes go with every partition's), the hub's alone when its
    patterns are all under the hub's prefix and its names the hub's, else every one."""
    if match.exact and ALERTS not in match.names:
        return sorted({partition_of(name, partitions) for name in match.names})
    if (
        not match.everything
        and all(prefix.startswith(HUB_PREFIX) for prefix in match.prefixes)
        and all(is_hub_topic(name) for name in match.names)
    ):
        return [partition_of(HUB_PREFIX, partitions)]
    return list(range(partitions))
