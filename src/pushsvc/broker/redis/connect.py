"""Redis clients for the broker, the event log and the lease, made from one URL.

No silent retries anywhere: a retried append or script could apply twice, and a caller must
hear about an outage at once (a 503), not after a backoff it did not choose.
"""

from __future__ import annotations

from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry


def _timeouts(url: str, socket_timeout: float | None) -> dict[str, Any]:
    options: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": 5.0 if socket_timeout is None else socket_timeout,
    }
    if not url.startswith("unix:"):
        options["socket_keepalive"] = True  # TCP only: notices a peer that vanished
    return options


def pooled_client(url: str, *, max_connections: int, socket_timeout: float) -> redis.Redis:
    """Commands from many greenlets: a bounded pool, so a burst of new streams (each reads a
    snapshot) waits for a free connection instead of opening one per client."""
    pool = redis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=socket_timeout,
        retry=Retry(NoBackoff(), 0),
        **_timeouts(url, socket_timeout),
    )
    return redis.Redis(connection_pool=pool)


def single_client(url: str, *, socket_timeout: float | None) -> redis.Redis:
    """One caller at a time (a pub/sub reader, a log reader blocked in XREAD, a lease), with no
    error handling of its own: redis-py would otherwise reconnect and resubscribe behind the
    back of a reader that starts over by itself."""
    return redis.Redis.from_url(
        url, retry=Retry(NoBackoff(), 0, supported_errors=()), **_timeouts(url, socket_timeout)
    )
