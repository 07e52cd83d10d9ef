"""The lease holder's view of what was published goes stale, and it must not publish twice.

* A long pause (`test_a_holder_paused_past_a_takeover_...`), lease 1 s (2 s too with
  `TEST_PUSHSVC_EVERY_LEASE=1`): the holder is
  frozen (SIGSTOP) past its lease, its standby takes over and is killed (kill -9) once it has
  published, and the frozen one is woken when that successor's lease expires, plus an offset
  (0, and 0.2 s with `TEST_PUSHSVC_EVERY_MOMENT=1`). Alone, it takes the lease again: it
  must go on from what the successor published, not from what it held when it froze (it
  published the successor's updates again, before each tenure of the lease had a token of
  its own).
* A lost answer (`test_the_holder_loses_a_publish_answer_...`): the holder reaches Redis
  through a proxy that, under load, lets one publish run and drops its connection instead of
  the answer; the holder retries, and must publish nothing twice (it did, before the publish
  script was told where a batch continues from).

Each case runs what `test_aggregator_moments.py` runs (two web processes, the six streams of
`moments.subscribers`, a producer with Idempotency-Keys) and checks the promise per stream.
"""

from __future__ import annotations

import hashlib
import time

import pytest
from harness.live import wait_until
from harness.redis_server import RedisServer

from faults.moments import (
    LEASES,
    Case,
    KeyedProducer,
    check_exactly_once,
    freeze,
    report,
    settle,
    sleep_until,
    subscribers,
    thaw,
    truth_checks,
)
from pushsvc.broker.lua import source
from support.proxies import RedisAnswerLosingProxy

pytestmark = [pytest.mark.redis, pytest.mark.slow]


WAKE_OFFSETS = {"at-expiry": 0.0, "0.2s-after-expiry": 0.2}
"""The second runs with `TEST_PUSHSVC_EVERY_MOMENT=1` (`moments.truth_checks`): the simulation
pauses holders past their leases (about 1,250 times a slice of its seeds), and stalls them
right before a publish (about 50: tests/simulation)."""


@pytest.mark.parametrize("lease", LEASES)
@pytest.mark.parametrize("wake", truth_checks(WAKE_OFFSETS, ["0.2s-after-expiry"]))
def test_a_holder_paused_past_a_takeover_goes_on_from_its_successor(
    server: RedisServer, wake: str, lease: str
) -> None:
    with Case(server, lease=lease) as case:
        holder = case.start(standbys=1)
        watchers = subscribers(case)
        producer = KeyedProducer(case)
        producer.start()
        wait_until(lambda: all(len(w.received.updates) >= 5 for w in watchers), timeout=10)
        freeze(holder)
        frozen = time.monotonic()
        left_at = case.applied()
        successor = case.holder(besides=[holder], timeout=case.takeover_timeout)
        # Killed as soon as it has published something: the frozen one's view is stale now.
        wait_until(lambda: case.applied() != left_at, interval=0.002, what="a publish")
        case.stack.kill_aggregator(successor)
        sleep_until(case.expires_at(case.shard_lease) + WAKE_OFFSETS[wake])
        thaw(holder)
        figures: dict[str, object] = {"frozen_s": round(time.monotonic() - frozen, 2)}
        wait_until(
            lambda: case.redis.exists(case.shard_lease),
            timeout=case.takeover_timeout,
            what="the woken holder takes the lease again",
        )
        after = producer.acked_values() + 30
        wait_until(lambda: producer.acked_values() >= after, timeout=10)
        settle(watchers, producer)
        figures |= producer.figures() | check_exactly_once(watchers, producer.acked, case.topics)
    report(f"aggregator paused past a takeover, woken {wake}, lease {lease}", figures)


def test_the_holder_loses_a_publish_answer_and_publishes_nothing_twice(
    server: RedisServer,
) -> None:
    proxy = RedisAnswerLosingProxy(server.port)
    try:
        with Case(server, lease="1s") as case:
            holder = case.start(holder_url=proxy.url)
            watchers = subscribers(case)
            producer = KeyedProducer(case)
            producer.start()
            wait_until(lambda: all(len(w.received.updates) >= 5 for w in watchers), timeout=10)
            proxy.lose_answer_to(
                hashlib.sha1(source("publish_updates").encode()).hexdigest().encode()
            )
            wait_until(lambda: proxy.lost == 1, what="a publish whose answer is lost")
            holder.wait_for_log("published already", timeout=10)
            after = producer.acked_values() + 30
            wait_until(lambda: producer.acked_values() >= after, timeout=10)
            settle(watchers, producer)
            figures = producer.figures() | check_exactly_once(watchers, producer.acked, case.topics)
            assert holder.holds_lease(case.shard_lease), "it went on as the holder"
    finally:
        proxy.close()
    report("aggregator loses a publish answer, lease 1s", figures)
