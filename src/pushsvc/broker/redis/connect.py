"""Redis clients for the broker, the event log and the lease, made from one URL.

No silent retries anywhere: a retried append or script could apply twice, and a caller must
hear about an outage at once (a 503), not after a backoff it did not choose.

With a `redis+sentinel://` URL every client asks the sentinels for the current primary when
it connects, and drops a connection that finds itself on a demoted one, so after a failover
the next command or the next pub/sub reconnect reaches the new primary.
"""

from __future__ import annotations

from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool

from pushsvc.broker.redis.url import is_sentinel, parse_sentinel_url


class _BlockingSentinelPool(SentinelConnectionPool, redis.BlockingConnectionPool):
    """The primary's connections, bounded like `BlockingConnectionPool` (a caller waits for a
    free one), found through the sentinels like `SentinelConnectionPool`."""


def _timeouts(url: str, socket_timeout: float | None) -> dict[str, Any]:
    options: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": 5.0 if socket_timeout is None else socket_timeout,
    }
    if not url.startswith("unix:"):
        options["socket_keepalive"] = True  # TCP only: notices a peer that vanished
    return options


def _primary(url: str, pool_class: type[SentinelConnectionPool], **options: Any) -> redis.Redis:
    parsed = parse_sentinel_url(url)
    sentinel_options: dict[str, Any] = {
        "socket_timeout": 1.0,  # a dead sentinel must not hold up asking the next one
        "socket_connect_timeout": 1.0,
    }
    if parsed.sentinel_password is not None:
        sentinel_options["password"] = parsed.sentinel_password
    # redis.sentinel has no type annotations.
    sentinels = Sentinel(  # type: ignore[no-untyped-call]
        list(parsed.sentinels), sentinel_kwargs=sentinel_options
    )
    primary: redis.Redis = sentinels.master_for(  # type: ignore[no-untyped-call]
        parsed.service,
        connection_pool_class=pool_class,
        db=parsed.db,
        username=parsed.username,
        password=parsed.password,
        **options,
    )
    return primary


def pooled_client(url: str, *, max_connections: int, socket_timeout: float) -> redis.Redis:
    """Commands from many greenlets: a bounded pool, so a burst of new streams (each reads a
    snapshot) waits for a free connection instead of opening one per client."""
    options: dict[str, Any] = {
        "max_connections": max_connections,
        "timeout": socket_timeout,
        "retry": Retry(NoBackoff(), 0),
        **_timeouts(url, socket_timeout),
    }
    if is_sentinel(url):
        return _primary(url, _BlockingSentinelPool, **options)
    return redis.Redis(connection_pool=redis.BlockingConnectionPool.from_url(url, **options))


def single_client(url: str, *, socket_timeout: float | None) -> redis.Redis:
    """One caller at a time (a pub/sub reader, a log reader blocked in XREAD, a lease), with no
    error handling of its own: redis-py would otherwise reconnect and resubscribe behind the
    back of a reader that starts over by itself."""
    options: dict[str, Any] = {
        "retry": Retry(NoBackoff(), 0, supported_errors=()),
        **_timeouts(url, socket_timeout),
    }
    if is_sentinel(url):
        return _primary(url, SentinelConnectionPool, **options)
    return redis.Redis.from_url(url, **options)
