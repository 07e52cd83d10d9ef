"""The sharded pub/sub reader on a real Redis Cluster: delivery across the primaries, what the
nodes see subscribed, slot moves, no message past a gap before the reset (the interleavings
forced), failovers at varied moments, and a silent connection.

The tests that kill or freeze nodes, or leave a slot half handed over, start clusters of their
own; the others share the session's `redis_cluster`, and a slot moved is put back."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from harness.live import wait_until
from harness.redis_cluster import RedisClusterServers
from harness.redis_server import RedisServer

from pushsvc.broker.redis.cluster_topology import channel_slot
from pushsvc.broker.redis.sharded_pubsub import ShardedPubSubReader
from pushsvc.broker.redis.slots import partition_tags
from support.promise import promise_kept

pytestmark = [pytest.mark.cluster, pytest.mark.redis]


class Received:
    """What a reader handed over, and how many resets it called."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.messages: list[tuple[bytes, bytes]] = []
        self.resets = 0

    def on_messages(self, batch: list[tuple[bytes, bytes]]) -> None:
        with self.lock:
            self.messages.extend(batch)

    def on_reset(self) -> None:
        with self.lock:
            self.resets += 1

    def of(self, channel: bytes) -> list[bytes]:
        with self.lock:
            return [data for c, data in self.messages if c == channel]


class InOrder:
    """What a reader handed over and its resets, in one sequence; `hold` makes the call that
    hands over `(channel, data)` wait until `release` (that node's reader thread stands still,
    holding every other node's calls too, while what its node sends piles up in its socket)."""

    def __init__(self, hold: tuple[bytes, bytes] | None = None) -> None:
        self.lock = threading.Lock()
        self.seen: list[tuple[bytes, bytes] | str] = []
        self.hold = hold
        self.holding = threading.Event()
        self.release = threading.Event()

    def on_messages(self, batch: list[tuple[bytes, bytes]]) -> None:
        with self.lock:
            self.seen.extend(batch)
        if self.hold is not None and self.hold in batch:
            self.holding.set()
            self.release.wait(60)

    def on_reset(self) -> None:
        with self.lock:
            self.seen.append("reset")

    def of(self, channel: bytes) -> list[bytes | str]:
        """`channel`'s messages and every reset, in the order they were handed over."""
        with self.lock:
            return [
                e if isinstance(e, str) else e[1]
                for e in self.seen
                if isinstance(e, str) or e[0] == channel
            ]


def _reader(
    cluster: RedisClusterServers, received: Received | InOrder, name: str, **options: float
) -> ShardedPubSubReader:
    settings = {"min_backoff": 0.05, "max_backoff": 0.5, "subscribe_timeout": 5.0, **options}
    return ShardedPubSubReader(
        [("127.0.0.1", node.port) for node in cluster.live],
        name=name,
        on_messages=received.on_messages,
        on_reset=received.on_reset,
        **settings,
    )


def _channels(per_primary: int) -> list[bytes]:
    """Channels spread evenly over a 3-primary cluster (partition tags), unique to the test."""
    test = uuid.uuid4().hex[:8]
    return [f"sp{test}:{{{tag}}}:u".encode() for tag in partition_tags(3 * per_primary)]


def _publish(cluster: RedisClusterServers, channel: bytes, *data: bytes) -> None:
    """SPUBLISH on the slot's primary now, in one round trip."""
    client = cluster.client(cluster.owner_of(channel_slot(channel)))
    try:
        with client.pipeline(transaction=False) as pipe:
            for item in data:
                pipe.spublish(channel, item)
            pipe.execute()
    finally:
        client.close()


def _subscribers(node: RedisServer, channel: bytes) -> int:
    client = redis.Redis(port=node.port)
    try:
        reply = client.execute_command("PUBSUB", "SHARDNUMSUB", channel)
    finally:
        client.close()
    return int(reply[1])


