"""A lease that lapses in a process alone (the embedded broker, `serve` without Redis): no other
aggregator can have taken it, so the publish it fences is said at INFO as what it is, a lapse
while the process was busy, and so is taking it back; every update still goes out once. Where
other processes share the leases (Redis), the same fence stays a WARNING that the lease moved
on."""

from __future__ import annotations

import logging

import orjson
import pytest

from pushsvc.aggregate.aggregator import Aggregator
from pushsvc.aggregate.shard_runner import ShardRunner
from pushsvc.broker.memory import MemoryBroker, Store
from pushsvc.ingest import Event
from pushsvc.rules.analytics import Rules, default_rule
from pushsvc.stats import STAT_KEYS
from support.memory_core import ManualClock

S = 1_000_000
SHARD = (0, 1)
TTL_US = 5 * S


def _runner(broker: MemoryBroker, *, alone: bool) -> ShardRunner:
    rules = Rules((), default_rule([10 * S], STAT_KEYS))
    aggregator = Aggregator(rules=rules, wall_clock=lambda: 0)
    lease = broker.lease(SHARD, ttl_us=TTL_US)
    return ShardRunner(
        aggregator, broker, broker.event_log(SHARD), lease, tick_us=0, block_ms=0, alone=alone
    )


def _published(broker: MemoryBroker) -> list[float]:
    updates = broker.store.parts[0].published.history
    return [orjson.loads(u.data)["event"]["value"] for u in updates]


@pytest.mark.parametrize("alone", [True, False])
def test_a_lapsed_lease_is_taken_back_and_said_at_the_right_level(
    alone: bool, caplog: pytest.LogCaptureFixture
) -> None:
    broker = MemoryBroker(Store(1, clock=ManualClock()))
    runner = _runner(broker, alone=alone)
    runner.rebuild()
    assert runner._lease.renew()
    broker.append_events("a", [Event(1.0, 10 * S, None)], lateness_us=S)
    runner.step()
    # Busy past the lease (a bulk load applied in one go): it lapsed, unrenewed.
    broker.store.parts[0].lease = None
    broker.append_events("a", [Event(2.0, 11 * S, None)], lateness_us=S)
    with caplog.at_level(logging.DEBUG):
        runner.step()  # its publish is fenced
        assert runner._lease.holding is False
        assert runner._lease.renew()  # nobody took it: the same tenure resumes
        runner.step()
    assert _published(broker) == [1.0, 2.0]  # each once
    said = [
        (r.levelname, r.getMessage()) for r in caplog.records if "partition 0/1" in r.getMessage()
    ]
    if alone:
        lapsed, back = said
        assert lapsed == (
            "INFO",
            "partition 0/1: the lease lapsed while this process was busy for longer than "
            "--lease; taking it back (nothing is lost: the updates wait in the log)",
        )
        assert back[0] == "INFO"
        assert back[1].startswith("partition 0/1: took the lease back; publishing from log entry ")
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    else:
        assert said[0] == ("WARNING", "partition 0/1: the lease moved on; standing by")
