"""What operators, `/readyz` and `/metrics` read of the Redis deployment, apart from the
traffic: which primaries hold pushsvc's partitions, the oldest Redis version among them,
whether it runs in cluster mode, the bridge's counts, the topics each partition keeps, and
each partition's lag. Plain reads of keys `keys.py` names, with no script and no state of their
own: `RedisBroker` keeps its clients and answers through these (the traffic, appends,
publishes, reads of the history, stays in `broker.py`).
"""

from __future__ import annotations

import time
from typing import Any, cast

import redis
from redis.cluster import RedisCluster
from redis.exceptions import ResponseError

from pushsvc.broker.base import BridgeStats, ShardLag
from pushsvc.broker.redis.keys import Keys, PartitionKeys
from pushsvc.broker.redis.wire import stream_position, unavailable


def primaries(client: redis.Redis, on_cluster: bool) -> list[redis.Redis]:
    """A client of each primary (one Redis: its one client)."""
    if not on_cluster:
        return [client]
    cluster = cast(RedisCluster, client)
    found = cluster.get_primaries()  # type: ignore[no-untyped-call]
    return [cluster.get_redis_connection(node) for node in found]


def by_primary(
    client: redis.Redis, on_cluster: bool, keys: Keys
) -> dict[redis.Redis, list[PartitionKeys]]:
    """The partitions each primary holds now, by a client of that primary (one Redis:
    every partition, on its one client)."""
    if not on_cluster:
        return {client: list(keys)}
    cluster = cast(RedisCluster, client)
    found: dict[redis.Redis, list[PartitionKeys]] = {}
    for part in keys:
        node = cluster.get_node_from_key(part.log)  # type: ignore[no-untyped-call]
        found.setdefault(cluster.get_redis_connection(node), []).append(part)
    return found


def oldest_version(clients: list[redis.Redis]) -> tuple[tuple[int, ...], str] | None:
    """The oldest `redis_version` among `clients` (`INFO server`), as numbers and as Redis
    gives it; None where none will say."""
    found: list[tuple[tuple[int, ...], str]] = []
    with unavailable("info server"):
        for client in clients:
            try:
                text = str(client.info("server").get("redis_version", ""))
            except ResponseError:  # INFO refused (renamed or not permitted)
                continue
            numbers = tuple(int(n) for n in text.split(".") if n.isdigit())
            if numbers:
                found.append((numbers, text))
    return min(found) if found else None


def is_cluster_node(client: redis.Redis) -> bool:
    """Whether the Redis `client` reaches runs in cluster mode (`INFO cluster`); False
    where it will not say."""
    with unavailable("info cluster"):
        try:
            info: dict[str, Any] = client.info("cluster")
        except ResponseError:  # INFO refused (renamed or not permitted)
            return False
    return bool(info.get("cluster_enabled"))


def count_bridged(client: redis.Redis, keys: Keys, events: int, rejected: dict[str, int]) -> None:
    """Add to the bridge's counts (see `bridge_stats`)."""
    if not events and not rejected:
        return
    with unavailable("count_bridged"), client.pipeline(transaction=False) as pipe:
        if events:
            pipe.hincrby(keys.bridged, "events", events)
        for reason, count in rejected.items():
            pipe.hincrby(keys.bridged, f"rejected:{reason}", count)
        pipe.execute()


def bridge_stats(client: redis.Redis, keys: Keys) -> BridgeStats:
    """Whether a bridge holds its lease, and what it has bridged and rejected so far."""
    with unavailable("bridge_stats"), client.pipeline(transaction=False) as pipe:
        pipe.exists(keys.bridge_lease)
        pipe.hgetall(keys.bridged)
        active, counts = pipe.execute()
    rejected = {
        key.decode()[len("rejected:") :]: int(value)
        for key, value in counts.items()
        if key.startswith(b"rejected:")
    }
    return BridgeStats(bool(active), int(counts.get(b"events", 0)), rejected)


def topic_counts(client: redis.Redis, parts: list[PartitionKeys]) -> list[tuple[int, int]]:
    """(topics kept, topics forgotten) of each of `parts`, all held by `client`'s primary;
    raises BrokerUnavailable when it does not answer."""
    with unavailable("topic_stats"), client.pipeline(transaction=False) as pipe:
        for part in parts:
            pipe.hlen(part.clocks)
            pipe.get(part.forgotten)
        replies = pipe.execute()
    return [
        (int(replies[2 * place]), int(replies[2 * place + 1] or 0)) for place in range(len(parts))
    ]


def read_lag(client: redis.Redis, keys: Keys, partitions: int) -> list[ShardLag]:
    """Per partition: entries logged but not applied, the age of the oldest, whether an
    aggregator holds the partition's lease, and the digest of the rules it applies."""
    parts = list(keys)
    with unavailable("lag"), client.pipeline(transaction=False) as pipe:
        for part in parts:
            pipe.get(part.logged)
            pipe.hmget(part.applied, ["id", "n"])
            pipe.exists(part.lease)
            pipe.get(part.rules)
        replies = pipe.execute()
    lags = []
    now_ms = time.time() * 1000
    for place, part in enumerate(parts):
        logged, (applied_id, applied_n), leased, digest = replies[4 * place : 4 * place + 4]
        entries = max(0, int(logged or 0) - int(applied_n or 0))
        oldest_age_s = None
        if entries:
            start = b"(" + applied_id if applied_id else b"-"
            with unavailable("lag"):
                first: Any = client.xrange(part.log, min=start, count=1)
            if first:
                oldest_age_s = max(0.0, (now_ms - stream_position(first[0][0])[0]) / 1000)
        rules = digest.decode() if digest is not None else None
        shard = (part.index, partitions)
        lags.append(ShardLag(shard, entries, oldest_age_s, bool(leased), rules))
    return lags