def _shard_channels(node: RedisServer, pattern: str) -> set[bytes]:
    client = redis.Redis(port=node.port)
    try:
        return set(client.execute_command("PUBSUB", "SHARDCHANNELS", pattern))
    finally:
        client.close()


def _connections(cluster: RedisClusterServers, name: str) -> dict[int, int]:
    """Per live node, the connections whose client name is `name`."""
    counts = {}
    for node in cluster.live:
        client = cluster.client(node)
        try:
            counts[node.port] = sum(1 for c in client.client_list() if c["name"] == name)
        finally:
            client.close()
    return counts


def _numbered(count: int, start: int = 0) -> list[bytes]:
    return [str(n).encode() for n in range(start, start + count)]


# -- the shared cluster ------------------------------------------------------------------


def test_messages_on_every_primary_arrive_once_each_in_order_per_channel(
    redis_cluster: RedisClusterServers,
) -> None:
    channels = _channels(per_primary=2)
    assert len({redis_cluster.owner_of(channel_slot(c)).port for c in channels}) == 3
    received = Received()
    reader = _reader(redis_cluster, received, "spub-order")
    try:
        for channel in channels:
            reader.add_channel(channel)
        for channel in channels:
            _publish(redis_cluster, channel, *_numbered(300))
        wait_until(
            lambda: all(len(received.of(c)) >= 300 for c in channels),
            what="every message arrived",
        )
    finally:
        reader.close()
    for channel in channels:
        assert received.of(channel) == _numbered(300)
    assert received.resets == 0


def test_the_nodes_hold_only_the_channels_wanted_over_one_connection_per_primary(
    redis_cluster: RedisClusterServers,
) -> None:
    channels = _channels(per_primary=2)
    pattern = channels[0].split(b":")[0].decode() + ":*"
    name = f"spub-{uuid.uuid4().hex[:8]}"
    reader = _reader(redis_cluster, Received(), name)
    try:
        for channel in channels:
            reader.add_channel(channel)
        reader.add_channel(channels[0])  # a second reference
        primaries = redis_cluster.primaries()
        for primary in primaries:
            expected = {c for c in channels if redis_cluster.owner_of(channel_slot(c)) is primary}
            assert _shard_channels(primary, pattern) == expected
            for channel in expected:
                assert _subscribers(primary, channel) == 1
        connections = _connections(redis_cluster, name)
        assert {p.port: connections[p.port] for p in primaries} == {p.port: 1 for p in primaries}
        assert sum(connections.values()) == len(primaries)

        owner = redis_cluster.owner_of(channel_slot(channels[0]))
        reader.remove_channel(channels[0])  # one reference left
        assert _subscribers(owner, channels[0]) == 1
        reader.remove_channel(channels[0])
        wait_until(lambda: _subscribers(owner, channels[0]) == 0, what="SSUNSUBSCRIBE")
        reader.remove_channel(channels[0])  # one too many: no effect
        for channel in channels[1:]:
            reader.remove_channel(channel)
        # A connection that carries nothing is closed.
        wait_until(
            lambda: sum(_connections(redis_cluster, name).values()) == 0,
            what="every connection closed",
        )
        assert all(_shard_channels(p, pattern) == set() for p in primaries)
        reader.add_channel(channels[1])  # and opened again when needed
        assert sum(_connections(redis_cluster, name).values()) == 1
    finally:
        reader.close()


