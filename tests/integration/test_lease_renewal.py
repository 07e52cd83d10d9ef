"""A lease survives a renewal that fails: an error reply (`BUSY`), a timeout, a Redis that went
away. Redis may well have renewed it, so the holder keeps it until its last confirmed expiry,
and only then counts it lost; every write it makes is fenced by its token meanwhile.

Giving a valid lease up on one such error would hand its partition (or the bridge, or the
deriver) over, and rebuild its windows cold, for nothing. On a cluster the same holds for the
partitions of one node whose pipeline failed: tests/integration/test_redis_cluster.py."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pytest
import redis
from harness.redis_server import RedisServer

from pushsvc.broker.redis.connect import single_client
from pushsvc.broker.redis.keys import Keys
from pushsvc.broker.redis.lease import CLOCK_MARGIN, RedisLease
from pushsvc.broker.redis.lease_group import RedisLeaseGroup
from pushsvc.errors import BrokerUnavailable

pytestmark = pytest.mark.redis

S = 1_000_000

# Runs for ARGV[1] µs of Redis's clock: while it does, every other client gets BUSY.
BUSY_SCRIPT = """
local start = redis.call('TIME')
local from = start[1] * 1000000 + start[2]
while true do
  local now = redis.call('TIME')
  if now[1] * 1000000 + now[2] - from > tonumber(ARGV[1]) then return 1 end
end
"""


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def control(own_redis: RedisServer) -> Iterator[redis.Redis]:
    client = single_client(own_redis.url, socket_timeout=10)
    yield client
    client.close()


def test_a_renewal_answered_busy_keeps_the_lease_and_its_tenure(
    own_redis: RedisServer,
    control: redis.Redis,
    prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    lease = RedisLease(own_redis.url, f"{prefix}lease", ttl_us=30 * S)
    assert lease.renew()
    token = lease.token
    control.config_set("busy-reply-threshold", 20)
    busy = threading.Thread(target=lambda: control.eval(BUSY_SCRIPT, 0, 2 * S))
    probe = single_client(own_redis.url, socket_timeout=10)
    busy.start()
    try:
        while True:  # until Redis answers BUSY: the script is running
            try:
                probe.ping()
            except redis.RedisError as exc:
                assert "BUSY" in str(exc)
                break
        with caplog.at_level(logging.WARNING, logger="pushsvc.broker.redis.lease"):
            assert lease.renew(), "a BUSY reply gave a valid lease up"
        assert any("BUSY" in r.getMessage() for r in caplog.records), "the renewal was not BUSY"
        assert not any("lost the lease" in r.getMessage() for r in caplog.records)
    finally:
        busy.join()
        probe.close()
    assert lease.renew() and lease.holding
    assert lease.token == token, "a transient error started a new tenure"
    assert control.get(f"{prefix}lease") == token.encode()
    lease.close()


def test_a_lease_whose_renewals_fail_is_lost_at_its_confirmed_expiry_and_not_before(
    own_redis: RedisServer, prefix: str
) -> None:
    ttl_s = 10.0
    clock = Clock()
    lease = RedisLease(own_redis.url, f"{prefix}lease", ttl_us=int(ttl_s * S), clock=clock)
    assert lease.renew()
    confirmed = clock.now + ttl_s * (1 - CLOCK_MARGIN)
    assert lease.confirmed_until == pytest.approx(confirmed)
    own_redis.stop()  # every renewal fails from now on
    clock.now += ttl_s / 3
    assert lease.renew(), "a refused connection gave a valid lease up"
    clock.now = confirmed - 0.01
    assert lease.renew()
    clock.now = confirmed
    assert not lease.renew(), "a lease was kept past the expiry a renewal confirmed"
    assert not lease.holding
    own_redis.start()
    lease.close()


def test_a_failed_renewal_after_the_lease_was_lost_does_not_bring_it_back(
    own_redis: RedisServer, control: redis.Redis, prefix: str
) -> None:
    """Only a confirmed renewal makes a holder: an error never does, whatever came before."""
    clock = Clock()
    key = f"{prefix}lease"
    mine = RedisLease(own_redis.url, key, ttl_us=10 * S, clock=clock)
    assert mine.renew()
    control.set(key, "another-holder")  # another process's tenure (after a pause of ours)
    assert not mine.renew()
    control.config_set("busy-reply-threshold", 20)
    busy = threading.Thread(target=lambda: control.eval(BUSY_SCRIPT, 0, S))
    probe = single_client(own_redis.url, socket_timeout=10)
    busy.start()
    try:
        while True:
            try:
                probe.ping()
            except redis.RedisError:
                break
        assert not mine.renew()
    finally:
        busy.join()
        probe.close()
    assert not mine.holding
    mine.close()


def test_a_partition_lease_whose_rounds_fail_whole_is_lost_at_its_confirmed_expiry(
    own_redis: RedisServer, prefix: str
) -> None:
    """The partition leases of a process are renewed together, in its lease group's round; a
    round that fails whole (Redis gone) is a failed renewal of each: kept until its confirmed
    expiry, then lost, as a lone lease is (not believed held for as long as Redis is away)."""
    ttl_s = 10.0
    clock = Clock()
    group = RedisLeaseGroup(own_redis.url, Keys(prefix, 1), 1, ttl_us=int(ttl_s * S), clock=clock)
    group.round()
    lease = group.take([(0, 1)])[(0, 1)]
    confirmed = clock.now + ttl_s * (1 - CLOCK_MARGIN)
    own_redis.stop()  # every round fails from now on
    clock.now += ttl_s / 3
    with pytest.raises(BrokerUnavailable):
        group.round()
    assert lease.holding, "a refused connection gave a valid lease up"
    clock.now = confirmed
    with pytest.raises(BrokerUnavailable):
        group.round()
    assert not lease.holding, "a lease was believed held past the expiry a renewal confirmed"
    own_redis.start()
    group.close()
