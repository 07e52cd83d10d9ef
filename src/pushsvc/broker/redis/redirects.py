"""A pipeline sent to the primary of one key's slot on a Redis Cluster, following the cluster's
redirects as redis-py follows them for its own commands.

Some calls must run on one node's own connection (an append and the `WAIT` that confirms it:
`WAIT` counts the replicas of the connection's writes), so redis-py's cluster client cannot
send them for us. What it would do, done here:

* `MOVED`: the slot has a new owner. Read the topology again, and send to the owner it names.
* `ASK`: the slot is being migrated and the key has already left: send the pipeline to the
  node the redirect names, prefixed with `ASKING` (valid for the next command only), without
  changing the slot map (the slot still belongs to the old owner until the move ends).
* `TRYAGAIN`: a multi-key command met the slot half moved (some of its keys on each node):
  pause, and send it again where it went. A reshard moves a slot's keys in milliseconds.

Each of them means the command did not run, so sending it again cannot apply it twice.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any, cast

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import AskError, MovedError, RedisClusterException, TryAgainError

from pushsvc.errors import BrokerUnavailable

MAX_REDIRECTS = 5
"""`MOVED` and `ASK` followed for one call (a slot moving twice while we send is rare)."""
TRYAGAIN_PAUSE_S = 0.05
"""redis-py's own pause before it sends a command that met `TRYAGAIN` again."""
TRYAGAIN_FOR_S = 2.0
"""How long a half-moved slot is waited for before the call gives up (503, retried)."""

Queue = Callable[[redis.client.Pipeline], None]
"""Queues the call's commands on a pipeline of the owner's connection."""


def on_slot_owner(
    client: redis.Redis,
    key: str,
    queue: Queue,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> list[Any]:
    """The replies of the commands `queue` puts on a pipeline, sent (on a cluster) to the node
    that serves `key`'s slot now, redirects followed. Raises BrokerUnavailable when the slot
    keeps moving; connection errors pass through, after the topology is read again."""
    # `connect.py` types a cluster client as the `redis.Redis` whose commands it shares.
    cluster = cast(object, client)
    if not isinstance(cluster, RedisCluster):
        return _send(client, queue, asking=False)
    asked: ClusterNode | None = None
    redirects = 0
    half_moved_since: float | None = None
    while True:
        node = asked or cluster.get_node_from_key(key)  # type: ignore[no-untyped-call]
        try:
            return _send(cluster.get_redis_connection(node), queue, asking=asked is not None)
        except AskError as exc:
            asked = _node(cluster, exc.host, exc.port)
            redirects += 1
        except MovedError:
            asked = None
            learn_topology(client)
            redirects += 1
        except TryAgainError:
            now = clock()
            half_moved_since = now if half_moved_since is None else half_moved_since
            if now - half_moved_since >= TRYAGAIN_FOR_S:
                raise BrokerUnavailable("the partition's slot is being moved; retry") from None
            sleep(TRYAGAIN_PAUSE_S)
            continue
        except (redis.ConnectionError, redis.TimeoutError):
            # The node went away (a failover?): the next call asks the new owner.
            learn_topology(client)
            raise
        if redirects > MAX_REDIRECTS:
            raise BrokerUnavailable("the partition's slot kept moving; retry")


def learn_topology(client: redis.Redis) -> None:
    """Read the cluster's slots again, after a node failed or a slot moved under a call made on
    one node's own connection (RedisCluster does so itself for its own calls): a refresh of
    the process's one view (`shared_slot_map.py`), which moves every consumer of it."""
    cluster = cast(object, client)
    if isinstance(cluster, RedisCluster):
        with contextlib.suppress(redis.RedisError, RedisClusterException):
            cluster.nodes_manager.initialize()


def _send(client: redis.Redis, queue: Queue, *, asking: bool) -> list[Any]:
    with client.pipeline(transaction=False) as pipe:
        if asking:
            pipe.execute_command("ASKING")  # type: ignore[no-untyped-call]
        queue(pipe)
        replies: list[Any] = pipe.execute()
    return replies[1:] if asking else replies


def _node(cluster: RedisCluster, host: str, port: int) -> ClusterNode:
    """The node an `ASK` names (a member the client may not have met yet)."""
    node = cluster.get_node(host=host, port=port)  # type: ignore[no-untyped-call]
    if node is None:
        learn_topology(cast(redis.Redis, cluster))
        node = cluster.get_node(host=host, port=port)  # type: ignore[no-untyped-call]
    if node is None:
        raise BrokerUnavailable(f"a redirect named {host}:{port}, a node not in the cluster")
    return cast(ClusterNode, node)
