"""The Redis broker when Redis goes away: loud failures, then recovery without help.

Each test has its own redis-server, which it stops and starts again (empty).
"""

from __future__ import annotations

import contextlib
import queue
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator

import orjson
import pytest
import redis
from harness.fenced_publish import LEASE_US, covering_tick, publish
from harness.live import wait_until
from harness.redis_server import RedisServer

from pushsvc.broker.base import Replayed
from pushsvc.broker.redis import RedisBroker
from pushsvc.core.cursor import Cursor
from pushsvc.core.topics import TopicMatcher
from pushsvc.core.updates import Update, UpdateDraft, UpdateId
from pushsvc.errors import BrokerUnavailable, ReplicasUnconfirmed
from pushsvc.http.api.error_replies import status_of
from pushsvc.ingest import Event

pytestmark = pytest.mark.redis

WAIT = 10.0


@pytest.fixture
def brokers(own_redis: RedisServer, prefix: str) -> Iterator[Callable[..., RedisBroker]]:
    made: list[RedisBroker] = []

    def make(**options: float) -> RedisBroker:
        options.setdefault("max_backoff", 0.5)
        broker = RedisBroker(own_redis.url, prefix=prefix, history=100, **options)  # type: ignore[arg-type]
        made.append(broker)
        return broker

    yield make
    for broker in made:
        broker.close()


def at(update_id: UpdateId) -> Cursor:
    return Cursor([update_id])


def draft(topic: str, n: int) -> UpdateDraft:
    return UpdateDraft(topic, n, orjson.dumps({"topic": topic, "n": n}))


def epoch(update: Update) -> str:
    return update.id.epoch


everything = TopicMatcher(["*"])


def only(*selectors: str) -> TopicMatcher:
    return TopicMatcher(selectors)


def reader_alive(prefix: str) -> bool:
    return any(t.name == f"pushsvc-redis-reader-{prefix}" for t in threading.enumerate())


def test_every_call_raises_broker_unavailable_while_redis_is_down(
    own_redis: RedisServer, brokers: Callable[..., RedisBroker]
) -> None:
    broker = brokers()
    (update,) = publish(broker, [draft("a", 1)])
    # A publish prepared while Redis was up: its shard's lease held, its log entry logged.
    shard = (broker.partition_of("a"), broker.partitions)
    lease = broker.lease(shard, ttl_us=LEASE_US)
    assert lease.renew()
    applied = covering_tick(broker, shard, lease.token)
    own_redis.stop()

    calls: dict[str, Callable[[], object]] = {
        "append_events": lambda: broker.append_events("a", [Event(1.0, 1, None)], lateness_us=0),
        "publish_updates": lambda: broker.publish_updates(
            [draft("a", 2)], applied=applied, fence=lease.token
        ),
        "replay": lambda: broker.replay(Cursor([update.id]), everything),
        "latest": lambda: broker.latest(everything),
        "ping": broker.ping,
        "lag": broker.lag,
        "watch": lambda: broker.consume_updates(lambda batch: None).watch(["a"]),
    }
    for name, call in calls.items():
        with pytest.raises(BrokerUnavailable) as raised:
            call()
        assert status_of(raised.value) == 503, name
        assert str(own_redis.port) not in raised.value.message  # no addresses in a 503 body


def test_after_redis_restarts_empty_consumers_receive_again_in_a_new_epoch(
    own_redis: RedisServer, brokers: Callable[..., RedisBroker]
) -> None:
    consumer, producer = brokers(), brokers()
    updates: queue.Queue[Update] = queue.Queue()
    resets: queue.Queue[str] = queue.Queue()
    feed = consumer.consume_updates(
        lambda batch: [updates.put(u) for u in batch], on_reset=lambda: resets.put("reset")
    )
    feed.watch(["a"])
    (before,) = publish(producer, [draft("a", 1)])
    assert updates.get(timeout=WAIT) == before

    own_redis.stop()
    # The process is told that updates may have been missed (its streams then resume).
    assert resets.get(timeout=WAIT) == "reset"
    own_redis.start()

    producer.ping()  # the first call after the restart already works: no stale connection
    # Poll until the consumer's reader has subscribed again by itself.
    wait_until(lambda: publish(producer, [draft("probe", 0)]) != [], what="redis is back")
    wait_until(lambda: _subscribers(own_redis, producer, "a") == 1, what="resubscribed")
    (after,) = publish(producer, [draft("a", 2)])
    assert updates.get(timeout=WAIT) == after

    assert epoch(after) != epoch(before)
    # that history is gone
    lost = frozenset({before.id.partition})
    assert consumer.replay(at(before.id), only("a")) == Replayed([], lost)
    assert consumer.replay(at(after.id), only("a")) == Replayed([])
    assert consumer.latest(only("a")) == {"a": after}


def _subscribers(server: RedisServer, broker: RedisBroker, topic: str) -> int:
    admin = redis.Redis.from_url(server.url)
    try:
        channel = broker.keys.of(topic).updates_channel + topic.encode()
        return int(dict(admin.pubsub_numsub(channel))[channel])
    finally:
        admin.close()


def test_a_killed_pubsub_connection_is_replaced_and_the_history_kept(
    own_redis: RedisServer, brokers: Callable[..., RedisBroker]
) -> None:
    consumer, producer = brokers(), brokers()
    updates: queue.Queue[Update] = queue.Queue()
    consumer.consume_updates(lambda batch: [updates.put(u) for u in batch]).watch(["a"])
    (before,) = publish(producer, [draft("a", 1)])
    assert updates.get(timeout=WAIT) == before

    admin = redis.Redis.from_url(own_redis.url)
    try:
        (old,) = admin.client_list(_type="pubsub")
        assert admin.client_kill_filter(_type="pubsub") == 1

        def resubscribed() -> bool:
            # Another connection, not the killed one (Redis may free that one lazily).
            return [
                (c["id"] != old["id"], c["sub"]) for c in admin.client_list(_type="pubsub")
            ] == [(True, "1")]

        # Nobody listens until the reader is back; it must come back by itself.
        wait_until(resubscribed, what="resubscribed on a new connection")
    finally:
        admin.close()

    (after,) = publish(producer, [draft("a", 2)])
    assert updates.get(timeout=WAIT) == after
    assert epoch(after) == epoch(before)  # Redis kept its data: same history
    assert consumer.replay(at(before.id), everything) == Replayed([after])


