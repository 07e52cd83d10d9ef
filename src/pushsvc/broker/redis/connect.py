"""Redis clients for the broker, the event log and the lease, made from one URL.

No silent retries anywhere: a retried append or script could apply twice, and a caller must
hear about an outage at once (a 503), not after a backoff it did not choose.

With a `redis+sentinel://` URL every client asks the sentinels for the current primary when
it connects, and drops a connection that finds itself on a demoted one, so after a failover
the next command or the next pub/sub reconnect reaches the new primary.

With a `redis+cluster://` URL every client is a `RedisCluster`: it routes each command (each
script, by its keys' one slot) to the primary that owns the slot, and follows MOVED, ASK and
TRYAGAIN itself (the command did not run, so going again cannot apply it twice). A lost
connection or a slot with no primary is raised at once like on one Redis (a 503), after the
client has re-read the cluster's topology for the next command: the process's one view of it
(`cluster_view.py`), which every cluster client and sharded reader shares. Plain pub/sub (the
bridge's ingest channels) is the exception: one node hears every PUBLISH there, chosen again
at each connection (`pubsub_clients`).

A cluster client's per-node pools are made as the one-Redis path's pool is: `pooled_client`'s
wait for a free connection (`BlockingConnectionPool`, at most `timeout` seconds) rather than
raise "Too many connections" at their bound, which would end a stream on a momentary burst.
redis-py hands a `connection_pool_class` to the node pools only of a `RedisCluster` made from
a URL, so the cluster is made from its first seed's URL, the other seeds as startup nodes.
"""

from __future__ import annotations

import contextlib
from typing import Any, cast

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool

from pushsvc.broker.redis.broadcast_node import BroadcastNodes
from pushsvc.broker.redis.cluster_view import shared_view
from pushsvc.broker.redis.pubsub import Clients
from pushsvc.broker.redis.shared_slot_map import follow_view
from pushsvc.broker.redis.url import (
    is_cluster,
    is_sentinel,
    parse_cluster_url,
    parse_sentinel_url,
    redact_url,
)
from pushsvc.errors import UnsafeRedis


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


class _RefreshingPipeline(ClusterPipeline):
    """A cluster pipeline that re-reads the topology when a node cannot be reached, as
    `RedisCluster` does for a single command: otherwise every later pipeline goes to the node
    that died, long after its replica took its slots over."""

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        try:
            return super().execute(raise_on_error)
        except (RedisConnectionError, RedisTimeoutError):
            with contextlib.suppress(redis.RedisError, RedisClusterException):
                self.nodes_manager.initialize()
            raise


class _Cluster(RedisCluster):
    def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> ClusterPipeline:
        pipe: ClusterPipeline = super().pipeline(  # type: ignore[no-untyped-call]
            transaction, shard_hint
        )
        pipe.__class__ = _RefreshingPipeline  # the same object, refreshing on failure
        return pipe


def _seed_url(host: str, port: int, *, tls: bool) -> str:
    """A seed as the `redis://` URL redis-py's `RedisCluster` reads its first node from (the
    scheme says TLS; credentials are passed apart, unquoted)."""
    shown = f"[{host}]" if ":" in host else host
    return f"{'rediss' if tls else 'redis'}://{shown}:{port}"


def _cluster(
    url: str,
    *,
    max_connections: int,
    pool_class: type[redis.ConnectionPool] = redis.ConnectionPool,
    **options: Any,
) -> redis.Redis:
    """A `RedisCluster` (typed as the `redis.Redis` whose commands it shares: the broker
    calls only commands both have, and every script's keys are in one slot), each node's
    connections in a `pool_class` of `max_connections` (see the module docstring)."""
    parsed = parse_cluster_url(url)
    (host, port), *others = parsed.seeds
    try:
        cluster = _Cluster(
            url=_seed_url(host, port, tls=parsed.tls),
            startup_nodes=[
                ClusterNode(other_host, other_port)  # type: ignore[no-untyped-call]
                for other_host, other_port in others
            ],
            username=parsed.username,
            password=parsed.password,
            connection_pool_class=pool_class,
            max_connections=max_connections,
            # A slot without a primary answers 503 for its partitions only; the others serve.
            require_full_coverage=False,
            **options,
        )
    except RedisClusterException as exc:
        # A node without cluster mode, or no seed answering: one line at start.
        hint = (
            "it is not a Redis Cluster: use a redis:// URL"
            if "not enabled" in str(exc)
            else "no seed node answered as a cluster node"
        )
        raise UnsafeRedis(f"{redact_url(url)}: {hint} ({exc})") from None
    # One slot map per process, shared with the sharded readers and the bridge's node.
    follow_view(cluster, shared_view(url))
    return cast(redis.Redis, cluster)


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
    if is_cluster(url):
        del options["max_connections"]  # `timeout` is the node pools' wait, as above
        return _cluster(
            url,
            max_connections=max_connections,
            pool_class=redis.BlockingConnectionPool,
            **options,
        )
    return redis.Redis(connection_pool=redis.BlockingConnectionPool.from_url(url, **options))


def pubsub_clients(url: str, *, name: str) -> Clients:
    """What a `PubSubReader` for plain (not sharded) pub/sub connects through. On one Redis or
    Sentinel, `single_client` with no socket timeout (Sentinel's pool finds the primary at each
    connection). On a Redis Cluster, a factory that picks a live node at each connection, its
    connection named `name` (`broadcast_node.BroadcastNodes`): a PUBLISH reaches every node
    there, so any one of them hears the producers' ingest channels, but a fixed one may die."""
    if not is_cluster(url):
        return single_client(url, socket_timeout=None)
    return BroadcastNodes(url, client_name=name, view=shared_view(url))


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
    if is_cluster(url):
        return _cluster(url, max_connections=4, **options)
    return redis.Redis.from_url(url, **options)
