"""The broker contract (pushsvc.broker.base.Broker): one suite, both implementations.

Redis deliveries are asynchronous (a reader thread); every wait below is on a
queue with a timeout, never a sleep. The memory broker delivers synchronously,
so the same waits return at once.
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from pushsvc.broker import make_broker
from pushsvc.broker.base import Broker, Update, UpdateDraft
from pushsvc.broker.memory import MemoryBroker
from pushsvc.broker.redis import RedisBroker
from pushsvc.errors import BrokerUnavailable
from pushsvc.events import Event
from pushsvc.ids import format_id, id_key, parse_id
from redis_server import RedisServer

WAIT = 5.0  # seconds; generous, only reached when something is broken


def everything(topic: str) -> bool:
    return True


def draft(topic: str, n: int) -> UpdateDraft:
    body = orjson.dumps({"topic": topic, "n": n, "windows": {"10s": {"mean": n / 3}}})
    return UpdateDraft(topic, 1_000_000 + n, body)


def parse(update_id: str) -> tuple[str, int, int]:
    parsed = parse_id(update_id)
    assert parsed is not None, update_id
    return parsed


class Inbox:
    """Handlers that record what they receive, and waits for it."""

    def __init__(self) -> None:
        self._events: queue.Queue[tuple[str, list[Event]]] = queue.Queue()
        self._updates: queue.Queue[Update] = queue.Queue()

    def events(self, topic: str, events: list[Event]) -> None:
        self._events.put((topic, events))

    def updates(self, updates: list[Update]) -> None:
        for update in updates:
            self._updates.put(update)

    def take_events(self, n: int) -> list[tuple[str, list[Event]]]:
        return [self._events.get(timeout=WAIT) for _ in range(n)]

    def take_updates(self, n: int) -> list[Update]:
        return [self._updates.get(timeout=WAIT) for _ in range(n)]

    def empty(self) -> bool:
        return self._events.empty() and self._updates.empty()


MakeBroker = Callable[..., Broker]


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def new_broker(request: pytest.FixtureRequest) -> Iterator[MakeBroker]:
    """Build brokers of one kind; within a test they share one history (one Redis prefix)."""
    url = None
    prefix = "pushsvc:"
    if request.param == "redis":
        url = request.getfixturevalue("redis_server").url
        prefix = request.getfixturevalue("prefix")
    made: list[Broker] = []

    def make(history: int = 100) -> Broker:
        broker = make_broker(url, prefix=prefix, history=history)
        made.append(broker)
        return broker

    yield make
    for broker in made:
        broker.close()


@pytest.fixture
def broker(new_broker: MakeBroker) -> Broker:
    return new_broker()


# -- raw events --------------------------------------------------------------


def test_events_with_no_consumer_reach_nobody(broker: Broker) -> None:
    assert broker.publish_events("orders", [Event(1.0, 1, None)]) == 0


def test_events_reach_the_consumer_in_publish_order(broker: Broker) -> None:
    inbox = Inbox()
    broker.consume_events(inbox.events)
    batches = [
        ("orders", [Event(12.5, 1_763_700_000_123_000, {"dish": "noodles"})]),
        ("sensors.a", [Event(-1.0, 5, None), Event(0.0, 6, {}), Event(1e300, 7, {"k": "v"})]),
        ("orders", [Event(2.0, 1_763_700_000_124_000, None)]),
    ]
    for topic, events in batches:
        assert broker.publish_events(topic, events) == 1
    assert inbox.take_events(len(batches)) == batches


def test_a_closed_event_consumer_is_not_counted_and_gets_nothing(broker: Broker) -> None:
    gone, staying = Inbox(), Inbox()
    subscription = broker.consume_events(gone.events)
    broker.consume_events(staying.events).close()
    kept = broker.consume_events(staying.events)
    subscription.close()
    subscription.close()  # idempotent

    assert broker.publish_events("orders", [Event(1.0, 1, None)]) >= 1
    assert staying.take_events(1) == [("orders", [Event(1.0, 1, None)])]
    assert gone.empty()  # same reader, same message: it would have arrived by now

    kept.close()
    assert broker.publish_events("orders", [Event(2.0, 2, None)]) == 0


# -- updates and ids -----------------------------------------------------------


def test_update_ids_strictly_increase_across_topics_and_calls(broker: Broker) -> None:
    published = broker.publish_updates([draft("a", 1), draft("b", 1)])
    published += broker.publish_updates([draft("b", 2)])
    published += broker.publish_updates([draft("c", 1), draft("a", 2), draft("a", 3)])

    ids = [u.id for u in published]
    assert len({parse(i)[0] for i in ids}) == 1  # one epoch
    assert all(id_key(a) < id_key(b) for a, b in itertools.pairwise(ids))
    assert [u.topic for u in published] == ["a", "b", "b", "c", "a", "a"]


@pytest.mark.parametrize("bad", ["\r", "\n", "\x00", " "])
def test_update_ids_are_safe_as_an_sse_id_field(broker: Broker, bad: str) -> None:
    (update,) = broker.publish_updates([draft("a", 1)])
    assert bad not in update.id
    assert parse_id(update.id) is not None


def test_update_data_is_the_body_with_the_id_as_first_member(broker: Broker) -> None:
    drafts = [draft("a", 1), draft("b", 2)]
    for d, update in zip(drafts, broker.publish_updates(drafts), strict=True):
        assert update.topic == d.topic
        assert update.clock_us == d.clock_us
        assert update.data.startswith(b'{"id":' + orjson.dumps(update.id) + b",")
        assert orjson.loads(update.data) == {"id": update.id, **orjson.loads(d.body)}
        assert b"\n" not in update.data


def test_update_consumers_get_exactly_what_was_published_in_id_order(broker: Broker) -> None:
    first, second = Inbox(), Inbox()
    broker.consume_updates(first.updates)
    broker.consume_updates(second.updates)
    published = broker.publish_updates([draft("a", 1), draft("b", 1)])
    published += broker.publish_updates([draft("a", 2)])

    assert first.take_updates(3) == published
    assert second.take_updates(3) == published


def test_publishing_no_drafts_changes_nothing(broker: Broker) -> None:
    assert broker.publish_updates([]) == []
    assert broker.latest(everything) == {}


def test_concurrent_publishers_deliver_in_id_order(new_broker: MakeBroker) -> None:
    consumer = new_broker()
    inbox = Inbox()
    consumer.consume_updates(inbox.updates)
    # Redis: a second instance too, as a second process would be. A memory broker
    # serves one process, so there every thread shares the one instance.
    second = consumer if isinstance(consumer, MemoryBroker) else new_broker()
    publishers = [consumer, second]
    calls, per_call = 30, 2

    def publish(broker: Broker, topic: str) -> None:
        for n in range(calls):
            broker.publish_updates([draft(topic, n), draft(topic + "x", n)])

    threads = [
        threading.Thread(target=publish, args=(publishers[i % 2], f"t{i}")) for i in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT * 4)
    received = inbox.take_updates(4 * calls * per_call)

    ids = [u.id for u in received]
    assert all(id_key(a) < id_key(b) for a, b in itertools.pairwise(ids))
    for i in range(4):  # and each publisher's own order survives the interleaving
        ns = [orjson.loads(u.data)["n"] for u in received if u.topic == f"t{i}"]
        assert ns == list(range(calls))


def test_a_raising_handler_does_not_stop_delivery(
    broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    failures: list[str] = []

    def broken_events(topic: str, events: list[Event]) -> None:
        failures.append(topic)
        raise RuntimeError("events handler bug")

    def broken_updates(updates: list[Update]) -> None:
        failures.append(updates[0].topic)
        raise RuntimeError("updates handler bug")

    inbox = Inbox()
    broker.consume_events(broken_events)
    broker.consume_events(inbox.events)
    broker.consume_updates(broken_updates)
    broker.consume_updates(inbox.updates)
    with caplog.at_level(logging.ERROR, logger="pushsvc"):
        for n in range(2):  # the second round proves the delivery path survived the first
            broker.publish_events("ev", [Event(float(n), n, None)])
            assert inbox.take_events(1) == [("ev", [Event(float(n), n, None)])]
            published = broker.publish_updates([draft("up", n)])
            assert inbox.take_updates(1) == published

    assert failures == ["ev", "up", "ev", "up"]
    logged = [r.exc_info[1] for r in caplog.records if r.levelno == logging.ERROR and r.exc_info]
    assert {str(e) for e in logged} == {"events handler bug", "updates handler bug"}
    assert len(logged) == 4


# -- history and replay ----------------------------------------------------------


def test_replay_after_an_id_is_exact_and_filters_topics(broker: Broker) -> None:
    a1, b1, a2, b2, a3 = broker.publish_updates(
        [draft("a", 1), draft("b", 1), draft("a", 2), draft("b", 2), draft("a", 3)]
    )
    assert broker.replay(a1.id, everything) == [b1, a2, b2, a3]
    assert broker.replay(a1.id, lambda t: t == "a") == [a2, a3]
    assert broker.replay(b1.id, lambda t: t == "b") == [b2]
    assert broker.replay(a3.id, everything) == []
    assert broker.replay(a1.id, lambda t: t == "zzz") == []


def test_replay_then_live_has_no_gap_and_no_duplicate(broker: Broker) -> None:
    inbox = Inbox()
    old = broker.publish_updates([draft("a", 1), draft("a", 2)])
    broker.consume_updates(inbox.updates)
    new = broker.publish_updates([draft("a", 3)])
    replayed = broker.replay(old[0].id, everything)
    live = inbox.take_updates(1)
    assert replayed == [old[1], *new]
    assert live == new


@pytest.mark.parametrize("one_call", [False, True], ids=["call per update", "one call"])
def test_history_keeps_the_newest_n_and_refuses_to_replay_past_them(
    new_broker: MakeBroker, one_call: bool
) -> None:
    broker = new_broker(history=3)
    drafts = [draft("a" if n % 2 else "b", n) for n in range(5)]
    if one_call:
        updates = broker.publish_updates(drafts)
    else:
        updates = [u for d in drafts for u in broker.publish_updates([d])]

    assert broker.replay(updates[0].id, everything) is None  # updates[1] was trimmed
    # updates[1] itself is gone, but nothing after it: a full replay is possible.
    assert broker.replay(updates[1].id, everything) == updates[2:]
    assert broker.replay(updates[3].id, everything) == updates[4:]
    assert broker.replay(updates[4].id, everything) == []


def test_replay_of_another_epoch_is_a_gap(broker: Broker) -> None:
    first, _ = broker.publish_updates([draft("a", 1), draft("a", 2)])
    epoch, ms, seq = parse(first.id)
    other = "0" if epoch != "0" else "1"
    assert broker.replay(format_id(other, ms, seq), everything) is None


def test_replay_on_an_empty_history_is_a_gap(broker: Broker) -> None:
    assert broker.replay(format_id("ab12cd34", 0, 1), everything) is None


def test_replay_of_an_id_never_issued_is_a_gap(broker: Broker) -> None:
    (last,) = broker.publish_updates([draft("a", 1)])
    epoch, ms, seq = parse(last.id)
    assert broker.replay(format_id(epoch, ms, seq + 1), everything) is None
    assert broker.replay(format_id(epoch, ms + 1, 0), everything) is None


@pytest.mark.parametrize(
    "mangle",
    [
        lambda i: "",
        lambda i: "garbage",
        lambda i: i + "\n",
        lambda i: " " + i,
        lambda i: i.replace(":", ""),
        lambda i: i.split(":")[1],  # the stream id alone, no epoch
        lambda i: i + "-0",
        lambda i: "A" + i[1:],  # ids are lowercase hex
    ],
    ids=["empty", "garbage", "newline", "space", "no colon", "no epoch", "extra part", "upper"],
)
def test_replay_of_a_malformed_id_is_a_gap(broker: Broker, mangle: Callable[[str], str]) -> None:
    first, _ = broker.publish_updates([draft("a", 1), draft("a", 2)])
    bad = mangle(first.id)
    assert bad != first.id
    assert broker.replay(bad, everything) is None


def test_latest_is_the_newest_update_of_each_topic(broker: Broker) -> None:
    assert broker.latest(everything) == {}
    a1, b1, a2 = broker.publish_updates([draft("a", 1), draft("b", 1), draft("a", 2)])
    assert broker.latest(everything) == {"a": a2, "b": b1}
    assert broker.latest(lambda t: t == "b") == {"b": b1}
    (a3,) = broker.publish_updates([draft("a", 3)])
    assert broker.latest(lambda t: t.startswith("a")) == {"a": a3}
    assert a1 not in broker.latest(everything).values()


def test_latest_outlives_the_history(new_broker: MakeBroker) -> None:
    broker = new_broker(history=1)
    (a,) = broker.publish_updates([draft("a", 1)])
    (b,) = broker.publish_updates([draft("b", 1)])
    assert broker.latest(everything) == {"a": a, "b": b}


# -- lifecycle -------------------------------------------------------------------


def test_ping_answers(broker: Broker) -> None:
    broker.ping()


def test_a_closed_broker_refuses_work(broker: Broker) -> None:
    broker.close()
    broker.close()  # idempotent
    with pytest.raises(BrokerUnavailable):
        broker.publish_events("a", [Event(1.0, 1, None)])
    with pytest.raises(BrokerUnavailable):
        broker.publish_updates([draft("a", 1)])
    with pytest.raises(BrokerUnavailable):
        broker.ping()
    with pytest.raises(BrokerUnavailable):
        broker.consume_updates(Inbox().updates)


def test_history_must_hold_at_least_one_update(new_broker: MakeBroker) -> None:
    with pytest.raises(ValueError):
        new_broker(history=0)


# -- Redis only: several processes on one Redis -----------------------------------


def test_make_broker_without_url_is_the_memory_broker() -> None:
    broker = make_broker(None, prefix="ignored:", history=10)
    try:
        assert isinstance(broker, MemoryBroker)
    finally:
        broker.close()


@pytest.mark.redis
def test_make_broker_with_url_is_the_redis_broker(redis_server: RedisServer, prefix: str) -> None:
    broker = make_broker(redis_server.url, prefix=prefix, history=10)
    try:
        assert isinstance(broker, RedisBroker)
    finally:
        broker.close()


@pytest.mark.redis
def test_instances_on_one_redis_share_events_updates_history_and_latest(
    redis_server: RedisServer, prefix: str
) -> None:
    web = RedisBroker(redis_server.url, prefix=prefix, history=10)
    aggregator = RedisBroker(redis_server.url, prefix=prefix, history=10)
    standby = RedisBroker(redis_server.url, prefix=prefix, history=10)
    stranger = RedisBroker(redis_server.url, prefix=prefix + "other:", history=10)
    try:
        events, updates, strange = Inbox(), Inbox(), Inbox()
        aggregator.consume_events(events.events)
        standby.consume_events(events.events)
        web.consume_updates(updates.updates)
        stranger.consume_events(strange.events)
        stranger.consume_updates(strange.updates)

        # One receiver per consuming process (two here), however many handlers each has.
        assert web.publish_events("orders", [Event(1.0, 1, None)]) == 2
        assert events.take_events(2) == [("orders", [Event(1.0, 1, None)])] * 2

        first = aggregator.publish_updates([draft("orders", 1)])
        second = standby.publish_updates([draft("orders", 2)])
        assert id_key(first[0].id) < id_key(second[0].id)
        assert parse(first[0].id)[0] == parse(second[0].id)[0]
        assert updates.take_updates(2) == first + second
        assert web.replay(first[0].id, everything) == second
        assert web.latest(everything) == {"orders": second[0]}

        assert stranger.latest(everything) == {}
        assert stranger.replay(first[0].id, everything) is None
        assert strange.empty()  # another prefix is another world
    finally:
        for broker in (web, aggregator, standby, stranger):
            broker.close()


GEVENT_SCRIPT = """
from gevent import monkey
monkey.patch_all()
import sys, gevent, gevent.queue
from pushsvc.broker.redis import RedisBroker
from pushsvc.broker.base import UpdateDraft
from pushsvc.events import Event

broker = RedisBroker(sys.argv[1], prefix=sys.argv[2], history=10)
got = gevent.queue.Queue()
broker.consume_events(lambda topic, events: got.put((topic, events)))
broker.consume_updates(lambda updates: got.put(updates))
assert broker.publish_events("t", [Event(1.0, 1, None)]) == 1
assert got.get(timeout=5) == ("t", [Event(1.0, 1, None)])
published = broker.publish_updates([UpdateDraft("t", 1, b'{"topic":"t"}')])
assert got.get(timeout=5) == published
broker.close()
print("ok")
"""


@pytest.mark.redis
def test_redis_broker_works_under_gevent_monkey_patching(
    redis_server: RedisServer, prefix: str
) -> None:
    # The app patches everything first; a subprocess is the only clean way to do that here.
    src = str(Path(__file__).resolve().parents[1] / "src")
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", GEVENT_SCRIPT, redis_server.url, prefix],
        env={**os.environ, "PYTHONPATH": src},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
