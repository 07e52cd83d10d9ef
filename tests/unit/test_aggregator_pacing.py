"""An aggregator that pauses inside big batches (the embedded server's, so that its loop
serves producers meanwhile): the same drafts as one that never pauses, a pause every
`PACE_EVENTS` events, and never a checkpoint of a batch left half applied."""

from __future__ import annotations

from collections.abc import Callable

import orjson
import pytest
from greenlet import GreenletExit
from hypothesis import given, settings
from hypothesis import strategies as st

from pushsvc.aggregate.aggregator import PACE_EVENTS, Aggregator
from pushsvc.aggregate.partition_pool import PartitionPool
from pushsvc.broker.memory import MemoryBroker, Store
from pushsvc.core.topics import TopicMatcher
from pushsvc.ingest import Event
from pushsvc.rules.analytics import Rule, Rules
from pushsvc.rules.tiers import SeriesTier
from pushsvc.stats import STAT_KEYS
from support.memory_core import ManualClock

S = 1_000_000
BASE_US = 1_763_700_000 * S
WINDOWS = (10 * S, 60 * S)
RULES = Rules(
    (
        # Groups by tag: the staged path, tagged windows.
        Rule(1, ("g.*",), WINDOWS, (), STAT_KEYS, group_by=("site",)),
        # Series only: its own inlined path.
        Rule(2, ("s.*",), WINDOWS, (), STAT_KEYS, series=(SeriesTier(S, 3600 * S),)),
        # A count window: durable (checkpointed).
        Rule(3, ("c.*",), WINDOWS, (100,), ("count", "sum")),
    ),
    Rule(0, ("*",), WINDOWS, (), STAT_KEYS),  # the plain rule
)
TOPICS = ("plain", "g.orders", "s.visits", "c.counted")


def _aggregator(pause: Callable[[], None] | None = None) -> Aggregator:
    return Aggregator(rules=RULES, wall_clock=lambda: BASE_US, pause=pause)


def _events(first: int, count: int) -> list[Event]:
    return [
        Event(float(first + i), BASE_US + (first + i) * 10_000, {"site": f"s{(first + i) % 3}"})
        for i in range(count)
    ]


@settings(max_examples=40, deadline=None)
@given(
    batches=st.lists(
        st.tuples(st.sampled_from(TOPICS), st.integers(0, 3 * PACE_EVENTS)),
        min_size=1,
        max_size=6,
    )
)
def test_a_pausing_aggregator_drafts_what_one_that_never_pauses_does(
    batches: list[tuple[str, int]],
) -> None:
    pauses: list[int] = []
    paced = _aggregator(lambda: pauses.append(1))
    plain = _aggregator()
    first = 0
    for topic, count in batches:
        events = _events(first, count)
        first += count
        at = (first, 0)
        got = [(d.clock_us, orjson.loads(d.body)) for d in paced.apply_events(topic, events, at)]
        want = [(d.clock_us, orjson.loads(d.body)) for d in plain.apply_events(topic, events, at)]
        assert got == want
    # One pause before every PACE_EVENTS-th event after the first, across batches.
    assert len(pauses) == max(0, -(-first // PACE_EVENTS) - 1)


@pytest.mark.parametrize("killed", [False, True], ids=["whole", "killed-mid-batch"])
def test_a_batch_left_half_applied_is_never_checkpointed(killed: bool) -> None:
    """A process stopped while its aggregator pauses mid-batch (the pause raises, as gevent's
    kill does) hands its partition over without a checkpoint: the windows hold part of a batch
    that the checkpoint's position would say is not applied, and a restart would count it
    twice. Whole, the same hand-over saves one."""
    kill = False

    def pause() -> None:
        if kill:
            raise GreenletExit

    clock = ManualClock()
    store = Store(1, clock=clock)
    broker = MemoryBroker(store, name="p")
    pool = PartitionPool(
        broker,
        lambda: _aggregator(pause),
        lease_us=60 * S,
        tick_us=0,
        topic_ttl_us=0,
        clock=clock,
        spawn=lambda run: run(),
        max_block_s=0.0,
        sleep=lambda _: None,
        checkpoint_interval_s=3600.0,
    )
    topic = "c.counted"
    broker.append_events(topic, _events(0, 10), lateness_us=60 * S)
    pool.step()
    pool.step()
    assert topic in broker.latest(TopicMatcher([topic]))
    kill = killed
    broker.append_events(topic, _events(10, 3 * PACE_EVENTS), lateness_us=60 * S)
    if killed:
        with pytest.raises(GreenletExit):
            pool.step()
    else:
        pool.step()
    pool.leave()  # hands over: publishes what was applied whole, then saves checkpoints
    saved = broker.event_log((0, 1)).checkpoints()
    if killed:
        assert saved == []
    else:
        assert [c.topic for c in saved] == [topic]
