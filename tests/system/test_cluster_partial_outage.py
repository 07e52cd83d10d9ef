"""A primary lost for good, with its replica: only its partitions stop.

On a real Redis Cluster (3 primaries, a replica each) with a web process and an aggregator
sharing 16 partitions, one primary and its replica are killed with SIGKILL, so that its
slots have no primary for as long as the test runs. The partitions of the other two
primaries must go on as if nothing happened: their POSTs answered 202, every update
streamed, their leases still held by the aggregator that held them; the lost partitions
answer 503 with `Retry-After`. (One pipeline for every partition's leases or log reads made
one dead node stall them all, until its slots had a primary again.)
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from faults.harness import FaultStack, Watcher, wait_for
from harness.live import post, request
from harness.redis_cluster import RedisClusterServers

from pushsvc.broker.redis.slots import partition_slot
from pushsvc.core.partitions import partition_of

pytestmark = [pytest.mark.redis, pytest.mark.cluster, pytest.mark.slow]

P = 16


@pytest.fixture
def cluster() -> Iterator[RedisClusterServers]:
    with RedisClusterServers() as made:
        yield made


def _topic_on(cluster: RedisClusterServers, owner: object, avoid: object) -> str:
    """A fresh topic whose partition is served by `owner` (or, with `owner` None, by any
    primary but `avoid`)."""
    for i in range(10_000):
        topic = f"part.{uuid.uuid4().hex[:6]}.{i}"
        node = cluster.owner_of(partition_slot(partition_of(topic, P), P))
        if node is owner or (owner is None and node is not avoid):
            return topic
    raise AssertionError("no topic name found")


def test_a_dead_primary_without_a_replica_stops_only_its_own_partitions(
    cluster: RedisClusterServers, prefix: str
) -> None:
    stack = FaultStack(cluster, prefix, env={"PUSHSVC_PARTITIONS": str(P)})  # type: ignore[arg-type]
    keys = stack.keys
    # The victim does not keep the aggregators' membership, whose loss is another matter
    # (no process could then see the others, so none takes what a dead one held).
    members = cluster.key_slot(keys.aggregators)
    victim = next(p for p in cluster.primaries() if cluster.owner_of(members) is not p)
    try:
        web = stack.start_web()
        aggregator = stack.start_aggregator()
        leases = {part.index: part.lease for part in keys}
        wait_for(
            lambda: all(aggregator.holds_lease(k) for k in leases.values()),
            30,
            "the aggregator to hold every partition",
        )
        healthy = _topic_on(cluster, None, victim)
        lost = _topic_on(cluster, victim, None)
        for topic in (healthy, lost):  # both topics known before the fault
            assert post(web.port, topic, {"value": 0.0})[0] == 202
        watcher = Watcher(stack, healthy, 0)
        watcher.start()
        assert watcher.subscribed.wait(10), "no snapshot"
        live = {
            index: key
            for index, key in leases.items()
            if cluster.owner_of(partition_slot(index, P)) is not victim
        }
        assert 0 < len(live) < P
        for replica in cluster.replicas_of(victim):
            cluster.kill(replica)
        cluster.kill(victim)

        # The lost partitions answer 503 once the web process finds the node gone.
        def refused() -> bool:
            status, headers, _ = request(web.port, "POST", f"/topics/{lost}/events", {"value": 1})
            return status == 503 and "retry-after" in {h.lower() for h in headers}

        wait_for(refused, 20, "a 503 with Retry-After for the lost partition")
        # ...and the aggregator finds their leases gone (a lease round after the kill).
        dead = [key for index, key in leases.items() if index not in live]
        wait_for(
            lambda: not any(aggregator.holds_lease(key) for key in dead),
            20,
            "the aggregator to find the dead primary's leases gone",
        )
        # The others: every POST acknowledged and streamed while the node stays dead.
        for n in range(1, 41):
            status = post(web.port, healthy, {"value": float(n)})[0]
            assert status == 202, f"POST {n} to a partition on a live primary: {status}"
        wait_for(
            lambda: [v for _, v, _ in watcher.received.updates][-1:] == [40.0],
            20,
            "every update of the live partition",
        )
        # (The update of the event posted before it subscribed may come first, once.)
        values = [v for _, v, _ in watcher.received.updates]
        assert values[values[:1] == [0.0] :] == [float(n) for n in range(1, 41)]
        watcher.stop()
        # The aggregator held every partition of the live primaries throughout.
        said = "".join(aggregator.output)
        for index, key in live.items():
            assert aggregator.holds_lease(key), f"partition {index} is no longer held"
            assert f"lost the lease {key}\n" not in said, f"partition {index} lapsed"
    finally:
        stack.stop()
