"""The Redis broker: `broker.py` (append, publish, history), `log.py` (a shard's event log
for its aggregators), `pubsub.py` (one pub/sub connection per process), `keys.py` (names),
`connect.py` (clients)."""

from __future__ import annotations

from pushsvc.broker.redis.broker import RedisBroker
from pushsvc.broker.redis.feed import RedisUpdatesFeed

__all__ = ["RedisBroker", "RedisUpdatesFeed"]
