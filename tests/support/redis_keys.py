"""The Redis names a pushsvc process started by a test uses, for tests that look at Redis
itself (a lease, a log, a node subscription): computed by the product's own `Keys`, so that a
test names what the process names for the partition count it runs with."""

from __future__ import annotations

from pushsvc.broker.redis.keys import Keys, PartitionKeys
from pushsvc.core.partitions import DEFAULT_PARTITIONS

#: The partition count a process runs with when a test does not set one.
SERVER_PARTITIONS = DEFAULT_PARTITIONS


def server_keys(prefix: str, partitions: int = SERVER_PARTITIONS) -> Keys:
    return Keys(prefix, partitions)


def partition_keys(prefix: str, topic: str, partitions: int = SERVER_PARTITIONS) -> PartitionKeys:
    """The keys of `topic`'s partition."""
    return Keys(prefix, partitions).of(topic)


def updates_channel(prefix: str, topic: str, partitions: int = SERVER_PARTITIONS) -> str:
    """The channel a topic's updates are published on."""
    return (partition_keys(prefix, topic, partitions).updates_channel + topic.encode()).decode()