def test_watch_while_redis_is_down_raises_then_works_once_it_is_back(
    own_redis: RedisServer, brokers: Callable[..., RedisBroker]
) -> None:
    consumer, producer = brokers(subscribe_timeout=0.5), brokers()
    updates: queue.Queue[Update] = queue.Queue()
    feed = consumer.consume_updates(lambda batch: [updates.put(u) for u in batch])
    own_redis.stop()
    with pytest.raises(BrokerUnavailable):
        feed.watch(["a"])

    own_redis.start()
    wait_until(lambda: publish(producer, [draft("probe", 0)]) != [], what="redis is back")
    feed.watch(["a"])
    (update,) = publish(producer, [draft("a", 1)])
    assert updates.get(timeout=WAIT) == update
    assert updates.empty()


@pytest.mark.parametrize("redis_up", [True, False], ids=["redis up", "redis down"])
def test_close_stops_the_reader_promptly(
    own_redis: RedisServer, brokers: Callable[..., RedisBroker], prefix: str, redis_up: bool
) -> None:
    broker = brokers(max_backoff=30.0)
    broker.consume_updates(lambda batch: None).watch(["a"])
    assert reader_alive(prefix)
    if not redis_up:
        own_redis.stop()  # the reader is now failing and backing off

    started = time.monotonic()
    broker.close()
    assert time.monotonic() - started < 1.5
    assert not reader_alive(prefix)


def test_a_frozen_redis_is_noticed_by_ping_and_a_slow_reader_is_not_cut_off(
    own_redis: RedisServer, brokers: Callable[..., RedisBroker]
) -> None:
    """The pub/sub connection has no read timeout (a busy process may not read for seconds
    and must keep its streams): a Redis that stops answering is found by the reader's PING."""
    consumer = brokers(ping_interval=0.3)
    updates: queue.Queue[Update] = queue.Queue()
    resets: queue.Queue[str] = queue.Queue()
    feed = consumer.consume_updates(
        lambda batch: [updates.put(u) for u in batch], on_reset=lambda: resets.put("reset")
    )
    feed.watch(["a"])
    # Quiet for longer than the PING interval: a live Redis answers, nothing is reset.
    time.sleep(1.0)  # the quiet period itself is what is tested
    assert resets.empty()
    assert own_redis._proc is not None
    own_redis._proc.send_signal(signal.SIGSTOP)  # alive, connected, silent (like a partition)
    try:
        assert resets.get(timeout=WAIT) == "reset"
    finally:
        own_redis._proc.send_signal(signal.SIGCONT)


class SlowProxy:
    """A TCP proxy to Redis whose replies, once `slow` is set, trickle in 64 KB pieces with a
    pause between them: a large pub/sub message arrives over several of the reader's polls."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.slow = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = [self._listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, replies: bool) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
                if replies and self.slow.is_set():
                    time.sleep(0.3)  # longer than the reader's 0.2 s poll
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        for sock in self._sockets:
            sock.close()


def test_a_message_that_arrives_in_pieces_is_read_whole_without_a_reset(
    own_redis: RedisServer, prefix: str
) -> None:
    proxy = SlowProxy(own_redis.port)
    consumer = RedisBroker(f"redis://127.0.0.1:{proxy.port}/0", prefix=prefix, history=100)
    producer = RedisBroker(own_redis.url, prefix=prefix, history=100)
    try:
        updates: queue.Queue[Update] = queue.Queue()
        resets: queue.Queue[str] = queue.Queue()
        feed = consumer.consume_updates(
            lambda batch: [updates.put(u) for u in batch], on_reset=lambda: resets.put("reset")
        )
        feed.watch(["big"])
        proxy.slow.set()
        # One run of 1,000 updates of ~0.5 KB: one PUBLISH of about 0.5 MB.
        drafts = [
            UpdateDraft("big", n, orjson.dumps({"topic": "big", "pad": "x" * 500, "n": n}))
            for n in range(1000)
        ]
        published = publish(producer, drafts)
        received = [updates.get(timeout=WAIT) for _ in published]
        assert received == published
        assert resets.empty(), "the reader took a slow message for a dead connection"
    finally:
        consumer.close()
        producer.close()
        proxy.close()


def test_a_deletion_under_min_replicas_waits_for_them_like_an_append(
    own_redis: RedisServer, prefix: str
) -> None:
    """A deletion is a state change in the log like an append: with `min_replicas` it is
    confirmed by WAIT, and without the replicas it answers 503 replicas_unconfirmed (the
    deletion is logged on the primary and applied; a retry answers 404)."""
    broker = RedisBroker(own_redis.url, prefix=prefix, min_replicas=1, replica_timeout_ms=50)
    try:
        with pytest.raises(ReplicasUnconfirmed):
            broker.append_events("doomed", [Event(1.0, 1, None)], lateness_us=0)
        with pytest.raises(ReplicasUnconfirmed) as refused:
            broker.delete_topic("doomed")
        assert status_of(refused.value) == 503
        assert "deletion" in refused.value.message
        assert broker.delete_topic("doomed") is False  # it was logged: nothing left to delete
    finally:
        broker.close()
