"""The late path's one owner, on every broker: the append judges a batch and logs its split
in one step (`pushsvc.core.lateness`, the memory store, `lua/append_events.lua`).

The same Hypothesis cases run on the memory broker, a redis-server and a Redis Cluster, each
with several partitions (a late stream lives in its topic's): what each logs, on the topic and
on its late stream, and what it answers, must be what the Python rule says
(`past_grace`, `split_late`) for the clock the batches before made. A retry with the same
idempotency key after the connection dropped while the answer was on its way finds the
batch logged once, its events past the grace once on the late stream.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from harness.redis_server import RedisServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pushsvc.broker.base import Appended
from pushsvc.broker.base import ServingBroker as Broker
from pushsvc.broker.memory import MemoryBroker, Store
from pushsvc.broker.redis import RedisBroker
from pushsvc.broker.redis.log import RedisEventLog
from pushsvc.broker.shared_log import FIRST, position
from pushsvc.core.event import Event, Message
from pushsvc.core.idempotency import Idempotency, request_digest
from pushsvc.core.lateness import late_topic, past_grace, split_late
from pushsvc.core.partitions import partition_of
from pushsvc.errors import BrokerUnavailable, LateEvent
from support.proxies import RedisAnswerLosingProxy

PARTITIONS = 4
GRACE = 5


@pytest.fixture(
    scope="module",
    params=[
        "memory",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("cluster", marks=[pytest.mark.redis, pytest.mark.cluster]),
    ],
)
def broker(request: pytest.FixtureRequest) -> Iterator[Broker]:
    made: Broker
    if request.param == "memory":
        made = MemoryBroker(Store(PARTITIONS, clock=time.time))
    else:
        server = request.getfixturevalue(
            "redis_server" if request.param == "redis" else "redis_cluster"
        )
        made = RedisBroker(server.url, prefix=f"t{uuid.uuid4().hex[:8]}:", partitions=PARTITIONS)
    yield made
    made.close()


def logged(broker: Broker, topic: str) -> list[tuple[str, list[Event]]]:
    """Every entry of `topic` and of its late stream, in log order (their one partition)."""
    shard = (partition_of(topic, PARTITIONS), PARTITIONS)
    log = (
        broker.event_log(shard)
        if isinstance(broker, MemoryBroker)
        else RedisEventLog(broker.url, broker.keys, shard, socket_timeout=5.0)  # type: ignore[attr-defined]
    )
    entries = sorted(log.read(FIRST, count=100_000), key=lambda e: position(e.id))
    return [
        (e.topic, e.events)
        for e in entries
        if e.topic in (topic, late_topic(topic)) and e.events is not None
    ]


EVENTS = st.tuples(st.integers(0, 40), st.booleans()).map(
    lambda t: Event(None, t[0], None, Message("note", b"1")) if t[1] else Event(1.0, t[0], None)
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    batches=st.lists(st.lists(EVENTS, min_size=1, max_size=6), min_size=1, max_size=6),
    keep=st.booleans(),
)
def test_the_append_logs_what_the_one_rule_says(
    broker: Broker, batches: list[list[Event]], keep: bool
) -> None:
    topic = f"c{uuid.uuid4().hex[:8]}"
    assert partition_of(late_topic(topic), PARTITIONS) == partition_of(topic, PARTITIONS)
    clock: int | None = None
    expected: list[tuple[str, list[Event]]] = []
    for batch in batches:
        past = past_grace(clock, batch, GRACE)
        try:
            split = split_late(clock, batch, past, lateness_us=GRACE, keep_late=keep)
        except LateEvent:
            with pytest.raises(LateEvent):
                broker.append_events(topic, batch, lateness_us=GRACE, keep_late=keep)
            continue
        answer = broker.append_events(topic, batch, lateness_us=GRACE, keep_late=keep)
        assert answer == Appended(len(batch) - len(past), late=len(past))
        expected += [
            (name, part)
            for name, part in ((topic, split.topic), (late_topic(topic), split.late))
            if part
        ]
        on_time = [e.ts_us for i, e in enumerate(batch) if i not in past]
        if on_time:
            clock = max(on_time) if clock is None else max(clock, *on_time)
    assert logged(broker, topic) == expected


def test_a_late_stream_is_placed_with_its_topic() -> None:
    for topic in ("orders", "u42", "sensors.a", "x.late", "a.b.late.late"):
        for count in (1, 16, 1024):
            assert partition_of(late_topic(topic), count) == partition_of(topic, count)
    # The base topic's partition, not the full name's: "x.late" posted to is x's late stream.
    assert {partition_of(f"t{n}.late", 1024) for n in range(50)} == {
        partition_of(f"t{n}", 1024) for n in range(50)
    }


@pytest.mark.redis
def test_a_retry_after_a_lost_answer_logs_the_late_events_once(redis_server: RedisServer) -> None:
    """The connection drops while the answer of the append that logs a batch's split is on its
    way (the web process got no answer: a 503 to its producer). The producer's retry with the
    same key, after the topic's clock moved on, is a replay with the same counts: one copy on
    the topic, one on the late stream."""
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    proxy = RedisAnswerLosingProxy(redis_server.port)
    direct = RedisBroker(redis_server.url, prefix=prefix, partitions=PARTITIONS)
    proxied = RedisBroker(proxy.url, prefix=prefix, partitions=PARTITIONS)
    try:
        topic = "shop"
        direct.append_events(topic, [Event(1.0, 1_000, None)], lateness_us=GRACE)
        # The late stream kept already (a new one's admission is a round trip of its own).
        direct.append_events(topic, [Event(0.5, 1, None)], lateness_us=GRACE, keep_late=True)
        batch = [
            Event(None, 10, None, Message("shipped", b'{"order":1}')),  # past the grace
            Event(2.0, 11, None),  # past it too
            Event(3.0, 1_001, None),  # on time
        ]
        key = Idempotency("k1", request_digest("application/json", b"[the batch]"), 60_000)
        # The first try finds the split (nothing logged); the second logs it: its arguments,
        # and no others, hold the late stream's copy of the message (marked 2).
        proxy.lose_answer_to(b'",2]')
        with pytest.raises(BrokerUnavailable):
            proxied.append_events(topic, batch, lateness_us=GRACE, idempotency=key, keep_late=True)
        assert proxy.lost == 1
        # The clock moves on before the retry: judged now, the on-time event would be past the
        # grace too (two appends, one per topic, would log it on the late stream on retry).
        direct.append_events(topic, [Event(4.0, 5_000, None)], lateness_us=GRACE)
        for _ in range(2):
            retry = direct.append_events(
                topic, batch, lateness_us=GRACE, idempotency=key, keep_late=True
            )
            assert retry == Appended(1, replayed=True, late=2)
        entries = logged(direct, topic)
        assert [name for name, _ in entries] == [topic, "shop.late", topic, "shop.late", topic]
        late = entries[3][1]
        assert [e.ts_us for e in late] == [10, 11]
        assert [e.ts_us for e in entries[2][1]] == [10, 1_001]  # the message pushed, in place
        assert entries[2][1][0].mark == 1
    finally:
        proxied.close()
        direct.close()
        proxy.close()