def test_a_slot_move_resubscribes_on_the_new_primary_and_resets(
    redis_cluster: RedisClusterServers,
) -> None:
    moved, untouched = _channels(per_primary=1)[:2]
    slot = channel_slot(moved)
    source = redis_cluster.owner_of(slot)
    target = redis_cluster.owner_of(channel_slot(untouched))  # another primary
    assert target is not source
    received = Received()
    reader = _reader(redis_cluster, received, "spub-move")
    try:
        reader.add_channel(moved)
        reader.add_channel(untouched)
        _publish(redis_cluster, moved, b"before")
        wait_until(lambda: received.of(moved) == [b"before"])
        redis_cluster.move_slot(slot, target)
        # Redis ends the subscription on the old owner (sunsubscribe); the reader subscribes
        # on the new one, then resets.
        wait_until(lambda: received.resets == 1, what="on_reset")
        assert _subscribers(target, moved) == 1
        assert _subscribers(source, moved) == 0
        _publish(redis_cluster, moved, b"after")
        _publish(redis_cluster, untouched, b"still")
        wait_until(lambda: received.of(moved) == [b"before", b"after"])
        wait_until(lambda: received.of(untouched) == [b"still"])
        assert received.resets == 1
        # Nothing wanted is left on the old owner: its connection goes.
        wait_until(lambda: _connections(redis_cluster, "spub-move")[source.port] == 0)
        assert sum(_connections(redis_cluster, "spub-move").values()) == 1
    finally:
        reader.close()
        redis_cluster.move_slot(slot, source)


def _flushed(node: RedisServer, name: str) -> bool:
    """Whether `node` has written out everything it had for the connections named `name`."""
    client = redis.Redis(port=node.port)
    try:
        mine = [c for c in client.client_list() if c["name"] == name]
    finally:
        client.close()
    return bool(mine) and all(c["obl"] == "0" and c["oll"] == "0" for c in mine)


def test_no_message_past_the_gap_of_a_slot_move_is_handed_over_before_the_reset(
    redis_cluster: RedisClusterServers,
) -> None:
    # The reader's new primary confirms the moved channel and sends its next message before
    # the reader reads either (a busy web process): both come in one read. Handed over before
    # on_reset, that message would carry a stream past what was published while no node had
    # the subscription, and its client would resume after it: the gap never filled.
    moved, held = _channels(per_primary=1)[:2]
    slot = channel_slot(moved)
    source = redis_cluster.owner_of(slot)
    target = redis_cluster.owner_of(channel_slot(held))
    assert target is not source
    name = f"spub-{uuid.uuid4().hex[:8]}"
    seen = InOrder(hold=(held, b"hold"))
    # Timeouts far beyond the test: the reset must wait for the confirmation, not for time.
    reader = _reader(redis_cluster, seen, name, subscribe_timeout=60, probe_interval=3600)
    try:
        reader.add_channel(moved)
        reader.add_channel(held)
        _publish(redis_cluster, moved, b"before")
        wait_until(lambda: seen.of(moved) == [b"before"])
        _publish(redis_cluster, held, b"hold")  # the target's reader thread stands still
        assert seen.holding.wait(10)
        redis_cluster.start_moving(slot, target)
        # Once the target serves the slot, and before the source lets it go: lost to the
        # reader, which listens on the source. The source then ends the subscription; the
        # reader subscribes on the target, whose confirmation and next message wait in the
        # socket of the thread that stands still.
        redis_cluster.finish_moving(
            slot, source, target, served=lambda: _ask(target, "SPUBLISH", moved, b"gap")
        )
        wait_until(lambda: _subscribers(target, moved) == 1, what="SSUBSCRIBE on the target")
        assert _ask(target, "SPUBLISH", moved, b"after") == 1
        wait_until(lambda: _flushed(target, name), what="the target wrote both out")
        seen.release.set()
        wait_until(lambda: "reset" in seen.of(moved), what="on_reset")
        _publish(redis_cluster, moved, b"later")
        wait_until(lambda: b"later" in seen.of(moved), what="the message after the reset")
    finally:
        seen.release.set()
        reader.close()
        redis_cluster.move_slot(slot, source)
    # "gap" and "after" are the history's to give: a reset, then what comes after it.
    with promise_kept():
        assert seen.of(moved) == [b"before", "reset", b"later"]


