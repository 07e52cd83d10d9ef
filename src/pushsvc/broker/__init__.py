"""Brokers: `make_broker` picks the implementation from the settings."""

from __future__ import annotations

from pushsvc.broker.base import Broker


def make_broker(
    redis_url: str | None,
    *,
    prefix: str,
    history: int,
    shards: int = 1,
    min_replicas: int = 0,
    max_topics: int = 100_000,
) -> Broker:
    """The Redis broker when a URL is given, else the embedded one-process memory broker.

    `prefix` only matters for Redis (it namespaces keys and channels).
    """
    if redis_url is None:
        from pushsvc.broker.memory import MemoryBroker

        return MemoryBroker(history=history, max_topics=max_topics)
    # Imported here so that the embedded mode never imports redis-py.
    from pushsvc.broker.redis import RedisBroker

    return RedisBroker(
        redis_url,
        prefix=prefix,
        history=history,
        shards=shards,
        min_replicas=min_replicas,
        max_topics=max_topics,
    )
