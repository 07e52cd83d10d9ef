"""The broker contract (pushsvc.broker.base.Broker): one suite, both implementations.

Redis deliveries are asynchronous (a reader thread); every wait below is on a
queue with a timeout, never a sleep. The memory broker delivers synchronously,
so the same waits return at once. Brokers made within one test share one deployment (a
Redis prefix, a memory store), as the processes of a deployment do; the shard's log is read
and written through the same `EventLog` calls on both.
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
from harness.fenced_publish import publish
from harness.live import wait_until
from harness.redis_server import RedisServer

from pushsvc.broker.base import (
    DEFAULT_ALERT_RETENTION_US,
    DEFAULT_HISTORY_BYTES,
    Appended,
    HistoryPage,
    Replayed,
    TopicHead,
    TopicStats,
    UpdatesFeed,
)
from pushsvc.broker.base import ServingBroker as Broker
from pushsvc.broker.memory import MemoryBroker, Store
from pushsvc.broker.redis import RedisBroker
from pushsvc.broker.redis.connect import pooled_client, single_client
from pushsvc.broker.redis.keys import time_of_key
from pushsvc.broker.redis.log import RedisEventLog
from pushsvc.broker.shared_log import FIRST, EventLog, position
from pushsvc.core.cursor import Cursor
from pushsvc.core.idempotency import MAX_KEYS_PER_PARTITION, Idempotency, request_digest
from pushsvc.core.topic_pages import topic_ranges
from pushsvc.core.topics import ALERTS, TopicMatcher
from pushsvc.core.updates import (
    SeriesWrite,
    Update,
    UpdateDraft,
    UpdateId,
    alert_draft,
    deletion_draft,
    point_draft,
)
from pushsvc.deliver.hub import Hub
from pushsvc.deliver.subscription import subscribe
from pushsvc.errors import BrokerUnavailable, IdempotencyKeyReused, LateEvent, TooManyTopics
from pushsvc.ingest import Event

WAIT = 5.0  # seconds; generous, only reached when something is broken


LATENESS_US = 5_000_000
everything = TopicMatcher(["*"])


def only(*selectors: str) -> TopicMatcher:
    return TopicMatcher(selectors)


def at(update_id: UpdateId) -> Cursor:
    """The cursor of a stream whose last update is `update_id` (a one-partition cursor)."""
    return Cursor([update_id])


def lost_all(broker: Broker) -> frozenset[int]:
    """Every partition: one history (the memory broker's, and Redis's for now) covers a
    cursor for all partitions or for none."""
    return frozenset(range(broker.partitions))


def draft(topic: str, n: int, clock_us: int | None = None) -> UpdateDraft:
    clock_us = 1_000_000 + n if clock_us is None else clock_us
    windows = {"10s": {"mean": n / 3}}
    body = orjson.dumps({"topic": topic, "n": n, "ts": clock_us / 1e6, "windows": windows})
    return UpdateDraft(topic, clock_us, body)


def append(broker: Broker, topic: str, events: list[Event]) -> None:
    broker.append_events(topic, events, lateness_us=LATENESS_US)


def event_log(broker: Broker, shard: tuple[int, int] = (0, 1)) -> EventLog:
    """The shard's log, as its aggregator reads and writes it."""
    if isinstance(broker, MemoryBroker):
        return broker.event_log(shard)
    assert isinstance(broker, RedisBroker)
    return RedisEventLog(broker.url, broker.keys, shard, socket_timeout=WAIT)


def hold_lease(broker: Broker, token: str = "token") -> None:
    """Make `token` the holder of shard 0/1's lease, as its active aggregator's."""
    if isinstance(broker, MemoryBroker):
        broker.store.parts[0].lease = (token, 2**62)
        return
    assert isinstance(broker, RedisBroker)
    client = single_client(broker.url, socket_timeout=WAIT)
    client.set(broker.keys.shard((0, 1)).lease, token)
    client.close()


def release_lease(broker: Broker) -> None:
    """Shard 0/1's lease free again (as its holder gives it up)."""
    if isinstance(broker, MemoryBroker):
        broker.store.parts[0].lease = None
        return
    assert isinstance(broker, RedisBroker)
    client = single_client(broker.url, socket_timeout=WAIT)
    client.delete(broker.keys.shard((0, 1)).lease)
    client.close()


def appended(broker: Broker) -> Callable[[], list[tuple[str, list[Event]]]]:
    """What the aggregator of the (one) shard gets: every appended batch, in order."""
    count = broker.partitions
    logs = [event_log(broker, (i, count)) for i in range(count)]

    def read() -> list[tuple[str, list[Event]]]:
        # Each partition's log is in order; one Redis numbers entries by its one clock, so
        # sorting by entry id restores the order of the appends across partitions.
        entries = sorted(
            (e for event_log in logs for e in event_log.read(FIRST, count=10_000)),
            key=lambda e: position(e.id),
        )
        return [(e.topic, e.events) for e in entries if e.topic and e.events is not None]

    return read


def listen(broker: Broker, inbox: Inbox, selectors: tuple[str, ...] = ("*",)) -> UpdatesFeed:
    feed = broker.consume_updates(inbox.updates)
    feed.watch(selectors)
    return feed


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


@pytest.fixture(
    params=[
        "memory",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("cluster", marks=[pytest.mark.redis, pytest.mark.cluster]),
    ]
)
def new_broker(request: pytest.FixtureRequest) -> Iterator[MakeBroker]:
    """Build brokers of one kind; within a test they share one history (one Redis prefix)."""
    url = None
    prefix = "pushsvc:"
    if request.param == "redis":
        url = request.getfixturevalue("redis_server").url
        prefix = request.getfixturevalue("prefix")
    elif request.param == "cluster":
        url = request.getfixturevalue("redis_cluster").url
        prefix = request.getfixturevalue("prefix")
    made: list[Broker] = []
    stores: list[Store] = []

    def make(
        history: int = 100,
        max_topics: int = 100_000,
        alert_retention_us: int = DEFAULT_ALERT_RETENTION_US,
        max_keys: int = MAX_KEYS_PER_PARTITION,
        history_bytes: int = DEFAULT_HISTORY_BYTES,
    ) -> Broker:
        if url is None and not stores:  # the test's deployment, as its first broker asks
            stores.append(
                Store(
                    1,
                    clock=time.time,
                    history=history,
                    history_bytes=history_bytes,
                    max_topics=max_topics,
                    alert_retention_us=alert_retention_us,
                    max_keys=max_keys,
                )
            )
        broker: Broker = (
            MemoryBroker(stores[0])
            if url is None
            # One partition: the contract of one history (its ids in one order); what
            # partitions change is tests/integration/test_redis_partitions.py's.
            else RedisBroker(
                url,
                prefix=prefix,
                history=history,
                history_bytes=history_bytes,
                max_topics=max_topics,
                partitions=1,
                alert_retention_us=alert_retention_us,
                max_keys=max_keys,
            )
        )
        made.append(broker)
        return broker

    yield make
    for broker in made:
        broker.close()


@pytest.fixture
def broker(new_broker: MakeBroker) -> Broker:
    return new_broker()


# -- the event log ------------------------------------------------------------------


def test_appended_batches_reach_the_aggregator_in_order(broker: Broker) -> None:
    read = appended(broker)
    batches = [
        ("orders", [Event(12.5, 1_763_700_000_123_000, {"dish": "noodles"})]),
        ("sensors.a", [Event(-1.0, 5, None), Event(0.0, 6, {}), Event(1e300, 7, {"k": "v"})]),
        ("orders", [Event(2.0, 1_763_700_000_124_000, None)]),
    ]
    for topic, events in batches:
        append(broker, topic, events)
    assert read() == batches


def test_a_big_batch_is_logged_as_entries_of_entry_events_in_order_or_not_at_all(
    broker: Broker,
) -> None:
    # 2,500 events: entries of 1,000, 1,000 and 500, numbered one after another, so that the
    # aggregator publishes them in parts; a batch with one late event logs none of them.
    read = appended(broker)
    events = [
        Event(float(n), 1_000 + n, {"n": str(n % 7)} if n % 3 else None) for n in range(2_500)
    ]
    assert broker.append_events("big", events, lateness_us=LATENESS_US) == Appended(2_500)
    assert read() == [("big", events[0:1000]), ("big", events[1000:2000]), ("big", events[2000:])]
    late = [Event(0.0, 10_000_000 + n, None) for n in range(1_500)] + [Event(0.0, 1, None)]
    with pytest.raises(LateEvent):
        broker.append_events("big", late, lateness_us=LATENESS_US)
    assert len(read()) == 3
    log = event_log(broker, (broker.partition_of("big"), broker.partitions))
    numbers = [e.n for e in log.read(FIRST, count=100) if e.topic == "big"]
    assert numbers == [numbers[0], numbers[0] + 1, numbers[0] + 2]


