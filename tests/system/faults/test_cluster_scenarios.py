"""The fault suite on a real Redis Cluster (3 primaries, a replica each, of the test's own):
two web processes and two elastic aggregators sharing 16 partitions, streaming clients of one
topic that reconnect like EventSource, a producer posting under `MIN_REPLICAS=1`. The Redis
faults hit the primary that holds the watched topic's partition; the others kill an
aggregator (and add one) and a web process. Each test asserts the delivery
promise per watcher (`check_delivery`: every acknowledged event's update exactly once and in
order, the last update's windows the statistics of every applied event, no status but
202/503, no POST slower than 2 s).

Run with `-s` for each scenario's figures (docs/reliability.md)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from harness.live import request
from harness.redis_cluster import RedisClusterServers

from faults.harness import (
    FaultStack,
    Producer,
    Watcher,
    check_delivery,
    drain,
    under_load,
    wait_for,
)
from pushsvc.broker.redis.slots import partition_slot
from pushsvc.core.partitions import partition_of

pytestmark = [pytest.mark.redis, pytest.mark.cluster, pytest.mark.slow]

P = 16
WATCHERS = 10
LOAD_S = 3.0  # of steady load before and after each fault


@pytest.fixture
def cluster() -> Iterator[RedisClusterServers]:
    with RedisClusterServers() as made:
        yield made


@pytest.fixture
def deployment(cluster: RedisClusterServers, prefix: str) -> Iterator[FaultStack]:
    made = FaultStack(
        cluster,
        prefix,
        env={"PUSHSVC_PARTITIONS": str(P), "PUSHSVC_REDIS_MIN_REPLICAS": "1"},
    )
    try:
        for _ in range(2):
            made.start_web()
        for _ in range(2):
            made.start_aggregator()
        wait_for(lambda: _ready(made), 30, "every partition owned")
        yield made
    finally:
        made.stop()


def _ready(deployment: FaultStack) -> bool:
    return all(request(port, "GET", "/readyz")[0] == 200 for port in deployment.ports())


def _loaded(deployment: FaultStack) -> tuple[int, list[Watcher], Producer, float]:
    """Watchers and a producer of a fresh topic, after LOAD_S of steady load: the slot of the
    topic's partition, them, and when the load began."""
    topic, watchers, producer = under_load(deployment, WATCHERS)
    started = time.monotonic()
    time.sleep(LOAD_S)
    return partition_slot(partition_of(topic, P), P), watchers, producer, started


def _finish(name: str, watchers: list[Watcher], producer: Producer, started: float) -> None:
    time.sleep(LOAD_S)
    producer.stop()
    drain(watchers, producer, timeout=40)
    for watcher in watchers:
        watcher.stop()
    figures = check_delivery(watchers, producer)
    figures["seconds"] = round(time.monotonic() - started, 1)
    print(f"\n{name}: {json.dumps(figures)}")


def test_kill_9_of_the_primary_of_the_watched_partition(
    cluster: RedisClusterServers, deployment: FaultStack
) -> None:
    slot, watchers, producer, started = _loaded(deployment)
    old = cluster.owner_of(slot)
    acked_before = len(producer.acked)
    killed_at = time.monotonic()
    cluster.kill(old)
    dead_at = time.monotonic()
    wait_for(lambda: cluster.owner_of(slot) is not old, 30, "its replica promoted")
    promoted = time.monotonic() - killed_at
    # With MIN_REPLICAS=1 the promoted primary confirms appends again once it has a replica.
    cluster.add_replica(cluster.owner_of(slot))
    wait_for(lambda: len(producer.acked) > acked_before + 10, 30, "202s again")
    recovered = time.monotonic() - killed_at
    producer.note_unanswered(killed_at, dead_at)
    _finish("cluster: kill -9 of the partition's primary", watchers, producer, started)
    print(f"promoted after {promoted:.2f} s; POSTs acknowledged again {recovered:.2f} s")


def test_the_watched_partition_moved_to_another_primary_under_load(
    cluster: RedisClusterServers, deployment: FaultStack
) -> None:
    slot, watchers, producer, started = _loaded(deployment)
    source = cluster.owner_of(slot)
    target = next(p for p in cluster.primaries() if p is not source)
    moved_at = time.monotonic()
    # One key at a time, the load running between: appends meet the slot half moved.
    cluster.move_slot(slot, target, keys_at_once=1, between=lambda: time.sleep(0.02))
    moving_s = time.monotonic() - moved_at
    assert cluster.owner_of(slot) is target
    _finish("cluster: the partition's slot moved under load", watchers, producer, started)
    print(f"the slot moved in {moving_s:.2f} s")


def test_kill_9_of_an_aggregator_then_one_added(deployment: FaultStack) -> None:
    _, watchers, producer, started = _loaded(deployment)
    survivor = deployment.aggregators[1]
    deployment.kill_aggregator(deployment.aggregators[0])  # its partitions move to the other
    killed_at = time.monotonic()
    leases = [part.lease for part in deployment.keys]
    wait_for(lambda: all(survivor.holds_lease(k) for k in leases), 30, "the survivor owns all")
    moved = time.monotonic() - killed_at
    deployment.start_aggregator()  # the newcomer takes its share from the survivor
    _finish("cluster: kill -9 of an aggregator, then one added", watchers, producer, started)
    print(f"the survivor owned every partition {moved:.2f} s after the kill")


def test_kill_9_of_a_web_process(deployment: FaultStack) -> None:
    _, watchers, producer, started = _loaded(deployment)
    deployment.kill_web(deployment.webs[0])  # its streams resume on the other, by cursor
    deployment.start_web()
    _finish("cluster: kill -9 of a web process", watchers, producer, started)
