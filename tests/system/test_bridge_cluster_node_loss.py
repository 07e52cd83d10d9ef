"""The Redis bridge on a Redis Cluster loses the node its pub/sub connection is on (kill -9):
it must listen again on a live node, however the cluster was named to it.

A cluster broadcasts a `PUBLISH` to every node, so the bridge (an aggregator process, lease
1 s) listens on one node only: the first seed of its URL that answers. Each case puts the node
to kill first in that URL, sees the bridge's `PSUBSCRIBE` there (`PUBSUB NUMPAT`), kills it
and waits for the cluster to settle (a primary's replica promoted; a replica just gone), then
waits until the bridge's pattern is on a live node again: every message published after that
is appended once, in order. The killed primary holds neither the bridge's lease nor the test
topic's partition, so nothing but the pub/sub connection has to move (a lease that lapsed
would make a new tenure subscribe afresh, which hides a reader stuck on a dead node).

Then `pushsvc publish --redis-url` (`publish_to_redis`) finds the bridge on its new node (its
connection's name in `CLIENT LIST`) and counts it: a cluster's `PUBLISH` counts only the
subscribers of the node that received it. With no bridge it says so; with a user whose ACL
refuses `CLIENT LIST` it says that it cannot know.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator

import pytest
import redis
from harness.live import SRC, PushsvcProcess, wait_until
from harness.redis_cluster import RedisClusterServers
from harness.redis_server import RedisServer

from pushsvc.broker.redis.broker import RedisBroker
from pushsvc.broker.redis.keys import Keys
from pushsvc.broker.redis.publisher import publish_to_redis
from pushsvc.broker.redis.slots import partition_slot
from pushsvc.broker.shared_log import FIRST
from pushsvc.core.partitions import partition_of

pytestmark = [pytest.mark.cluster, pytest.mark.redis]

P = 16  # the aggregator's default partition count


@pytest.fixture
def cluster() -> Iterator[RedisClusterServers]:
    with RedisClusterServers() as made:  # its own: this test kills a node
        yield made


class Producer(threading.Thread):
    """PUBLISHes `{"value": n}` for n = 0, 1, … every 10 ms on one node that stays up."""

    def __init__(self, port: int, channel: str) -> None:
        super().__init__(daemon=True, name="ingest-producer")
        self.client = redis.Redis(port=port, socket_timeout=5)
        self.channel = channel
        self.started = -1  # the last n whose PUBLISH was begun
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.01):
            self.started += 1  # before the PUBLISH: every n above a reading began after it
            self.client.publish(self.channel, json.dumps({"value": self.started}))

    def close(self) -> None:
        self.stop.set()
        if self.is_alive():
            self.join(10)
        self.client.close()


def _numpat(cluster: RedisClusterServers, node: RedisServer) -> int:
    client = cluster.client(node)
    try:
        return int(client.pubsub_numpat())
    except redis.RedisError:
        return 0  # not up (yet): nothing listens there
    finally:
        client.close()


def _listening(cluster: RedisClusterServers) -> list[RedisServer]:
    """The live nodes a pattern subscription (only the bridge's, here) is on."""
    return [node for node in cluster.live if _numpat(cluster, node) > 0]


def _logged(broker: RedisBroker, topic: str) -> list[float]:
    event_log = broker.event_log((partition_of(topic, P), P))
    try:
        return [
            ev.value
            for entry in event_log.read(FIRST, count=100_000)
            if entry.topic == topic and entry.events is not None
            for ev in entry.events
        ]
    finally:
        event_log.close()


def _topic_away_from(cluster: RedisClusterServers, node: RedisServer) -> str:
    """A topic whose partition's primary is not `node`."""
    n = 0
    while cluster.owner_of(partition_slot(partition_of(f"bridged-{n}", P), P)) is node:
        n += 1
    return f"bridged-{n}"


@pytest.mark.parametrize("role", ["primary", "replica"])
def test_the_bridge_listens_again_on_a_live_node_after_its_node_is_killed(
    cluster: RedisClusterServers, prefix: str, role: str
) -> None:
    keys = Keys(prefix)
    lease_primary = cluster.owner_of(cluster.key_slot(keys.bridge_lease))
    if role == "primary":
        doomed = next(p for p in cluster.primaries() if p is not lease_primary)
    else:
        doomed = cluster.replicas_of(lease_primary)[0]
    topic = _topic_away_from(cluster, doomed)
    # The doomed node first: the bridge listens on the first seed that answers.
    seeds = [doomed, *(n for n in cluster.nodes if n is not doomed)]
    url = "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in seeds)
    env = {
        "PUSHSVC_REDIS_URL": url,
        "PUSHSVC_PREFIX": prefix,
        "PUSHSVC_TICK": "0",
        "PUSHSVC_LEASE": "1s",
    }
    aggregator = PushsvcProcess("aggregate", env=env, http=False).start()
    broker = RedisBroker(cluster.url, prefix=prefix, partitions=P, socket_timeout=2.0)
    producer = Producer(lease_primary.port, f"{prefix}ingest:{topic}")
    try:
        wait_until(
            lambda: any("bridge: bridging" in line for line in aggregator.output),
            timeout=15,
            what="the aggregator bridges",
        )
        assert _listening(cluster) == [doomed]
        producer.start()
        wait_until(lambda: len(_logged(broker, topic)) >= 5, timeout=10, what="5 appended")

        cluster.kill(doomed)
        cluster.wait_until_settled(timeout=30)
        if role == "primary":
            assert doomed not in cluster.primaries()  # its replica serves its slots
        wait_until(
            lambda: bool(_listening(cluster)),
            timeout=15,
            what="the bridge subscribes again on a live node",
        )
        resumed_after = producer.started
        wait_until(
            lambda: producer.started >= resumed_after + 30,
            timeout=10,
            what="30 more published",
        )
        producer.close()
        wanted = set(range(resumed_after + 1, producer.started + 1))
        wait_until(
            lambda: wanted <= set(_logged(broker, topic)),
            timeout=10,
            what="everything published after the resubscription is appended",
        )
        logged = _logged(broker, topic)
        assert len(logged) == len(set(logged)), "an event appended twice"
        assert logged == sorted(logged), "appended out of publish order"

        # `pushsvc publish --redis-url` publishes on the bridge's node: its answer counts it.
        (node,) = _listening(cluster)
        client = cluster.client(node)
        try:
            names = [c["name"] for c in client.client_list(_type="pubsub")]
        finally:
            client.close()
        assert keys.bridge_connection in names
        assert publish_to_redis(cluster.url, prefix, topic, [[{"value": -1.0}]]) == (1, 0)
        wait_until(lambda: -1.0 in _logged(broker, topic), timeout=10, what="-1 appended")
        # Nobody bridges another prefix: said so, whichever node answers.
        assert publish_to_redis(cluster.url, "nobody:", topic, [[{"value": 1.0}]]) == (1, 1)
    finally:
        producer.close()
        broker.close()
        aggregator.stop()


def test_pushsvc_publish_on_a_cluster_says_when_it_cannot_know_or_no_bridge_listens(
    redis_cluster: RedisClusterServers, topic: str
) -> None:
    # No bridge at all: every node's CLIENT LIST says so. A user without CLIENT (LIST) cannot
    # see the bridge's node, and its PUBLISH answer would count another node's subscribers.
    user, password = f"producer-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    nodes = redis_cluster.live
    for node in nodes:
        client = redis_cluster.client(node)
        try:
            client.acl_setuser(
                user, enabled=True, passwords=[f"+{password}"], commands=["+@all", "-client"],
                keys=["*"], channels=["*"],
            )  # fmt: skip
        finally:
            client.close()
    seeds = ",".join(f"127.0.0.1:{node.port}" for node in nodes)

    def publish(url: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "pushsvc", "publish", "--redis-url", url]
        return subprocess.run(
            [*argv, "--prefix", "nobody-listens:", topic, "1"],
            env={"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin"},
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    try:
        unheard = publish(redis_cluster.url)
        assert unheard.returncode == 1, unheard.stderr
        assert "no bridge was subscribed for 1 of them" in unheard.stderr
        unknown = publish(f"redis+cluster://{user}:{password}@{seeds}")
        assert (unknown.returncode, unknown.stdout.strip()) == (0, "published 1 to Redis")
        assert "whether a bridge heard them is not known" in unknown.stderr
    finally:
        for node in nodes:
            client = redis_cluster.client(node)
            try:
                client.acl_deluser(user)
            finally:
                client.close()
