"""Elastic aggregators as processes: `--shard` refused in one line, the partitions gauge,
`/readyz` while a partition has no owner, and the connections one aggregator holds."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from harness.live import SRC, PushsvcProcess, request, wait_until
from harness.redis_server import RedisServer
from prometheus_client.parser import text_string_to_metric_families

from pushsvc.broker.redis.keys import Keys

pytestmark = pytest.mark.redis


def _env(server: RedisServer, prefix: str, partitions: int, **more: str) -> dict[str, str]:
    return {
        "PUSHSVC_REDIS_URL": server.url,
        "PUSHSVC_PREFIX": prefix,
        "PUSHSVC_TICK": "0",
        "PUSHSVC_LEASE": "1s",
        "PUSHSVC_PARTITIONS": str(partitions),
        **{f"PUSHSVC_{k.upper()}": v for k, v in more.items()},
    }


def value(port: int, name: str) -> float | None:
    """The value of an unlabelled gauge in `port`'s /metrics (None: not there)."""
    text = request(port, "GET", "/metrics")[2].decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    return None


def _readyz(port: int) -> tuple[int, dict[str, Any]]:
    status, _, body = request(port, "GET", "/readyz")
    return status, json.loads(body)


def _leased(client: redis.Redis, prefix: str, partitions: int) -> int:
    keys = [part.lease for part in Keys(prefix, partitions)]
    return int(client.exists(*keys))


@pytest.fixture
def control(own_redis: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis(port=own_redis.port)
    yield client
    client.close()


@pytest.mark.parametrize(
    ("given", "where"),
    [(["--shard", "0/2"], {}), ([], {"PUSHSVC_SHARD": "0/2"})],
)
def test_shard_is_refused_in_one_line_naming_partitions(
    given: list[str], where: dict[str, str]
) -> None:
    env = {"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin", **where}
    done = subprocess.run(
        [sys.executable, "-m", "pushsvc", "aggregate", "--redis-url", "redis://x", *given],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "--shard" in lines[0] and "--partitions / PUSHSVC_PARTITIONS" in lines[0]


def test_each_process_names_the_partitions_it_owns(own_redis: RedisServer, prefix: str) -> None:
    """Two `serve` processes (web and aggregator each) share 6 partitions: 3 each, said by
    `pushsvc_partitions_owned`; when one stops, the other owns all 6."""
    env = _env(own_redis, prefix, 6)
    first = PushsvcProcess("serve", env=env).start()
    second = PushsvcProcess("serve", env=env).start()
    try:
        wait_until(
            lambda: (
                [value(p.port, "pushsvc_partitions_owned") for p in (first, second)] == [3.0, 3.0]
            ),
            timeout=15,
            what="3 partitions each",
        )
        assert value(first.port, "pushsvc_aggregators_live") == 2
        second.stop()
        wait_until(
            lambda: value(first.port, "pushsvc_partitions_owned") == 6,
            timeout=15,
            what="the one left owns all 6",
        )
        assert _readyz(first.port)[0] == 200
    finally:
        first.stop()
        second.stop()


def test_readyz_is_not_ready_while_a_partition_has_no_owner(
    own_redis: RedisServer, prefix: str, control: redis.Redis
) -> None:
    env = _env(own_redis, prefix, 4)
    web = PushsvcProcess("web", env=env).start()
    aggregators: list[PushsvcProcess] = []
    try:
        status, ready = _readyz(web.port)
        assert (status, ready["status"]) == (503, "no_aggregator")
        assert not any(s["aggregator"] for s in ready["shards"].values())
        aggregators.append(PushsvcProcess("aggregate", env=env, http=False).start())
        wait_until(lambda: _readyz(web.port)[0] == 200, timeout=15, what="ready once owned")
        assert all(s["aggregator"] for s in _readyz(web.port)[1]["shards"].values())
        # kill -9: its leases lapse (1 s), and nothing owns the partitions meanwhile.
        aggregators[0].kill()
        wait_until(lambda: _leased(control, prefix, 4) < 4, timeout=10, what="leases lapse")
        status, ready = _readyz(web.port)
        assert (status, ready["status"]) == (503, "no_aggregator")
        aggregators.append(PushsvcProcess("aggregate", env=env, http=False).start())
        wait_until(lambda: _readyz(web.port)[0] == 200, timeout=15, what="owned again")
    finally:
        web.stop()
        for aggregator in aggregators:
            aggregator.stop()


def _clients(control: redis.Redis) -> int:
    """Connections to Redis other than `control`'s own."""
    return len(control.client_list()) - 1


@pytest.mark.parametrize("partitions", [16, 64])
def test_an_aggregator_holds_a_few_connections_however_many_partitions(
    own_redis: RedisServer, prefix: str, control: redis.Redis, partitions: int
) -> None:
    """Not one per partition: the leases share one connection, the waits for new entries one,
    the rest the broker's pool (docs/journal/elastic-aggregators.md has the figures)."""
    env = _env(own_redis, prefix, partitions)
    aggregator = PushsvcProcess("aggregate", env=env, http=False).start()
    try:
        wait_until(
            lambda: _leased(control, prefix, partitions) == partitions,
            timeout=15,
            what="every partition held",
        )
        # Some traffic on every partition, so that every kind of connection is open.
        aggregator.wait_for_log("bridge: bridging")
        producer = redis.Redis(port=own_redis.port)
        for n in range(4 * partitions):
            producer.publish(f"{prefix}ingest:t{n}", json.dumps({"value": n}))
        producer.close()
        wait_until(
            lambda: (
                sum(int(control.hlen(part.latest)) for part in Keys(prefix, partitions))
                > partitions
            ),
            timeout=15,
            what="updates published",
        )
        assert _clients(control) <= 8, control.client_list()
    finally:
        aggregator.stop()