# -- idempotent appends ----------------------------------------------------------------


def keyed(key: str, body: bytes = b"[]", window_ms: int = 60_000) -> Idempotency:
    return Idempotency(key, request_digest("application/json", body), window_ms)


def test_a_repeated_idempotency_key_logs_nothing_and_answers_the_first(broker: Broker) -> None:
    read = appended(broker)
    events = [Event(1.0, 10, None), Event(2.0, 11, None)]
    first = broker.append_events("a", events, lateness_us=5, idempotency=keyed("k1"))
    assert first == Appended(2, replayed=False)
    again = broker.append_events("a", events, lateness_us=5, idempotency=keyed("k1"))
    assert again == Appended(2, replayed=True)
    assert read() == [("a", events)]


def test_a_repeat_is_answered_even_once_its_events_would_be_late(broker: Broker) -> None:
    """The key is checked before lateness: the repeat of an accepted batch is not refused
    because later events moved the topic clock past it."""
    read = appended(broker)
    early = [Event(1.0, 10, None)]
    broker.append_events("a", early, lateness_us=5, idempotency=keyed("k"))
    append(broker, "a", [Event(2.0, 10**9, None)])
    again = broker.append_events("a", early, lateness_us=5, idempotency=keyed("k"))
    assert again == Appended(1, replayed=True)
    assert len(read()) == 2


def test_an_idempotency_key_with_another_body_is_refused_and_changes_nothing(
    broker: Broker,
) -> None:
    read = appended(broker)
    broker.append_events("a", [Event(1.0, 10, None)], lateness_us=5, idempotency=keyed("k"))
    before = read()
    with pytest.raises(IdempotencyKeyReused):
        broker.append_events(
            "a", [Event(9.0, 12, None)], lateness_us=5, idempotency=keyed("k", b"[9]")
        )
    assert read() == before
    # Still remembered with the first body.
    repeat = broker.append_events(
        "a", [Event(1.0, 10, None)], lateness_us=5, idempotency=keyed("k")
    )
    assert repeat == Appended(1, replayed=True)


def test_an_idempotency_key_belongs_to_its_topic(broker: Broker) -> None:
    read = appended(broker)
    events = [Event(1.0, 10, None)]
    broker.append_events("a", events, lateness_us=5, idempotency=keyed("k"))
    other = broker.append_events("b", events, lateness_us=5, idempotency=keyed("k"))
    assert other == Appended(1, replayed=False)
    # Topic "a:b" with key "c" and topic "a" with key "b:c" are two keys.
    broker.append_events("a:b", events, lateness_us=5, idempotency=keyed("c"))
    assert (
        broker.append_events("a", events, lateness_us=5, idempotency=keyed("b:c")).replayed is False
    )
    assert read() == [("a", events), ("b", events), ("a:b", events), ("a", events)]


def test_a_refused_append_remembers_no_key(broker: Broker) -> None:
    read = appended(broker)
    append(broker, "a", [Event(1.0, 100, None)])
    with pytest.raises(LateEvent):
        broker.append_events("a", [Event(1.0, 1, None)], lateness_us=5, idempotency=keyed("k"))
    # The key is free: another body with it is logged, not a 422.
    fresh = [Event(2.0, 100, None)]
    outcome = broker.append_events("a", fresh, lateness_us=5, idempotency=keyed("k", b"[2]"))
    assert outcome == Appended(1, replayed=False)
    assert read()[-1] == ("a", fresh)


def test_an_empty_batch_with_a_key_remembers_the_key_and_logs_nothing(broker: Broker) -> None:
    """An empty batch with a key leaves on its topic the key (answer 0), checked as any key
    is, and no entry, clock or topic."""
    read = appended(broker)
    append(broker, "a", [Event(1.0, 100, None)])
    assert broker.append_events("a", [], lateness_us=5, idempotency=keyed("k")) == Appended(0)
    assert broker.append_events("a", [], lateness_us=5, idempotency=keyed("k")) == Appended(
        0, replayed=True
    )
    # A repeat of the same digest is answered from the key: what the first request did not
    # log on time is counted late.
    again = broker.append_events(
        "a", [Event(1.0, 200, None)], lateness_us=5, idempotency=keyed("k")
    )
    assert again == Appended(0, replayed=True, late=1)
    with pytest.raises(IdempotencyKeyReused):
        broker.append_events(
            "a", [Event(2.0, 200, None)], lateness_us=5, idempotency=keyed("k", b"[2]")
        )
    # No clock moved: an event at 96 µs is within 5 µs of the topic's 100 still.
    append(broker, "a", [Event(3.0, 96, None)])
    live = broker.topic_stats().live
    assert broker.append_events("new", [], lateness_us=5, idempotency=keyed("k")) == Appended(0)
    assert broker.topic_stats().live == live  # no topic made
    assert read() == [("a", [Event(1.0, 100, None)]), ("a", [Event(3.0, 96, None)])]


def test_a_keyed_request_kept_whole_on_the_late_stream_is_logged_once(broker: Broker) -> None:
    """Every event past the grace, kept: logged on the late stream by the one append, with the
    key on the topic; a retry is a replay with the same counts; the key with another body is
    refused; another key logs them again."""
    read = appended(broker)
    append(broker, "a", [Event(1.0, 100, None)])
    late = [Event(2.0, 10, None), Event(3.0, 11, None)]
    first = broker.append_events("a", late, lateness_us=5, idempotency=keyed("k"), keep_late=True)
    assert first == Appended(0, late=2)
    for _ in range(2):
        retry = broker.append_events(
            "a", late, lateness_us=5, idempotency=keyed("k"), keep_late=True
        )
        assert retry == Appended(0, replayed=True, late=2)
    with pytest.raises(IdempotencyKeyReused):
        broker.append_events(
            "a", [Event(4.0, 200, None)], lateness_us=5, idempotency=keyed("k", b"[4]"),
            keep_late=True,
        )  # fmt: skip
    fresh = broker.append_events("a", late, lateness_us=5, idempotency=keyed("j"), keep_late=True)
    assert fresh == Appended(0, late=2)
    assert read() == [("a", [Event(1.0, 100, None)]), ("a.late", late), ("a.late", late)]


