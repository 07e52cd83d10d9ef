"""The Redis broker: `broker.py` (append, publish, history), `log.py` (a shard's event log
for its aggregators), `pubsub.py` (one pub/sub connection per process), `keys.py` (names),
`connect.py` (clients).

`RedisBroker` and `RedisUpdatesFeed` are imported on first use: the settings read
`url.py` (which is plain Python) in every process and tool, and importing this package must
not import redis-py there (the embedded mode and the command-line tools never need it, and
it slows every `pushsvc` command's start: docs/journal/regroup.md, 'The suite is no
slower').
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pushsvc.broker.redis.broker import RedisBroker
    from pushsvc.broker.redis.feed import RedisUpdatesFeed

__all__ = ["RedisBroker", "RedisUpdatesFeed"]

_HOMES = {
    "RedisBroker": "pushsvc.broker.redis.broker",
    "RedisUpdatesFeed": "pushsvc.broker.redis.feed",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
