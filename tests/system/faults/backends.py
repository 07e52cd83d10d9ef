"""The two Redis deployments the fault suites run on: one redis-server, or a Redis Cluster (3
primaries, a replica each: the session's `redis_cluster`, harness/redis_cluster.py).

A test takes the `store` fixture (conftest.py), whose deployment its `backend` parameter names:
"redis" unless the test's parameters say "cluster". `on_both` makes those parameters: every
combination on one redis-server, and each case once on the cluster, so that the cluster's
share of the suite grows with the cases, not with the lease periods or runs they are
crossed with. Every case keeps to a key prefix of its own either way (a prefix holds no
brace: the partitions' hash tags are the only ones in a key).

To keep the suite's time bounded, a module names the cases that run on the cluster by default:
those whose path differs there (sharded pub/sub, the wake channel, fences and checkpoints per
partition, partitions on several primaries), not those that only move a lease's timing, which
is one key either way. `TEST_PUSHSVC_EVERY_CASE_ON_CLUSTER=1` runs every case on the cluster
too.

What differs on a cluster, for a test that looks at Redis itself:

* a client follows the slots (`client`);
* a topic's updates go by `SPUBLISH` to the primary of their partition's slot, so a raw
  subscriber sends `SSUBSCRIBE` there (`updates_subscription`);
* a `PUBLISH` reaches every node's subscribers but counts only the node's own, so a producer
  that wants to know whether the bridge heard publishes on the bridge's node (`ingest_port`).
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Sequence
from itertools import product
from typing import Any, cast

import pytest
import redis
from harness.redis_cluster import RedisClusterServers
from harness.redis_server import RedisServer
from redis.cluster import ClusterNode, RedisCluster

from pushsvc.broker.redis.cluster_topology import channel_slot

Store = RedisServer | RedisClusterServers
"""Where a case's processes keep their data (`.url` is what they are given)."""

BACKENDS = ("redis", "cluster")

ON_CLUSTER = pytest.mark.cluster
"""The mark of a cluster case: `-m "not cluster"` leaves them out."""

EVERY_CASE_ON_CLUSTER = os.environ.get("TEST_PUSHSVC_EVERY_CASE_ON_CLUSTER") == "1"
"""Run every case on the cluster too, not only the ones a module names."""


def on_both(
    cases: Iterable[Any], *crossed: Sequence[Any], cluster: Collection[Any] | None = None
) -> list[Any]:
    """Parameters `(case, *one of each of crossed, backend)`: every combination on one
    redis-server (ids as if there were no backend: `{case}-{crossed…}`), and each case of
    `cluster` (every case when None or `EVERY_CASE_ON_CLUSTER`) once on the cluster, with the
    first value of each of `crossed` (id `{case}-cluster`). Use with `indirect=["backend"]`."""
    rows = []
    for case in cases:
        for combination in product(*crossed):
            name = "-".join(str(value) for value in (case, *combination))
            rows.append(pytest.param(case, *combination, "redis", id=name))
        if cluster is None or EVERY_CASE_ON_CLUSTER or case in cluster:
            first = [values[0] for values in crossed]
            rows.append(
                pytest.param(case, *first, "cluster", id=f"{case}-cluster", marks=ON_CLUSTER)
            )
    return rows


def both(*, cluster: bool = True) -> list[Any]:
    """The `backend` parameter of a test with no other (`indirect=True`): once on one
    redis-server, and (unless `cluster` is False and not `EVERY_CASE_ON_CLUSTER`) once on the
    cluster."""
    rows = [pytest.param("redis", id="redis")]
    if cluster or EVERY_CASE_ON_CLUSTER:
        rows.append(pytest.param("cluster", id="cluster", marks=ON_CLUSTER))
    return rows


BOTH = both()


def client(store: Store) -> redis.Redis:
    """A client of `store` (on a cluster, a `RedisCluster`, typed as the `redis.Redis` whose
    single-key commands it shares); close it after use."""
    if isinstance(store, RedisClusterServers):
        nodes = [ClusterNode("127.0.0.1", node.port) for node in store.live]  # type: ignore[no-untyped-call]
        return cast(redis.Redis, RedisCluster(startup_nodes=nodes))
    return redis.Redis.from_url(store.url)


def updates_subscription(store: Store, channel: bytes) -> tuple[int, str]:
    """Where, and with which command, a raw subscriber hears `channel`'s updates: the
    redis-server with `SUBSCRIBE`; on a cluster, the primary of its slot with `SSUBSCRIBE`."""
    if isinstance(store, RedisClusterServers):
        return store.owner_of(channel_slot(channel)).port, "SSUBSCRIBE"
    return store.port, "SUBSCRIBE"


def ingest_port(store: Store) -> int:
    """The node to PUBLISH producers' events on so that its answer counts the bridge: on a
    cluster, the first seed of the URL, which the bridge subscribes on while it answers and
    no node has died (`pushsvc.broker.redis.broadcast_node`; these cases kill none)."""
    if isinstance(store, RedisClusterServers):
        return store.nodes[0].port
    return store.port