def test_racing_repeats_log_the_batch_once(new_broker: MakeBroker) -> None:
    first = new_broker()
    second = new_broker()  # two instances, as two web processes would be
    read = appended(first)
    events = [Event(1.0, 10, None), Event(2.0, 11, None)]
    outcomes: queue.Queue[Appended] = queue.Queue()
    start = threading.Barrier(8)

    def repeat(broker: Broker) -> None:
        start.wait(WAIT)
        outcomes.put(broker.append_events("a", events, lateness_us=5, idempotency=keyed("k")))

    threads = [threading.Thread(target=repeat, args=((first, second)[i % 2],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    answers = [outcomes.get(timeout=WAIT) for _ in range(8)]
    assert sorted(answers) == [Appended(2, False)] + [Appended(2, True)] * 7
    assert read() == [("a", events)]


def test_an_idempotency_key_is_forgotten_after_its_window(broker: Broker) -> None:
    read = appended(broker)
    events = [Event(1.0, 10, None)]
    short = keyed("k", window_ms=50)
    assert broker.append_events("a", events, lateness_us=5, idempotency=short).replayed is False
    # Each poll is a repeat: replayed (nothing logged) until the key expires, then logged once.
    wait_until(
        lambda: not broker.append_events("a", events, lateness_us=5, idempotency=short).replayed
    )
    assert read() == [("a", events), ("a", events)]


def _remembered(broker: Broker, topic: str, keys: list[str]) -> int:
    """How many of `keys` of `topic` the broker's store holds (on Redis, as keys)."""
    if isinstance(broker, MemoryBroker):
        return broker.remembered_keys()
    assert isinstance(broker, RedisBroker)
    part = broker.keys.of(topic)
    client = pooled_client(broker.url, max_connections=2, socket_timeout=WAIT)
    try:
        assert client.zcard(part.idempotency_order) <= len(keys)
        return int(client.exists(*(part.idempotency(topic, key) for key in keys)))
    finally:
        client.close()


def test_idempotency_keys_are_bounded_the_soonest_to_expire_forgotten_first(
    new_broker: MakeBroker,
) -> None:
    """Past the partition's bound a new key makes it forget the key nearest the end of its
    window, counted: a repeat of that one is logged again (its window was cut short), and
    no accepted batch is ever lost or refused."""
    broker = new_broker(max_keys=5)
    read = appended(broker)
    events = [Event(1.0, 10, None)]
    keys = [f"k{n}" for n in range(8)]

    def send(key: str) -> Appended:
        return broker.append_events("a", events, lateness_us=5, idempotency=keyed(key))

    assert [send(key).evicted for key in keys] == [0, 0, 0, 0, 0, 1, 1, 1]
    assert _remembered(broker, "a", keys) == 5
    assert all(send(key).replayed for key in keys[3:])  # the newest five: repeats
    again = send("k0")  # forgotten early: a new request
    assert again == Appended(1, replayed=False, evicted=1)  # and it pushed out k3
    assert not send("k3").replayed
    assert _remembered(broker, "a", keys) == 5
    assert len(read()) == 10  # every batch accepted was logged: 8, k0 and k3 again


def test_expired_keys_leave_the_bound_as_appends_come(broker: Broker) -> None:
    """The bound counts live keys only: names of expired keys go at the next keyed append."""
    events = [Event(1.0, 10, None)]
    short = [f"s{n}" for n in range(10)]
    for key in short:
        broker.append_events("a", events, lateness_us=5, idempotency=keyed(key, window_ms=50))
    # Until the last has expired (each poll, a repeat, is replayed: it logs nothing); the
    # poll that is not remembers s9 again, for a minute.
    wait_until(
        lambda: (
            not broker.append_events(
                "a", events, lateness_us=5, idempotency=keyed(short[-1])
            ).replayed
        )
    )
    broker.append_events("a", events, lateness_us=5, idempotency=keyed("long"))
    assert _remembered(broker, "a", [*short, "long"]) == 2  # s9 again, and long
    if isinstance(broker, RedisBroker):
        client = pooled_client(broker.url, max_connections=2, socket_timeout=WAIT)
        try:
            assert client.zcard(broker.keys.of("a").idempotency_order) == 2
        finally:
            client.close()


def test_the_memory_broker_drops_expired_keys() -> None:
    """Keys do not pile up: an append drops those whose window passed."""
    now = [0.0]
    broker = MemoryBroker(Store(1, clock=lambda: now[0]))
    for n in range(100):
        broker.append_events(
            "a", [Event(1.0, 10, None)], lateness_us=5, idempotency=keyed(f"k{n}", window_ms=1000)
        )
    assert broker.remembered_keys() == 100
    now[0] = 1.0
    broker.append_events("a", [Event(1.0, 10, None)], lateness_us=5, idempotency=keyed("last"))
    assert broker.remembered_keys() == 1


# -- updates and ids -----------------------------------------------------------


def test_update_ids_strictly_increase_across_topics_and_calls(broker: Broker) -> None:
    published = publish(broker, [draft("a", 1), draft("b", 1)])
    published += publish(broker, [draft("b", 2)])
    published += publish(broker, [draft("c", 1), draft("a", 2), draft("a", 3)])

    ids = [u.id for u in published]
    assert len({i.epoch for i in ids}) == 1  # one epoch
    assert all(b.is_after(a) and b.position > a.position for a, b in itertools.pairwise(ids))
    assert [u.topic for u in published] == ["a", "b", "b", "c", "a", "a"]


@pytest.mark.parametrize("bad", ["\r", "\n", "\x00", " "])
def test_update_ids_are_safe_as_an_sse_id_field(broker: Broker, bad: str) -> None:
    (update,) = publish(broker, [draft("a", 1)])
    assert bad not in str(update.id)
    assert UpdateId.parse(str(update.id)) == update.id


def test_update_data_is_the_body_with_the_id_as_first_member(broker: Broker) -> None:
    drafts = [draft("a", 1), draft("b", 2)]
    for d, update in zip(drafts, publish(broker, drafts), strict=True):
        assert update.topic == d.topic
        assert update.clock_us == d.clock_us
        assert update.data.startswith(b'{"id":' + orjson.dumps(str(update.id)) + b",")
        assert orjson.loads(update.data) == {"id": str(update.id), **orjson.loads(d.body)}
        assert b"\n" not in update.data


def test_update_consumers_get_exactly_what_was_published_in_id_order(broker: Broker) -> None:
    first, second = Inbox(), Inbox()
    listen(broker, first)
    listen(broker, second, ("a", "b"))
    published = publish(broker, [draft("a", 1), draft("b", 1)])
    published += publish(broker, [draft("a", 2)])

    assert first.take_updates(3) == published
    assert second.take_updates(3) == published


def test_publishing_no_drafts_changes_nothing(broker: Broker) -> None:
    assert publish(broker, []) == []
    assert broker.latest(everything) == {}


def test_concurrent_publishers_deliver_in_id_order(new_broker: MakeBroker) -> None:
    consumer = new_broker()
    inbox = Inbox()
    listen(consumer, inbox)
    second = new_broker()  # a second instance too, as a second process would be
    publishers = [consumer, second]
    calls, per_call = 30, 2

    def publish_all(broker: Broker, topic: str) -> None:
        for n in range(calls):
            publish(broker, [draft(topic, n), draft(topic + "x", n)])

    threads = [
        threading.Thread(target=publish_all, args=(publishers[i % 2], f"t{i}")) for i in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT * 4)
    received = inbox.take_updates(4 * calls * per_call)

    ids = [u.id for u in received]
    assert all(b.position > a.position for a, b in itertools.pairwise(ids))
    for i in range(4):  # and each publisher's own order survives the interleaving
        ns = [orjson.loads(u.data)["n"] for u in received if u.topic == f"t{i}"]
        assert ns == list(range(calls))


def test_a_closed_feed_receives_nothing_more(broker: Broker) -> None:
    """A process's feed stops delivering once closed (twice is harmless); the same handler
    behind another feed goes on receiving each update once."""
    inbox = Inbox()
    feed, other = listen(broker, inbox), listen(broker, inbox)
    (first,) = publish(broker, [draft("a", 1)])
    assert inbox.take_updates(2) == [first, first]
    feed.close()
    feed.close()
    (second,) = publish(broker, [draft("a", 2)])
    (third,) = publish(broker, [draft("a", 3)])
    assert inbox.take_updates(2) == [second, third]  # each once, from the other feed
    other.close()


def test_a_raising_updates_handler_does_not_stop_delivery(
    broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    calls: queue.Queue[list[Update]] = queue.Queue()

    def broken_updates(updates: list[Update]) -> None:
        calls.put(updates)
        raise RuntimeError("updates handler bug")

    inbox = Inbox()
    broker.consume_updates(broken_updates).watch(["*"])
    listen(broker, inbox)
    with caplog.at_level(logging.ERROR, logger="pushsvc"):
        published = []
        for n in range(2):  # the second update proves the delivery path survived the first
            published += publish(broker, [draft("up", n)])
            assert inbox.take_updates(1) == published[-1:]
        # A reader hands over what it has read at once: the two may come in one call.
        handed: list[Update] = []
        earlier_calls = 0
        while len(handed) < len(published):
            handed += calls.get(timeout=WAIT)
            earlier_calls += 1
        assert handed == published
        # A handler's reader logs right after the handler raised, before it handles the
        # next message: once a later call is in, every earlier one is logged.
        later = publish(broker, [draft("up", 9)])
        assert inbox.take_updates(1) == later and calls.get(timeout=WAIT) == later
    logged = [r.exc_info[1] for r in caplog.records if r.levelno == logging.ERROR and r.exc_info]
    assert [str(e) for e in logged][:earlier_calls] == ["updates handler bug"] * earlier_calls


# -- history and replay ----------------------------------------------------------


def test_replay_after_an_id_is_exact_and_filters_topics(broker: Broker) -> None:
    a1, b1, a2, b2, a3 = publish(
        broker, [draft("a", 1), draft("b", 1), draft("a", 2), draft("b", 2), draft("a", 3)]
    )
    assert broker.replay(at(a1.id), everything) == Replayed([b1, a2, b2, a3])
    assert broker.replay(at(a1.id), only("a")) == Replayed([a2, a3])
    assert broker.replay(at(b1.id), only("b")) == Replayed([b2])
    assert broker.replay(at(a3.id), everything) == Replayed([])
    assert broker.replay(at(a1.id), only("zzz")) == Replayed([])


def test_replay_then_live_has_no_gap_and_no_duplicate(broker: Broker) -> None:
    inbox = Inbox()
    old = publish(broker, [draft("a", 1), draft("a", 2)])
    listen(broker, inbox, ("a",))
    new = publish(broker, [draft("a", 3)])
    replayed = broker.replay(at(old[0].id), everything)
    live = inbox.take_updates(1)
    assert replayed == Replayed([old[1], *new])
    assert live == new


@pytest.mark.parametrize("one_call", [False, True], ids=["call per update", "one call"])
def test_history_keeps_the_newest_n_and_refuses_to_replay_past_them(
    new_broker: MakeBroker, one_call: bool
) -> None:
    broker = new_broker(history=3)
    drafts = [draft("a" if n % 2 else "b", n) for n in range(5)]
    if one_call:
        updates = publish(broker, drafts)
    else:
        updates = [u for d in drafts for u in publish(broker, [d])]

    # updates[1] was trimmed
    assert broker.replay(at(updates[0].id), everything) == Replayed([], lost_all(broker))
    # updates[1] itself is gone, but nothing after it: a full replay is possible.
    assert broker.replay(at(updates[1].id), everything) == Replayed(updates[2:])
    assert broker.replay(at(updates[3].id), everything) == Replayed(updates[4:])
    assert broker.replay(at(updates[4].id), everything) == Replayed([])


# Batch sizes against a history of 4: smaller, equal, larger, and every mix of them in turn.
TRIM_SHAPES = [[1] * 7, [4, 4, 4], [9, 1], [3, 2, 5, 1], [1, 4, 1], [2, 7, 3], [5], [4, 1]]


@pytest.mark.parametrize("sizes", TRIM_SHAPES, ids=lambda sizes: "-".join(map(str, sizes)))
def test_replay_is_whole_exactly_from_the_newest_trimmed_id_on(
    new_broker: MakeBroker, sizes: list[int]
) -> None:
    # Where the history ends is read off the entries themselves (the oldest one kept names
    # the newest trimmed): after every publish, of every size, a replay from an id is whole
    # exactly when nothing after that id was trimmed.
    history = 4
    broker = new_broker(history=history)
    updates: list[Update] = []
    for size in sizes:
        n = len(updates)
        updates += publish(broker, [draft("ab"[k % 2], n + k) for k in range(size)])
        for i, update in enumerate(updates):
            replayed = broker.replay(at(update.id), everything)
            if len(updates) - (i + 1) <= history:
                assert replayed == Replayed(updates[i + 1 :]), (sizes, len(updates), i)
            else:
                assert replayed == Replayed([], lost_all(broker)), (sizes, len(updates), i)


def sized(topic: str, n: int, size: int) -> UpdateDraft:
    """An update draft whose body is `size` bytes (a message's update, as big as it likes)."""
    head = orjson.dumps({"topic": topic, "n": n, "pad": ""})
    body = head[:-2] + b"x" * (size - len(head)) + b'"}'
    assert len(body) == size
    return UpdateDraft(topic, 1_000_000 + n, body)


def first_kept(sizes: list[int], count: int, held: int) -> int:
    """The model of a bounded history: the index of its oldest update kept, the newest `count`
    and, of those, as many of the newest as hold at most `held` bytes of bodies (one at least)."""
    first = max(0, len(sizes) - count)
    while first < len(sizes) - 1 and sum(sizes[first:]) > held:
        first += 1
    return first


# Body sizes against a history of 6 updates and 1,000 bytes: small ones that the count trims,
# big ones that the bytes trim, one bigger than the bound (kept alone), and each in batches.
BYTE_SHAPES = [
    [[100]] * 12,
    [[400], [400], [400], [100, 100, 100]],
    [[300, 300, 300, 300, 300]],
    [[100, 100], [1500], [100], [600, 300, 50]],
    [[50] * 8, [990], [40, 40]],
    [[500], [500], [250, 250, 500]],
]


def _sizes_id(batches: list[list[int]]) -> str:
    return "-".join(str(size) for batch in batches for size in batch)


@pytest.mark.parametrize("batches", BYTE_SHAPES, ids=_sizes_id)
def test_history_holds_no_more_than_its_bytes_and_replays_exactly_what_it_holds(
    new_broker: MakeBroker, batches: list[list[int]]
) -> None:
    # 10,000 updates of 64 KiB messages would be 650 MB a partition: the history is bounded in
    # bytes of bodies too, trimming its oldest updates past either bound, never its newest.
    count, held = 6, 1000
    broker = new_broker(history=count, history_bytes=held)
    updates: list[Update] = []
    sizes: list[int] = []
    for batch in batches:
        n = len(updates)
        drafts = [sized("ab"[(n + k) % 2], n + k, size) for k, size in enumerate(batch)]
        updates += publish(broker, drafts)
        sizes += batch
        first = first_kept(sizes, count, held)
        for i, update in enumerate(updates):
            replayed = broker.replay(at(update.id), everything)
            if i + 1 >= first:
                assert replayed == Replayed(updates[i + 1 :]), (sizes, i, first)
            else:
                assert replayed == Replayed([], lost_all(broker)), (sizes, i, first)
        for topic in "ab":
            kept = [u for u in updates[first:] if u.topic == topic]
            assert broker.history(topic, limit=100).updates == kept, (sizes, topic)


# --history-bytes against a history of 4 updates and bodies of 100 bytes: the hold keeps all
# it names within the bytes (10,000 hold the 25 updates); a byte bound under what it names
# trims held updates even so (1,000 bytes: the newest 10).
HOLD_BYTES = [10_000, 1_000]


@pytest.mark.parametrize("held", HOLD_BYTES, ids=lambda held: f"{held}B")
def test_a_hold_keeps_the_history_past_its_count_and_never_past_its_bytes(
    new_broker: MakeBroker, held: int
) -> None:
    # The sessionizer holds the history it has not read: past --history, every update it has
    # not read. --history-bytes is the hold's one bound, a hard memory bound: where it trims
    # held updates, the reader's replay finds the partition lost, which it counts as a gap.
    count = 4
    broker = new_broker(history=count, history_bytes=held)
    assert isinstance(broker, MemoryBroker | RedisBroker)  # a SessionKeeper
    updates = publish(broker, [sized("a", 0, 100)])
    broker.hold_history("sessionizer", at(updates[0].id), everything)
    for start in range(1, 25, 3):
        updates += publish(broker, [sized("ab"[n % 2], n, 100) for n in range(start, start + 3)])
        unread = len(updates) - 1  # every update after the one the hold names
        first = first_kept([100] * len(updates), max(count, unread), held)
        for i, update in enumerate(updates):
            replayed = broker.replay(at(update.id), everything)
            if i + 1 >= first:
                assert replayed == Replayed(updates[i + 1 :]), (len(updates), i, first)
            else:
                assert replayed == Replayed([], lost_all(broker)), (len(updates), i, first)


def test_a_long_run_of_big_updates_reaches_consumers_whole_and_in_order(broker: Broker) -> None:
    # A batch POST's updates travel in runs of bounded size (64 KiB a message on Redis):
    # 300 updates of 4 KB, one topic, then another topic's, arrive one by one in id order.
    inbox = Inbox()
    listen(broker, inbox)
    pad = "x" * 4000
    drafts = [
        UpdateDraft(topic, n, orjson.dumps({"topic": topic, "n": n, "pad": pad}))
        for topic in ("a", "b")
        for n in range(300)
    ]
    published = publish(broker, drafts)
    assert inbox.take_updates(600) == published
    assert broker.latest(everything)["a"] == published[299]


def test_replay_of_another_epoch_is_a_gap(broker: Broker) -> None:
    first, _ = publish(broker, [draft("a", 1), draft("a", 2)])
    other = "0" if first.id.epoch != "0" else "1"
    foreign = at(UpdateId(other, first.id.ms, first.id.seq))
    assert broker.replay(foreign, everything) == Replayed([], lost_all(broker))


def test_replay_on_an_empty_history_is_a_gap(broker: Broker) -> None:
    assert broker.replay(at(UpdateId("ab12cd34", 0, 1)), everything).lost == lost_all(broker)


def test_replay_of_an_id_never_issued_is_a_gap(broker: Broker) -> None:
    (last,) = publish(broker, [draft("a", 1)])
    epoch, ms, seq = last.id.epoch, last.id.ms, last.id.seq
    assert broker.replay(at(UpdateId(epoch, ms, seq + 1)), everything).lost == lost_all(broker)
    assert broker.replay(at(UpdateId(epoch, ms + 1, 0)), everything).lost == lost_all(broker)


def test_a_partition_absent_from_the_cursor_replays_all_its_history_keeps(
    new_broker: MakeBroker,
) -> None:
    broker = new_broker(history=3)
    assert broker.replay(Cursor(), everything) == Replayed([])  # nothing kept yet
    updates = publish(broker, [draft("a" if n % 2 else "b", n) for n in range(3)])
    # Every topic here is in a partition the empty cursor has nothing of: no gap, and all
    # that is kept, in publish order.
    assert broker.replay(Cursor(), everything) == Replayed(updates)
    assert broker.replay(Cursor(), only("a")) == Replayed([updates[1]])


def test_a_partition_absent_from_the_cursor_that_trimmed_a_topics_first_update_is_lost(
    new_broker: MakeBroker,
) -> None:
    # A stream with nothing of a partition wants every update of the topics it reads there
    # (a topic new since it went away): one trimmed is a gap, never a silent loss. Here the
    # first update of a is trimmed, all of b are kept.
    broker = new_broker(history=3)
    _, *bs = publish(broker, [draft("a", 1), *(draft("b", n) for n in range(2, 5))])
    assert broker.replay(Cursor(), everything) == Replayed([], lost_all(broker))
    assert broker.replay(Cursor(), only("a")) == Replayed([], lost_all(broker))
    # Every update of b is kept: a stream of b alone (or of a topic with none) loses nothing.
    assert broker.replay(Cursor(), only("b")) == Replayed(bs)
    assert broker.replay(Cursor(), only("c")) == Replayed([])


def test_a_cursor_at_the_history_starts_replays_everything_kept(new_broker: MakeBroker) -> None:
    # Where a replay from nothing finds a trimmed partition lost, one from where its history
    # starts gets every update it keeps (a Mercure `earliest`, or its search for an id).
    broker = new_broker(history=3)
    assert broker.history_starts() == {}
    a1, *kept = publish(
        broker, [draft("a", 1), *(draft("a" if n % 2 else "b", n) for n in range(2, 5))]
    )
    starts = broker.history_starts()
    assert list(starts) == [broker.partition_of("a")] == [a1.id.partition]
    assert not starts[a1.id.partition].is_after(kept[0].id)
    assert broker.replay(Cursor(starts.values()), everything).updates == kept
    assert broker.replay(Cursor(), everything).updates == []


def test_a_cursor_naming_a_partition_the_broker_never_issued_is_lost(broker: Broker) -> None:
    (a1, a2) = publish(broker, [draft("a", 1), draft("a", 2)])
    # A partition past the broker's: its epoch names it (partition 1023, hex 3ff).
    stranger = UpdateId("3ff" + "ab12cd34", 0, 1)
    assert stranger.partition == 1023 >= broker.partitions
    replayed = broker.replay(Cursor([a1.id, stranger]), everything)
    assert 1023 in replayed.lost
    # What is not lost replays exactly (a broker with one history loses it all).
    assert replayed.updates == ([] if broker.partition_of("a") in replayed.lost else [a2])


def test_every_topic_has_one_partition_among_the_brokers(broker: Broker) -> None:
    assert 1 <= broker.partitions <= 1024
    topics = [f"t{n}" for n in range(50)]
    partitions = [broker.partition_of(topic) for topic in topics]
    assert all(0 <= p < broker.partitions for p in partitions)
    assert partitions == [broker.partition_of(topic) for topic in topics]  # stable


def test_a_replayed_update_names_the_partition_of_its_history(broker: Broker) -> None:
    # Every partition's updates carry its epoch: the cursor keys them by the id's partition.
    first = publish(broker, [draft("a", 1)])
    updates = publish(broker, [draft(t, 2) for t in ("a", "b", "c")])
    replayed = broker.replay(at(first[0].id), everything)
    assert replayed == Replayed(updates)
    assert {u.id.partition for u in replayed.updates} <= set(range(broker.partitions))


# -- one topic's history (GET /topics/{t}/history) ----------------------------------------


def test_history_without_since_is_the_topics_newest_updates_oldest_first(broker: Broker) -> None:
    a1, _b1, a2, a3, b2 = publish(
        broker, [draft("a", 1), draft("b", 1), draft("a", 2), draft("a", 3), draft("b", 2)]
    )
    assert broker.history("a", limit=10) == HistoryPage([a1, a2, a3], b2.id, more=False)
    assert broker.history("a", limit=2) == HistoryPage([a2, a3], b2.id, more=True)
    assert broker.history("b", limit=1) == HistoryPage([b2], b2.id, more=True)
    assert broker.history("nothing", limit=5) == HistoryPage([], b2.id, more=False)
    # `resume` is the newest id of the whole history (here another topic's): a stream resumed
    # from it continues the page with no gap and no duplicate.
    (a4,) = publish(broker, [draft("a", 4)])
    assert broker.replay(at(b2.id), only("a")) == Replayed([a4])


def test_history_on_an_empty_history_has_nothing_to_resume_from(broker: Broker) -> None:
    assert broker.history("a", limit=5) == HistoryPage([], None, more=False)


def test_history_after_an_id_pages_forward_and_resumes_where_the_page_ends(
    broker: Broker,
) -> None:
    a1, b1, a2, _b2, a3, b3 = publish(broker, [draft(t, n) for n in (1, 2, 3) for t in ("a", "b")])
    assert broker.history("a", after=a1.id, limit=10) == HistoryPage([a2, a3], b3.id, False)
    # A full page resumes at its own last update: a stream from there brings what it left.
    first = broker.history("a", after=b1.id, limit=1)
    assert first == HistoryPage([a2], a2.id, more=True)
    assert broker.replay(at(first.resume), only("a")) == Replayed([a3])  # type: ignore[arg-type]
    assert broker.history("a", after=first.resume, limit=1) == HistoryPage([a3], b3.id, False)
    assert broker.history("a", after=b3.id, limit=10) == HistoryPage([], b3.id, False)


def test_history_since_a_time_is_inclusive_on_the_update_clock(broker: Broker) -> None:
    a1, a2, _b1, a3 = publish(
        broker, [draft("a", 1, 10), draft("a", 2, 20), draft("b", 1, 25), draft("a", 3, 30)]
    )
    assert broker.history("a", since_us=20, limit=10) == HistoryPage([a2, a3], a3.id, False)
    assert broker.history("a", since_us=21, limit=10) == HistoryPage([a3], a3.id, False)
    assert broker.history("a", since_us=0, limit=2) == HistoryPage([a1, a2], a2.id, True)
    assert broker.history("a", since_us=31, limit=10) == HistoryPage([], a3.id, False)


def test_history_after_a_lost_id_says_gap_and_starts_at_the_oldest_kept(
    new_broker: MakeBroker,
) -> None:
    broker = new_broker(history=3)
    updates = publish(broker, [draft("a", n) for n in range(5)])
    page = broker.history("a", after=updates[0].id, limit=10)
    assert page == HistoryPage(updates[2:], updates[4].id, more=False, gap=True)
    # updates[1] is trimmed but nothing after it: the history continues from it exactly.
    assert broker.history("a", after=updates[1].id, limit=10).gap is False
    foreign = UpdateId("0" if updates[0].id.epoch != "0" else "1", 0, 1)
    assert broker.history("a", after=foreign, limit=1) == HistoryPage(
        updates[2:3], updates[2].id, more=True, gap=True
    )


def test_history_finds_a_rare_topic_among_many_others(new_broker: MakeBroker) -> None:
    broker = new_broker(history=2000)
    # Enough entries that the Redis read takes several chunks in either direction.
    drafts = [draft("rare" if n % 97 == 0 else f"busy{n % 3}", n) for n in range(1500)]
    updates = [u for i in range(0, 1500, 500) for u in publish(broker, drafts[i : i + 500])]
    rare = [u for u in updates if u.topic == "rare"]
    head = updates[-1].id
    assert broker.history("rare", limit=100) == HistoryPage(rare, head, more=False)
    assert broker.history("rare", limit=3) == HistoryPage(rare[-3:], head, more=True)
    assert broker.history("rare", after=updates[0].id, limit=100) == HistoryPage(
        rare[1:], head, more=False
    )
    assert broker.history("rare", since_us=rare[5].clock_us, limit=100) == HistoryPage(
        rare[5:], head, more=False
    )


def alert(n: int, clock_us: int) -> UpdateDraft:
    body = orjson.dumps({"alert": "hot", "topic": "a", "state": "firing", "n": n})
    return alert_draft(ALERTS, clock_us, body, f"hot\x1fa\x1f{n}", active=True)


def test_history_of_alerts_is_their_newest_changes_across_publishes(broker: Broker) -> None:
    # An alert change is never its topic's latest, so the chain of `_alerts` in the history
    # starts elsewhere than a topic's; it must still reach back across separate publishes.
    first = publish(broker, [draft("a", 1), alert(1, 30), alert(2, 10)])
    second = publish(broker, [draft("b", 1), alert(3, 20)])
    (third,) = publish(broker, [alert(4, 5)])
    changes = [first[1], first[2], second[1], third]
    assert broker.history(ALERTS, limit=10) == HistoryPage(changes, third.id, more=False)
    assert broker.history(ALERTS, limit=2) == HistoryPage(changes[2:], third.id, more=True)
    assert broker.history(ALERTS, after=first[1].id, limit=10) == HistoryPage(
        changes[1:], third.id, more=False
    )
    assert broker.latest(everything).keys() == {"a", "b"}


def test_alert_changes_outlive_the_history_for_their_own_retention(
    new_broker: MakeBroker,
) -> None:
    """The history keeps 2 updates; the alert changes stay for their retention (0.3 s here),
    then go as changes come, and a read after one that went is a gap."""
    broker = new_broker(history=2, alert_retention_us=300_000)
    first = publish(broker, [alert(1, 10), alert(2, 20)])
    for n in range(10):
        publish(broker, [draft("a", n)])
    assert broker.history(ALERTS, limit=10).updates == first
    assert broker.history(ALERTS, after=first[0].id, limit=10).updates == first[1:]
    assert not broker.history(ALERTS, after=first[0].id, limit=10).gap
    newer: list[Update] = []

    def first_gone() -> bool:
        newer.extend(publish(broker, [alert(3 + len(newer), 30)]))
        return first[0] not in broker.history(ALERTS, limit=1000).updates

    wait_until(first_gone, timeout=WAIT, what="the oldest alert change to go")
    kept = broker.history(ALERTS, limit=1000).updates
    # The oldest go first: what is kept is the newest of all the changes, in order. The
    # second of the first two may outlive the first by a millisecond (their ids' times
    # differed on a loaded machine), so it is not assumed gone with it.
    assert kept == (first + newer)[-len(kept) :] and newer[-1] in kept
    assert broker.history(ALERTS, after=first[0].id, limit=1000).gap


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
def test_resuming_from_a_malformed_id_is_a_gap(
    broker: Broker, mangle: Callable[[str], str]
) -> None:
    first, _ = publish(broker, [draft("a", 1), draft("a", 2)])
    bad = mangle(str(first.id))
    assert bad != str(first.id)
    hub = Hub(queue_size=10, slow_timeout_us=10**7)
    primed = subscribe(broker, hub, broker.consume_updates(hub.dispatch), everything, bad)
    assert primed.replay == [] and primed.gap
    assert primed.snapshot is not None and primed.snapshot.latest.keys() == {"a"}


def test_latest_is_the_newest_update_of_each_topic(broker: Broker) -> None:
    assert broker.latest(everything) == {}
    a1, b1, a2 = publish(broker, [draft("a", 1), draft("b", 1), draft("a", 2)])
    assert broker.latest(everything) == {"a": a2, "b": b1}
    assert broker.latest(only("b")) == {"b": b1}
    assert broker.latest(only("b", "nothing-yet")) == {"b": b1}
    (a3,) = publish(broker, [draft("a", 3)])
    assert broker.latest(only("a")) == {"a": a3}
    assert a1 not in broker.latest(everything).values()
    (s1,) = publish(broker, [draft("s.x", 1)])
    assert broker.latest(only("s.*")) == {"s.x": s1}
    assert broker.latest(only("s.*", "b")) == {"s.x": s1, "b": b1}


def test_latest_outlives_the_history(new_broker: MakeBroker) -> None:
    broker = new_broker(history=1)
    (a,) = publish(broker, [draft("a", 1)])
    (b,) = publish(broker, [draft("b", 1)])
    assert broker.latest(everything) == {"a": a, "b": b}


# -- the topic clock and lateness -----------------------------------------------------


@pytest.mark.parametrize(
    ("clock", "batch", "late_index"),
    [
        (None, [0, -5, 10], None),  # no clock yet: the batch's own first event sets it
        (100, [100 - 5], None),  # exactly at the limit: on time
        (100, [100 - 5 - 1], 0),  # a microsecond past it
        (100, [200, 1], 1),  # the batch's earlier event moved the clock
        (100, [150, 145, 200, 194], 3),
        (-(10**17), [-(10**17) - 6], 0),  # far before 1970, beyond a double's exact integers
        (2 * 10**17, [2 * 10**17 - 5, 2 * 10**17 - 6], 1),  # year ~8300
    ],
)
def test_lateness_is_judged_against_the_topic_clock(
    broker: Broker, clock: int | None, batch: list[int], late_index: int | None
) -> None:
    read = appended(broker)
    lateness = 5
    if clock is not None:
        broker.append_events("a", [Event(0.0, clock, None)], lateness_us=lateness)
    before = read()
    events = [Event(float(i), ts, None) for i, ts in enumerate(batch)]
    if late_index is None:
        broker.append_events("a", events, lateness_us=lateness)
        assert read() == [*before, ("a", events)]
    else:
        with pytest.raises(LateEvent) as late:
            broker.append_events("a", events, lateness_us=lateness)
        assert late.value.index == late_index
        assert read() == before  # a late batch appends nothing
    # Another topic has its own clock.
    broker.append_events("b", [Event(1.0, -(10**15), None)], lateness_us=lateness)


def test_an_idle_tick_moves_the_topic_clock(broker: Broker) -> None:
    append(broker, "a", [Event(1.0, 10 * 10**6, None)])
    # The shard's active aggregator logs its ticks (pushsvc.aggregate.shard_runner).
    hold_lease(broker)
    shard_log = event_log(broker)
    shard_log.append_ticks("token", {"a": 100 * 10**6}, shard_log.read(FIRST, count=10)[-1].id)
    shard_log.close()
    with pytest.raises(LateEvent):
        append(broker, "a", [Event(2.0, 100 * 10**6 - LATENESS_US - 1, None)])
    append(broker, "a", [Event(2.0, 100 * 10**6 - LATENESS_US, None)])


@pytest.mark.redis
def test_idle_ticks_proposed_before_a_deletion_are_not_logged(
    redis_server: RedisServer, prefix: str
) -> None:
    # The aggregator proposes ticks from the log as it applied it; one that had not applied a
    # deletion yet must not bring the deleted topic's clock back.
    broker = RedisBroker(redis_server.url, prefix=prefix, partitions=1)
    client = single_client(broker.url, socket_timeout=WAIT)
    event_log = RedisEventLog(broker.url, broker.keys, (0, 1), socket_timeout=WAIT)
    try:
        client.set(broker.keys.shard((0, 1)).lease, "token")
        append(broker, "a", [Event(1.0, 10**18, None)])
        seen = event_log.read(FIRST, count=10)[-1].id
        assert broker.delete_topic("a")
        assert event_log.append_ticks("token", {"a": 10**18 + 1}, seen) is None
        append(broker, "a", [Event(2.0, 10**6, None)])  # afresh, as if no tick came
        after_deletion = event_log.read(FIRST, count=10)[-1].id
        assert event_log.append_ticks("token", {"a": 20 * 10**6}, after_deletion) is not None
        with pytest.raises(LateEvent):
            append(broker, "a", [Event(3.0, 10**6, None)])
    finally:
        event_log.close()
        client.close()
        broker.close()


# -- the topics kept: --max-topics, and idle topics forgotten (--topic-ttl) -----------------


def forget(broker: Broker, topic: str) -> list[str]:
    """Forget `topic` as the deployment's aggregator does once it is idle: the shard's lease
    holder, which has applied the whole log."""
    hold_lease(broker)
    shard_log = event_log(broker)
    try:
        entries = shard_log.read(FIRST, count=10_000)
        position = entries[-1].id if entries else FIRST
        clock = topic_clock(broker, topic)
        clocks = {} if clock is None else {topic: clock}
        return shard_log.forget("token", position, clocks)
    finally:
        shard_log.close()
        release_lease(broker)


def topic_clock(broker: Broker, topic: str) -> int | None:
    """The clock the shard's log keeps for `topic` (what its aggregator saw)."""
    if isinstance(broker, MemoryBroker):
        return broker.store.parts[0].clocks.get(topic)
    assert isinstance(broker, RedisBroker)
    client = single_client(broker.url, socket_timeout=WAIT)
    try:
        clock = client.hget(broker.keys.shard((0, 1)).clocks, topic)
    finally:
        client.close()
    return None if clock is None else time_of_key(clock)


def test_an_event_for_one_topic_too_many_is_refused_and_changes_nothing(
    new_broker: MakeBroker,
) -> None:
    broker = new_broker(max_topics=2)
    read = appended(broker)
    append(broker, "a", [Event(1.0, 1, None)])
    append(broker, "b", [Event(2.0, 1, None)])
    before = read()
    with pytest.raises(TooManyTopics) as refused:
        append(broker, "c", [Event(3.0, 1, None), Event(4.0, 2, None)])
    assert refused.value.code == "too_many_topics"
    assert "--max-topics" in refused.value.message
    assert read() == before  # nothing logged, so nothing will yield an update
    assert broker.topic_stats().live == 2
    # The topics kept still take events.
    append(broker, "a", [Event(5.0, 2, None)])
    append(broker, "b", [Event(6.0, 2, None)])
    assert read() == [*before, ("a", [Event(5.0, 2, None)]), ("b", [Event(6.0, 2, None)])]


def test_racing_producers_cannot_create_more_topics_than_the_limit(
    new_broker: MakeBroker,
) -> None:
    first = new_broker(max_topics=5)
    second = new_broker(max_topics=5)  # two instances, as two web processes would be
    outcomes: queue.Queue[bool] = queue.Queue()
    start = threading.Barrier(4)

    def produce(broker: Broker, name: str) -> None:
        start.wait(WAIT)
        for n in range(10):
            try:
                append(broker, f"{name}-{n}", [Event(1.0, 1, None)])
                outcomes.put(True)
            except TooManyTopics:
                outcomes.put(False)

    threads = [
        threading.Thread(target=produce, args=((first, second)[i % 2], f"p{i}")) for i in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT * 4)
    accepted = [outcomes.get(timeout=WAIT) for _ in range(40)]
    assert accepted.count(True) == 5
    assert first.topic_stats().live == 5


def test_a_forgotten_topic_makes_room_and_comes_back_as_a_new_topic(
    new_broker: MakeBroker,
) -> None:
    broker = new_broker(max_topics=2)
    read = appended(broker)
    append(broker, "a", [Event(1.0, 100 * 10**6, None)])
    append(broker, "b", [Event(2.0, 100 * 10**6, None)])
    (a1, _) = publish(broker, [draft("a", 1), draft("b", 1)])
    assert broker.topic_stats() == TopicStats(live=2, forgotten=0)

    assert forget(broker, "a") == ["a"]
    assert forget(broker, "a") == []  # once
    assert broker.latest(everything).keys() == {"b"}
    assert not broker.replay(at(a1.id), everything).lost  # the history is history
    assert broker.topic_stats() == TopicStats(live=1, forgotten=1)
    append(broker, "c", [Event(3.0, 1, None)])  # fits now
    with pytest.raises(TooManyTopics):
        append(broker, "a", [Event(4.0, 100 * 10**6, None)])  # a is new again: one too many

    assert forget(broker, "c") == ["c"]
    logged = len(read())
    # Back as a new topic: no clock to be late against (its old one was 100 s).
    early = [Event(5.0, 1, None)]
    append(broker, "a", early)
    assert read()[logged:] == [("a", early)]
    assert broker.topic_stats() == TopicStats(live=2, forgotten=2)


# -- DELETE /topics/{topic} ------------------------------------------------------------


def logged(broker: Broker) -> Callable[[], list[tuple[str, object]]]:
    """What the aggregator of the (one) shard gets, deletions included: ("events", topic) and
    ("deleted", topic), in order."""
    shard_log = event_log(broker)

    def read() -> list[tuple[str, object]]:
        entries = shard_log.read(FIRST, count=10_000)
        return [
            ("events", e.topic) if e.deleted is None else ("deleted", e.deleted) for e in entries
        ]

    return read


def test_a_deleted_topics_clock_is_gone_so_an_event_far_behind_it_starts_it_afresh(
    broker: Broker,
) -> None:
    far_future = 10**18  # a wrong clock: every event of now would be late against it
    append(broker, "a", [Event(1.0, far_future, None)])
    with pytest.raises(LateEvent):
        append(broker, "a", [Event(2.0, 10**6, None)])
    assert broker.topic_stats().live == 1

    assert broker.delete_topic("a") is True
    assert broker.topic_stats().live == 0
    assert broker.delete_topic("a") is False  # once: a retry finds nothing to delete
    append(broker, "a", [Event(2.0, 10**6, None)])  # a new topic: nothing to be late against
    assert broker.topic_stats().live == 1


def test_a_topic_is_kept_from_its_first_event_until_it_is_deleted(broker: Broker) -> None:
    assert broker.keeps_topic("a") is False
    append(broker, "a", [Event(1.0, 1, None)])
    assert (broker.keeps_topic("a"), broker.keeps_topic("b")) == (True, False)
    assert broker.delete_topic("a")
    assert broker.keeps_topic("a") is False


def test_deleting_a_topic_the_broker_does_not_keep_changes_nothing(broker: Broker) -> None:
    read = logged(broker)
    append(broker, "a", [Event(1.0, 1, None)])
    before = read()
    assert broker.delete_topic("never-posted") is False
    assert read() == before
    assert broker.topic_stats().live == 1


def test_a_deletion_reaches_the_aggregator_in_order_with_the_batches(broker: Broker) -> None:
    read = logged(broker)
    append(broker, "a", [Event(1.0, 1, None)])
    append(broker, "b", [Event(1.0, 1, None)])
    assert broker.delete_topic("a")
    append(broker, "a", [Event(2.0, 1, None)])
    assert read() == [("events", "a"), ("events", "b"), ("deleted", "a"), ("events", "a")]


def test_a_deletion_drops_the_topics_latest_update_at_once(broker: Broker) -> None:
    append(broker, "a", [Event(1.0, 1, None)])
    append(broker, "b", [Event(1.0, 1, None)])
    publish(broker, [draft("a", 1), draft("b", 1)])
    assert broker.delete_topic("a")
    assert broker.latest(everything).keys() == {"b"}


def point(topic: str, t_s: int, group_id: str = "") -> UpdateDraft:
    write = SeriesWrite("1s", group_id, t_s * 10**6, b"packed %d" % t_s, 0)
    return point_draft(topic, (t_s + 1) * 10**6, write, {"count": 1})


def grouped(topic: str, n: int, gid: str) -> UpdateDraft:
    group = orjson.dumps({"key": {"k": gid}, "windows": {}})
    plain = draft(topic, n)
    return UpdateDraft(plain.topic, plain.clock_us, plain.body, ((gid, group),))


def series_of(broker: Broker, topic: str, group_id: str = "") -> list[int]:
    page = broker.series(
        topic,
        resolution="1s",
        group_id=group_id,
        since_us=0,
        until_us=10**12,
        retention_us=10**12,
        limit=100,
    )
    return [t for t, _ in page.points]


def test_a_published_deletion_drops_the_topics_groups_and_series_and_keeps_the_others(
    broker: Broker,
) -> None:
    publish(broker, [grouped("a", 1, "x"), point("a", 1), point("a", 1, "x"), grouped("b", 1, "y")])
    publish(broker, [point("b", 1)])
    assert broker.latest_groups(["a", "b"]).keys() == {"a", "b"}
    assert series_of(broker, "a") == series_of(broker, "a", "x") == [10**6]

    # In one batch with the deleted topic's last updates: they go with it.
    publish(broker, [grouped("a", 2, "z"), point("a", 2), deletion_draft("a", 3)])
    assert broker.latest(everything).keys() == {"b"}
    assert broker.latest_groups(["a", "b"]).keys() == {"b"}
    assert series_of(broker, "a") == series_of(broker, "a", "x") == []
    assert series_of(broker, "b") == [10**6]

    # Deleted twice in one batch (a new event between): each deletion drops what came before.
    publish(broker, [deletion_draft("a", 3), draft("a", 4), deletion_draft("a", 4)])
    assert broker.latest(everything).keys() == {"b"}

    # The topic starts afresh, its buckets where they fall (even before the old ones).
    (a1, *_) = publish(broker, [grouped("a", 1, "x"), point("a", 0)])
    assert broker.latest(everything).keys() == {"a", "b"}
    assert broker.latest(only("a")) == {"a": a1}
    assert series_of(broker, "a") == [0]


def listed(broker: Broker, *selectors: str, limit: int = 2) -> list[str]:
    """Every topic `selectors` allow, read a page of `limit` at a time (`latest_page`)."""
    names: list[str] = []
    after = None
    while True:
        page = broker.latest_page(topic_ranges(selectors), after=after, limit=limit)
        assert len(page.latest) <= limit
        names += page.latest
        if page.next is None:
            return names
        after = page.next


def test_latest_pages_list_topics_in_name_order_and_lose_those_deleted_or_forgotten(
    broker: Broker,
) -> None:
    for topic in ("c", "a.2", "b", "a.1", "d"):
        append(broker, topic, [Event(1.0, 1, None)])
    published = publish(broker, [draft(t, 1) for t in ("c", "a.2", "b", "a.1", "d")])
    assert listed(broker, "*") == ["a.1", "a.2", "b", "c", "d"]
    assert listed(broker, "a.*", "c", "nothing-yet") == ["a.1", "a.2", "c"]
    page = broker.latest_page(topic_ranges(["*"]), after="a.2", limit=2)
    assert page.latest == {
        u.topic: TopicHead(u.id.text, u.clock_us) for u in published if u.topic in ("b", "c")
    }
    assert page.next == "c"
    assert broker.delete_topic("b")  # DELETE /topics/b: its latest goes at once
    publish(broker, [deletion_draft("c", 2)])  # as the aggregator publishes it
    assert forget(broker, "d") == ["d"]
    assert listed(broker, "*") == ["a.1", "a.2"]
    publish(broker, [draft("b", 3)])  # back as a new topic
    assert listed(broker, "*", limit=1) == ["a.1", "a.2", "b"]


def test_a_topics_history_starts_after_its_deletion_and_a_read_across_it_is_a_gap(
    broker: Broker,
) -> None:
    old = publish(broker, [draft("a", 1), draft("b", 1), draft("a", 2)])
    (deletion,) = publish(broker, [deletion_draft("a", old[-1].clock_us)])
    assert deletion.is_deletion and deletion.event == "snapshot"
    assert orjson.loads(deletion.data) == {
        "id": deletion.id.text,
        "gap": True,
        "topics": {},
        "deleted": ["a"],
    }
    assert broker.history("a", limit=10) == HistoryPage([], deletion.id, more=False)
    assert broker.history("a", after=old[0].id, limit=10) == HistoryPage(
        [], deletion.id, more=False, gap=True
    )
    new = publish(broker, [draft("a", 1, clock_us=5), draft("a", 2, clock_us=6)])
    assert broker.history("a", limit=10) == HistoryPage(new, new[-1].id, more=False)
    assert broker.history("a", after=old[0].id, limit=10) == HistoryPage(
        new, new[-1].id, more=False, gap=True
    )
    assert broker.history("a", after=new[0].id, limit=10) == HistoryPage(
        new[1:], new[-1].id, more=False
    )
    assert broker.history("a", since_us=0, limit=10).updates == new
    assert broker.history("b", limit=10).updates == [old[1]]


def test_a_topic_forgotten_after_its_deletion_still_reads_from_after_it(broker: Broker) -> None:
    append(broker, "a", [Event(1.0, 100 * 10**6, None)])
    (a1,) = publish(broker, [draft("a", 1)])
    publish(broker, [deletion_draft("a", 1)])
    (a2,) = publish(broker, [draft("a", 2)])
    assert forget(broker, "a") == ["a"]
    (a3,) = publish(broker, [draft("a", 3)])
    assert broker.history("a", after=a1.id, limit=10) == HistoryPage(
        [a2, a3], a3.id, more=False, gap=True
    )


def test_a_resume_across_a_deletion_replays_it_in_its_place(broker: Broker) -> None:
    old = publish(broker, [draft("a", 1), draft("a", 2)])
    (deletion,) = publish(broker, [deletion_draft("a", 2)])
    (new,) = publish(broker, [draft("a", 1, clock_us=5)])
    # Everything after the cursor, in order: the deleted topic's last update was current when
    # it was published; the deletion (a "gap": true snapshot) then says it is gone.
    assert broker.replay(at(old[0].id), only("a")) == Replayed([old[1], deletion, new])
    hub = Hub(queue_size=10, slow_timeout_us=10**7)
    primed = subscribe(broker, hub, broker.consume_updates(hub.dispatch), only("a"), None)
    assert primed.snapshot is not None and primed.snapshot.latest == {"a": new}


# -- subscriptions: replay or snapshot, and the floor ------------------------------------


def test_a_subscription_resumes_with_an_exact_replay(broker: Broker) -> None:
    a1, _, a2 = publish(broker, [draft("a", 1), draft("b", 1), draft("a", 2)])
    hub = Hub(queue_size=10, slow_timeout_us=10**7)
    primed = subscribe(broker, hub, broker.consume_updates(hub.dispatch), only("a"), str(a1.id))
    assert primed.replay == [a2] and not primed.gap and primed.snapshot is None
    assert primed.client.queue.floor == at(a2.id)
    assert b"".join(primed.pages(None, 1 << 62)) == a2.sse


def test_a_subscription_without_an_id_starts_from_a_snapshot(broker: Broker) -> None:
    a1, b1 = publish(broker, [draft("a", 1), draft("b", 1)])
    hub = Hub(queue_size=10, slow_timeout_us=10**7)
    primed = subscribe(broker, hub, broker.consume_updates(hub.dispatch), everything, None)
    assert primed.replay == [] and not primed.gap
    assert primed.snapshot is not None and primed.snapshot.latest == {"a": a1, "b": b1}
    assert primed.client.queue.floor == at(b1.id)
    assert b"".join(primed.pages(None, 1 << 62)).startswith(
        b"id: " + str(b1.id).encode() + b"\nevent: snapshot\n"
    )
    assert hub.client_count == 1


# -- lifecycle -------------------------------------------------------------------


def test_ping_answers(broker: Broker) -> None:
    broker.ping()


def test_a_closed_broker_refuses_work(broker: Broker) -> None:
    broker.close()
    broker.close()  # idempotent
    with pytest.raises(BrokerUnavailable):
        append(broker, "a", [Event(1.0, 1, None)])
    with pytest.raises(BrokerUnavailable):
        publish(broker, [draft("a", 1)])
    with pytest.raises(BrokerUnavailable):
        broker.ping()
    with pytest.raises(BrokerUnavailable):
        broker.consume_updates(Inbox().updates)


def test_history_must_hold_at_least_one_update(new_broker: MakeBroker) -> None:
    with pytest.raises(ValueError):
        new_broker(history=0)


# -- Redis only: several processes on one Redis -----------------------------------


@pytest.mark.redis
def test_instances_on_one_redis_share_the_log_updates_history_and_latest(
    redis_server: RedisServer, prefix: str
) -> None:
    web = RedisBroker(redis_server.url, prefix=prefix, history=10)
    aggregator = RedisBroker(redis_server.url, prefix=prefix, history=10)
    standby = RedisBroker(redis_server.url, prefix=prefix, history=10)
    stranger = RedisBroker(redis_server.url, prefix=prefix + "other:", history=10)
    try:
        updates, strange = Inbox(), Inbox()
        listen(web, updates)
        listen(stranger, strange)
        read, read_strange = appended(aggregator), appended(stranger)

        append(web, "orders", [Event(1.0, 1, None)])
        assert read() == [("orders", [Event(1.0, 1, None)])]

        first = publish(aggregator, [draft("orders", 1)])
        second = publish(standby, [draft("orders", 2)])
        assert second[0].id.is_after(first[0].id)
        assert first[0].id.epoch == second[0].id.epoch
        assert updates.take_updates(2) == first + second
        assert web.replay(at(first[0].id), everything) == Replayed(second)
        assert web.latest(everything) == {"orders": second[0]}

        assert stranger.latest(everything) == {}
        # Its one partition with a position is lost; the others have nothing to replay.
        assert stranger.replay(at(first[0].id), everything) == Replayed(
            [], frozenset({first[0].id.partition})
        )
        assert read_strange() == []
        assert strange.empty()  # another prefix is another world
    finally:
        for broker in (web, aggregator, standby, stranger):
            broker.close()


@pytest.mark.redis
def test_a_process_receives_only_the_topics_it_watches_each_once(
    redis_server: RedisServer, prefix: str
) -> None:
    broker = RedisBroker(redis_server.url, prefix=prefix, history=100)
    try:
        inbox = Inbox()
        feed = broker.consume_updates(inbox.updates)
        feed.watch(["a", "s.*"])
        a, sx, _ = publish(broker, [draft("a", 1), draft("s.x", 1), draft("b", 1)])
        (marker,) = publish(broker, [draft("s.m", 1)])
        # b never came: the next update after a and s.x is the marker.
        assert inbox.take_updates(3) == [a, sx, marker]

        # Overlapping subscriptions (a, s.*, *): each update still arrives once.
        feed.watch(["*"])
        more = publish(broker, [draft("a", 2), draft("s.y", 2), draft("c", 2)])
        (marker,) = publish(broker, [draft("s.m", 2)])
        assert inbox.take_updates(4) == [*more, marker]

        feed.unwatch(["*", "a"])
        _, sz, _ = publish(broker, [draft("a", 3), draft("s.z", 3), draft("c", 3)])
        (marker,) = publish(broker, [draft("s.m", 3)])
        assert inbox.take_updates(2) == [sz, marker]
        assert inbox.empty()
    finally:
        broker.close()


GEVENT_SCRIPT = """
from gevent import monkey
monkey.patch_all()
import sys, gevent, gevent.queue
from pushsvc.broker.redis import RedisBroker
from pushsvc.broker.redis.log import RedisEventLog
from pushsvc.broker.base import Applied
from pushsvc.broker.shared_log import FIRST, EventLog, position
from pushsvc.core.partitions import partition_of
from pushsvc.core.updates import UpdateDraft
from pushsvc.ingest import Event

broker = RedisBroker(sys.argv[1], prefix=sys.argv[2], history=10)
got = gevent.queue.Queue()
broker.consume_updates(lambda updates: got.put(updates)).watch(["t"])
broker.append_events("t", [Event(1.0, 1, None)], lateness_us=0)
# Through the fenced step, as an aggregator publishes.
shard = (partition_of("t", broker.partitions), broker.partitions)
lease = broker.lease(shard, ttl_us=10_000_000)
assert lease.renew()
log = broker.event_log(shard)
entry = log.append_ticks(lease.token, {}, FIRST)
log.close()
published = broker.publish_updates(
    [UpdateDraft("t", 1, b'{"topic":"t"}')],
    applied=Applied(shard, entry, 1, FIRST),
    fence=lease.token,
)
lease.release()
lease.close()
assert got.get(timeout=5) == published
broker.close()
print("ok")
"""


@pytest.mark.redis
def test_redis_broker_works_under_gevent_monkey_patching(
    redis_server: RedisServer, prefix: str
) -> None:
    # The app patches everything first; a subprocess is the only clean way to do that here.
    src = str(Path(__file__).resolve().parents[2] / "src")
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", GEVENT_SCRIPT, redis_server.url, prefix],
        env={**os.environ, "PYTHONPATH": src},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