def test_no_message_of_a_channel_back_is_handed_over_while_another_is_still_away() -> None:
    # Two channels of one primary lose their subscriptions: one is confirmed again on its new
    # primary while the other is not yet (its slot is half handed over: the reset waits for
    # it). What the first one's new primary publishes meanwhile would carry its streams past
    # their gap before the reset that ends them.
    with RedisClusterServers() as cluster:
        by_owner: dict[int, list[bytes]] = {}
        for channel in _channels(per_primary=2):
            by_owner.setdefault(cluster.owner_of(channel_slot(channel)).port, []).append(channel)
        source, target, third = (cluster.node_at(port) for port in by_owner)
        back, away = by_owner[source.port]
        held = by_owner[target.port][0]
        seen = InOrder()
        reader = _reader(cluster, seen, "spub-away", subscribe_timeout=60, probe_interval=3600)
        try:
            for channel in (back, away, held):
                reader.add_channel(channel)
            _publish(cluster, back, b"before")
            _publish(cluster, away, b"before")
            wait_until(lambda: seen.of(back) == seen.of(away) == [b"before"])
            # `away`'s slot: the source lets it go before its new owner takes it. The reader
            # is told (sunsubscribe) and finds no node that serves it until the end.
            cluster.start_moving(channel_slot(away), third)
            _set_owner(source, channel_slot(away), third)
            # The source's connection says so before it says the same of `back` below: the
            # reader counts `away` lost before `back` is confirmed anywhere again.
            wait_until(lambda: _subscribers(source, away) == 0, what="away lost")
            # `back`'s slot moves to the target at once: confirmed there again.
            cluster.start_moving(channel_slot(back), target)
            for node in (target, source, third):
                _set_owner(node, channel_slot(back), target)
            wait_until(lambda: _subscribers(target, back) == 1, what="back on the target")
            assert _ask(target, "SPUBLISH", back, b"after") == 1
            # On the same connection after it: once this is in, "after" was read.
            assert _ask(target, "SPUBLISH", held, b"mark") == 1
            wait_until(lambda: b"mark" in seen.of(held), what="the mark")
            for node in (third, target):
                _set_owner(node, channel_slot(away), third)
            cluster.wait_until_settled(30)
            wait_until(lambda: "reset" in seen.of(back), what="on_reset")
            _publish(cluster, back, b"later")
            _publish(cluster, away, b"later")
            wait_until(lambda: b"later" in seen.of(back) and b"later" in seen.of(away))
        finally:
            reader.close()
        with promise_kept():
            assert seen.of(back) == [b"before", "reset", b"later"]
            assert seen.of(away) == [b"before", "reset", b"later"]


def _set_owner(node: RedisServer, slot: int, owner: RedisServer) -> None:
    """CLUSTER SETSLOT `slot` NODE `owner` on `node` (once per node: see `finish_moving`)."""
    _ask(node, "CLUSTER", "SETSLOT", slot, "NODE", _ask(owner, "CLUSTER", "MYID"))


def _ask(node: RedisServer, *command: object) -> Any:
    client = redis.Redis(port=node.port)
    try:
        return client.execute_command(*command)
    finally:
        client.close()


# -- failovers, on a cluster of the module's own ------------------------------------------


@pytest.fixture(scope="module")
def failover_cluster() -> Iterator[RedisClusterServers]:
    """Three primaries with one replica each: three failovers, one per test (each kills a
    primary that still has a replica)."""
    with RedisClusterServers() as cluster:
        yield cluster


def _publisher(
    cluster: RedisClusterServers, channel: bytes, stop: threading.Event, sent: list[bytes]
) -> None:
    """SPUBLISH 0, 1, 2, … to whoever owns the slot, until `stop`; `sent` gets what a primary
    acknowledged (a failed SPUBLISH is not retried: its number is skipped)."""
    number = 0
    while not stop.is_set():
        data = str(number).encode()
        number += 1
        try:
            _publish(cluster, channel, data)
        except (redis.RedisError, LookupError):
            stop.wait(0.01)
            continue
        sent.append(data)
        stop.wait(0.002)


