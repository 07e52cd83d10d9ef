"""One round trip for many partitions' commands, which a dead node fails only in part.

A Redis Cluster pipeline opens a connection to every node its commands go to before it sends
anything, and one node that refuses (killed, not yet replaced by its replica, or never: a
primary without a replica) fails the whole pipeline. An aggregator that renews the leases and
reads the logs of all its partitions in one pipeline then stalls every partition for one
node's: the partitions on the healthy primaries lose their leases and stop publishing
until the dead node's slots have a primary again. `by_node` sends one pipeline per node, at
the same time, so a node's failure is the reply of its own commands only. On one Redis (or
Sentinel) it is one pipeline.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

import gevent
import redis
from redis.cluster import RedisCluster
from redis.exceptions import ClusterError, RedisClusterException

__all__ = ["Queued", "by_node", "routed"]

Queued = tuple[str, Callable[[Any], object]]
"""A key, and what queues exactly one command on that key's pipeline (called with it)."""


def routed(pipe: object, key: str) -> dict[str, Any]:
    """The options that send a command on `key` straight to the node of its slot, on a
    cluster pipeline (none elsewhere). redis-py routes EVAL and EVALSHA by the keys they
    name, but asks the cluster's default node which keys a command with movable keys names
    (`COMMAND GETKEYS`, for XREAD among them) before routing it: a round trip more, and when
    that node is the one that died (re-reading the topology makes the first primary listed
    the default again, dead or not) every such pipeline fails. Naming the node serves every
    command alike."""
    if isinstance(pipe, RedisCluster):  # a ClusterPipeline is one
        return {"target_nodes": pipe.get_node_from_key(key)}  # type: ignore[no-untyped-call]
    return {}


def by_node(client: redis.Redis, calls: Sequence[Queued]) -> list[Any]:
    """The reply of each call's command, in order; a command that failed (its node could not
    be reached, or Redis refused it) has the error as its reply (a `redis.RedisError`)."""
    # `connect.py` types a cluster client as the `redis.Redis` whose commands it shares.
    cluster = cast(object, client)
    if not isinstance(cluster, RedisCluster):
        pipe = client.pipeline(transaction=False)
        for _, queue in calls:
            queue(pipe)
        return pipe.execute(raise_on_error=False)
    replies: list[Any] = [None] * len(calls)
    groups: dict[str, list[int]] = {}
    for place, (key, _) in enumerate(calls):
        try:
            node = cluster.get_node_from_key(key)  # type: ignore[no-untyped-call]
        except RedisClusterException as exc:  # a slot no node serves
            replies[place] = ClusterError(str(exc))
            continue
        groups.setdefault(node.name, []).append(place)

    def send(places: list[int]) -> None:
        pipe = client.pipeline(transaction=False)
        for place in places:
            calls[place][1](pipe)
        try:
            answers: list[Any] = pipe.execute(raise_on_error=False)
        except redis.RedisError as exc:
            answers = [exc] * len(places)
        except RedisClusterException as exc:
            answers = [ClusterError(str(exc))] * len(places)
        for place, answer in zip(places, answers, strict=True):
            replies[place] = answer

    if len(groups) == 1:
        send(next(iter(groups.values())))
    else:
        gevent.joinall([gevent.spawn(send, places) for places in groups.values()])
    return replies