@pytest.mark.parametrize("moment", ["before-the-first-message", "between-messages", "mid-burst"])
def test_a_failover_resubscribes_on_the_promoted_replica_and_resets(
    failover_cluster: RedisClusterServers, moment: str
) -> None:
    cluster = failover_cluster
    channels = _channels(per_primary=1)
    primary = next(
        cluster.owner_of(channel_slot(c))
        for c in channels
        if cluster.replicas_of(cluster.owner_of(channel_slot(c)))
    )
    (channel,) = [c for c in channels if cluster.owner_of(channel_slot(c)) is primary]
    other = next(c for c in channels if c != channel)
    received = Received()
    name = f"spub-failover-{moment}"
    reader = _reader(cluster, received, name, probe_interval=0.5, probe_timeout=0.5)
    stop = threading.Event()
    sent: list[bytes] = []
    publisher = threading.Thread(target=_publisher, args=(cluster, channel, stop, sent))
    try:
        reader.add_channel(channel)
        reader.add_channel(other)
        if moment == "between-messages":
            _publish(cluster, channel, *_numbered(50, start=-50))
            wait_until(lambda: len(received.of(channel)) == 50)
        elif moment == "mid-burst":
            publisher.start()
            wait_until(lambda: len(received.of(channel)) >= 20)
        cluster.kill(primary)
        cluster.wait_until_settled(30)
        promoted = cluster.owner_of(channel_slot(channel))
        wait_until(lambda: received.resets >= 1, timeout=20, what="on_reset")
        assert _subscribers(promoted, channel) == 1
        resets = received.resets
        if moment != "mid-burst":
            publisher.start()
        # Published after the reset, so every one must arrive.
        wait_until(lambda: len(sent) > 0)
        first_after = len(sent)
        wait_until(lambda: len(sent) >= first_after + 20)
        stop.set()
        publisher.join(10)
        wait_until(
            lambda: set(sent[first_after:]) <= set(received.of(channel)),
            what="every message published after the reset arrived",
        )
        _publish(cluster, other, b"other")
        wait_until(lambda: received.of(other) == [b"other"])
        assert received.resets == resets
        assert sum(_connections(cluster, name).values()) <= len(cluster.primaries())
    finally:
        stop.set()
        if publisher.is_alive():
            publisher.join(10)
        reader.close()
    got = [int(data) for data in received.of(channel)]
    assert got == sorted(got), "out of order"
    assert len(got) == len(set(got)), "a duplicate"
    assert set(got) <= {int(data) for data in sent} | set(range(-50, 0))


# -- a silent connection --------------------------------------------------------------------


def test_the_idle_probe_notices_a_primary_that_hangs_and_was_replaced() -> None:
    # A frozen primary keeps its TCP connections open and answers nothing, and its replica
    # takes over: no sunsubscribe, no reset, no error on the subscriber's socket. A reader
    # without the probe would listen to it forever.
    with RedisClusterServers() as cluster:
        channel = _channels(per_primary=1)[0]
        primary = cluster.owner_of(channel_slot(channel))
        probing, deaf = Received(), Received()
        readers = [
            _reader(cluster, probing, "spub-probing", probe_interval=0.3, probe_timeout=0.5),
            _reader(cluster, deaf, "spub-deaf", probe_interval=3600),
        ]
        try:
            for reader in readers:
                reader.add_channel(channel)
            cluster.freeze(primary)
            cluster.wait_until_settled(30)
            wait_until(lambda: probing.resets >= 1, timeout=20, what="the probing reader reset")
            assert _subscribers(cluster.owner_of(channel_slot(channel)), channel) == 1
            _publish(cluster, channel, b"after")
            wait_until(lambda: probing.of(channel) == [b"after"])
            assert (deaf.of(channel), deaf.resets) == ([], 0)
        finally:
            for reader in readers:
                reader.close()
