"""The partitioned key layout on a real Redis: every key of a topic carries its partition's
hash tag (so one Redis, Sentinel and Cluster share one layout, and every script touches one
slot), each partition keeps a history of its own, and what spans partitions (a pattern's
latest updates, `_alerts`, the topic count, the lag) reads them all.

The broker contract (tests/integration/test_broker_contract.py) holds for any partition count;
these are what partitions add."""

from __future__ import annotations

import itertools
import queue
import re
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import orjson
import pytest
from harness.fenced_publish import LEASE_US, publish_applied
from harness.fenced_publish import publish as publish_fenced
from harness.redis_cluster import RedisClusterServers
from harness.redis_server import RedisServer
from redis.crc import key_slot

from pushsvc.broker.base import Applied, Replayed
from pushsvc.broker.redis.broker import RedisBroker
from pushsvc.broker.redis.connect import single_client
from pushsvc.broker.redis.guard import check_at_start
from pushsvc.broker.redis.keys import Keys
from pushsvc.broker.redis.slots import partition_slot
from pushsvc.broker.redis.url import parse_cluster_url
from pushsvc.broker.redis.wake_waiter import WakeWaiter
from pushsvc.core.cursor import Cursor
from pushsvc.core.event import Event
from pushsvc.core.idempotency import Idempotency
from pushsvc.core.partitions import partition_of
from pushsvc.core.topics import ALERTS, TopicMatcher
from pushsvc.core.updates import (
    SeriesWrite,
    Update,
    UpdateDraft,
    alert_draft,
    epoch_partition,
    point_draft,
)
from pushsvc.errors import LayoutMismatch, TooManyTopics

pytestmark = pytest.mark.redis

P = 16
LATENESS_US = 5_000_000
everything = TopicMatcher(["*"])


def draft(topic: str, n: int, *, groups: bool = False) -> UpdateDraft:
    clock_us = 1_000_000 + n
    body = orjson.dumps({"topic": topic, "n": n, "ts": clock_us / 1e6, "windows": {}})
    return UpdateDraft(topic, clock_us, body, groups=(("g1", b'{"k":"v"}'),) if groups else ())


def point(topic: str, n: int) -> UpdateDraft:
    write = SeriesWrite("1s", "", 1_000_000, b"packed", 0)
    return point_draft(topic, 1_000_000 + n, write, {"count": 1})


def alert(topic: str, n: int) -> UpdateDraft:
    body = orjson.dumps({"alert": "hot", "topic": topic, "state": "firing", "n": n})
    return alert_draft(ALERTS, 1_000_000 + n, body, f"hot\x1f{topic}\x1f{n}", active=True)


@pytest.fixture(
    params=["redis", pytest.param("cluster", marks=pytest.mark.cluster)],
)
def url(request: pytest.FixtureRequest) -> str:
    """One Redis, or a Redis Cluster of three primaries: one layout for both."""
    if request.param == "cluster":
        return str(request.getfixturevalue("redis_cluster").url)
    return str(request.getfixturevalue("redis_server").url)


@pytest.fixture
def broker(url: str, prefix: str) -> Iterator[RedisBroker]:
    made = RedisBroker(url, prefix=prefix, history=100, partitions=P)
    yield made
    made.close()


def topics_in_every_partition() -> dict[int, str]:
    """One topic name per partition."""
    found: dict[int, str] = {}
    n = 0
    while len(found) < P:
        found.setdefault(partition_of(f"t{n}", P), f"t{n}")
        n += 1
    return found


class AlertsOfEveryPartition:
    """Publishes alert changes as an aggregator does: each with the batch of events of the
    topic it watches, so it goes in that topic's partition (`alert` alone goes in
    `_alerts`'), under the partition's lease, which it holds while it lives (`with`)."""

    def __init__(self, broker: RedisBroker) -> None:
        self.broker = broker
        self.topics = [t for _, t in sorted(topics_in_every_partition().items())]
        self.applied_up_to = dict.fromkeys(self.topics, "0-0")
        self.leases = [broker.lease((index, P), ttl_us=LEASE_US) for index in range(P)]

    def __enter__(self) -> AlertsOfEveryPartition:
        assert all(lease.renew() for lease in self.leases)
        return self

    def __exit__(self, *exc: object) -> None:
        for lease in self.leases:
            lease.release()
            lease.close()

    def publish(self, topic: str, n: int) -> Update:
        self.broker.append_events(topic, [Event(1.0, 1 + n, None)], lateness_us=LATENESS_US)
        shard = (partition_of(topic, P), P)
        event_log = self.broker.event_log(shard)
        (entry,) = event_log.read(self.applied_up_to[topic], count=10)
        event_log.close()
        applied = Applied(shard, entry.id, 1, after=self.applied_up_to[topic])
        self.applied_up_to[topic] = entry.id
        fence = self.leases[shard[0]].token
        (change,) = self.broker.publish_updates([alert(topic, n)], applied=applied, fence=fence)
        return change


def test_every_key_a_workload_writes_carries_its_topics_partition_tag(
    broker: RedisBroker, url: str, prefix: str
) -> None:
    topics = topics_in_every_partition()
    for index, topic in topics.items():
        key = Idempotency(f"k{index}", "d" * 32, 60_000)
        broker.append_events(topic, [Event(1.0, 1, None)], lateness_us=LATENESS_US, idempotency=key)
        applied_shard = (index, P)
        event_log = broker.event_log(applied_shard)
        (entry,) = event_log.read("0-0", count=10)
        event_log.close()
        publish_applied(
            broker,
            applied_shard,
            [draft(topic, 1, groups=True), point(topic, 1), alert(topic, 1)],
            entry.id,
            after="0-0",
        )
    client = single_client(url, socket_timeout=5)
    try:
        written = [k.decode() for k in client.scan_iter(f"{prefix}*")]
    finally:
        client.close()
    keys = Keys(prefix, P)
    outside = sorted(k for k in written if "{" not in k)
    assert outside == [keys.layout] or outside == []
    by_slot: dict[int, set[str]] = defaultdict(set)
    for key in written:
        if "{" in key:
            by_slot[key_slot(key.encode())].add(key)
    # Every partition's keys hash to its one slot, the centre of its slice.
    assert sorted(by_slot) == sorted(partition_slot(i, P) for i in range(P))
    for index, topic in topics.items():
        mine = by_slot[partition_slot(index, P)]
        part = keys.partition(index)
        assert {part.log, part.logged, part.clocks, part.history, part.latest, part.epoch} <= mine
        assert {part.applied, part.alerts, part.alerts_head, part.groups(topic)} <= mine
        assert part.series("1s", topic) in mine
        assert part.idempotency(topic, f"k{index}") in mine
        assert re.fullmatch(re.escape(prefix) + r"\{[0-9]+\}:.*", next(iter(mine)))


def test_each_partition_numbers_its_own_history_and_its_epoch_names_it(
    broker: RedisBroker,
) -> None:
    topics = topics_in_every_partition()
    published = publish_fenced(broker, [draft(t, n) for n in (1, 2) for t in topics.values()])
    by_partition: dict[int, list[int]] = defaultdict(list)
    for update in published:
        index = partition_of(update.topic, P)
        assert epoch_partition(update.id.epoch) == index
        by_partition[index].append(orjson.loads(update.data)["n"])
    assert all(ns == [1, 2] for ns in by_partition.values()) and len(by_partition) == P
    for update in published:
        if orjson.loads(update.data)["n"] == 1:
            # A resume replays its own partition exactly.
            (after,) = [u for u in published if u.topic == update.topic and u is not update]
            assert broker.replay(Cursor([update.id]), TopicMatcher([update.topic])) == Replayed(
                [after]
            )


def test_latest_and_active_alerts_read_every_partition(broker: RedisBroker) -> None:
    topics = list(topics_in_every_partition().values())
    published = publish_fenced(broker, [draft(t, 1) for t in topics])
    assert broker.latest(everything) == {u.topic: u for u in published}
    some = topics[::5]
    assert broker.latest(TopicMatcher(some)) == {u.topic: u for u in published if u.topic in some}
    for topic in topics[:4]:
        publish_fenced(broker, [alert(topic, 1)])
    assert sorted(orjson.loads(b)["topic"] for b in broker.active_alerts()) == sorted(topics[:4])


def test_the_history_of_alerts_merges_every_partition_in_publish_order(
    broker: RedisBroker,
) -> None:
    with AlertsOfEveryPartition(broker) as every:
        # In partition order: changes of one millisecond sort by their partition.
        changes = [every.publish(t, n) for n, t in enumerate(every.topics[:6])]
    assert len({epoch_partition(c.id.epoch) for c in changes}) == 6
    page = broker.history(ALERTS, limit=100)
    assert page.updates == changes and not page.more
    newest = broker.history(ALERTS, limit=2)
    assert newest.updates == changes[-2:] and newest.more


def test_a_read_after_any_change_of_alerts_continues_the_page_exactly(
    broker: RedisBroker,
) -> None:
    """Changes of several partitions written in one millisecond (hundreds of quick publishes
    make many such ties): a read after any change of the page is the rest of the page, and
    each partition's changes keep their publish order."""
    every = AlertsOfEveryPartition(broker)
    topics = every.topics
    # Four producers at once, each on topics of its own: ties on one Redis and on a Cluster.
    with every, ThreadPoolExecutor(4) as pool:
        runs = pool.map(
            lambda mine: [every.publish(t, n) for n in range(12) for t in mine],
            [topics[i::4] for i in range(4)],
        )
        published = [u for run in runs for u in run]
    page = broker.history(ALERTS, limit=10_000)
    assert sorted(page.updates, key=lambda u: u.id.ms) == page.updates
    for topic in topics:
        mine = [u for u in published if orjson.loads(u.data)["topic"] == topic]
        assert [u for u in page.updates if orjson.loads(u.data)["topic"] == topic] == mine
    ties = sum(
        a.id.ms == b.id.ms and a.id.partition != b.id.partition
        for a, b in itertools.pairwise(page.updates)
    )
    assert ties >= 10, f"{ties} ties across partitions: too few to mean anything"
    for n, change in enumerate(page.updates):
        after = broker.history(ALERTS, after=change.id, limit=10_000)
        assert after.updates == page.updates[n + 1 :], f"after change {n} of {len(page.updates)}"
        assert not after.gap and not after.more


def test_the_topic_limit_counts_every_partition_and_holds_under_racing_producers(
    url: str, prefix: str
) -> None:
    brokers = [RedisBroker(url, prefix=prefix, partitions=P, max_topics=7) for _ in range(2)]
    outcomes: list[bool] = []
    lock = threading.Lock()
    start = threading.Barrier(4)

    def produce(broker: RedisBroker, name: str) -> None:
        start.wait(5)
        for n in range(10):
            try:
                broker.append_events(f"{name}-{n}", [Event(1.0, 1, None)], lateness_us=0)
                ok = True
            except TooManyTopics:
                ok = False
            with lock:
                outcomes.append(ok)

    threads = [threading.Thread(target=produce, args=(brokers[i % 2], f"p{i}")) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    try:
        assert Counter(outcomes) == {True: 7, False: 33}
        assert brokers[0].topic_stats().live == 7
        assert len({partition_of(f"p{i}-{n}", P) for i in range(4) for n in range(10)}) > 1
    finally:
        for broker in brokers:
            broker.close()


def test_lag_has_one_row_per_partition(broker: RedisBroker) -> None:
    topic = topics_in_every_partition()[3]
    broker.append_events(topic, [Event(1.0, 1, None)], lateness_us=0)
    lags = broker.lag()
    assert [lag.shard for lag in lags] == [(i, P) for i in range(P)]
    assert [lag.entries for lag in lags] == [1 if i == 3 else 0 for i in range(P)]


def test_a_process_with_another_partition_count_stops_with_one_line_naming_both(
    broker: RedisBroker, url: str, prefix: str
) -> None:
    check_at_start(broker)  # records 16
    other = RedisBroker(url, prefix=prefix, partitions=4)
    try:
        with pytest.raises(LayoutMismatch) as refused:
            check_at_start(other)
    finally:
        other.close()
    message = str(refused.value)
    assert "\n" not in message
    assert "16 partitions" in message and "with 4" in message
    assert "PUSHSVC_PARTITIONS=16" in message


def test_a_redis_with_data_in_the_layout_before_partitions_stops_the_process(
    url: str, prefix: str
) -> None:
    client = single_client(url, socket_timeout=5)
    client.xadd(f"{prefix}history", {"t": "a", "c": "1", "b": "{}"})
    client.close()
    broker = RedisBroker(url, prefix=prefix, partitions=P)
    try:
        with pytest.raises(LayoutMismatch) as refused:
            check_at_start(broker)
    finally:
        broker.close()
    assert "layout before partitions" in str(refused.value)
    assert "\n" not in str(refused.value)


def test_a_prefix_with_a_brace_is_refused(redis_server: RedisServer) -> None:
    with pytest.raises(ValueError, match="brace"):
        RedisBroker(url, prefix="{pushsvc}:")


def _stats(url: str, command: str) -> int:
    """How many times the primaries ran `command` since their stats were reset."""
    client = single_client(url, socket_timeout=5)
    try:
        found = 0
        nodes = client.get_primaries() if url.startswith("redis+cluster") else [None]  # type: ignore[attr-defined]
        for node in nodes:
            target = {"target_nodes": node} if node is not None else {}
            stats = client.info("commandstats", **target)
            found += int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))
        return found
    finally:
        client.close()


def _reset_stats(url: str) -> None:
    client = single_client(url, socket_timeout=5)
    try:
        if url.startswith("redis+cluster"):
            client.config_resetstat(target_nodes="primaries")  # type: ignore[call-arg]
        else:
            client.config_resetstat()
    finally:
        client.close()


def test_updates_reach_topic_and_pattern_watchers_once_each_from_every_partition(
    broker: RedisBroker, url: str
) -> None:
    topics = topics_in_every_partition()
    single = topics[5]
    inbox: queue.Queue[Update] = queue.Queue()
    feed = broker.consume_updates(lambda updates: [inbox.put(u) for u in updates])
    # Both: the topic's own channel and, for the pattern, every partition's; each update
    # must still arrive once.
    feed.watch([single, "*"])
    _reset_stats(url)
    published = publish_fenced(broker, [draft(t, n) for n in (1, 2) for t in topics.values()])
    received = [inbox.get(timeout=5) for _ in published]
    assert sorted(u.id.text for u in received) == sorted(u.id.text for u in published)
    for topic in topics.values():
        mine = [u for u in received if u.topic == topic]
        assert [orjson.loads(u.data)["n"] for u in mine] == [1, 2]
    with pytest.raises(queue.Empty):
        inbox.get(timeout=0.3)  # nothing twice
    feed.unwatch(["*"])
    (late,) = publish_fenced(broker, [draft(single, 3)])
    assert inbox.get(timeout=5) == late  # the topic's own channel again
    if url.startswith("redis+cluster"):
        # Updates went only to the node of their slot: never broadcast over the cluster bus.
        assert _stats(url, "publish") == 0
        assert _stats(url, "spublish") > 0
    feed.close()


@pytest.mark.cluster
def test_one_waiter_is_woken_for_each_partition_of_a_cluster_and_misses_none(
    redis_cluster: RedisClusterServers, prefix: str
) -> None:
    broker = RedisBroker(redis_cluster.url, prefix=prefix, partitions=P)
    waiter = WakeWaiter(
        broker._client,
        broker.keys,
        parse_cluster_url(redis_cluster.url).seeds,
        name="test-waiter",
        safety_poll_s=60,  # far beyond the test: every entry must come by a wake
    )
    topics = topics_in_every_partition()
    after = {(index, P): "0-0" for index in topics}
    seen: dict[int, list[float]] = defaultdict(list)
    try:
        assert waiter.wait(after, count=100, block_ms=50) == {}  # nothing yet (safety read)
        for round_ in range(3):
            for topic in topics.values():
                broker.append_events(topic, [Event(float(round_), round_, None)], lateness_us=10**9)
            deadline = time.monotonic() + 10
            while sum(len(v) for v in seen.values()) < P * (round_ + 1):
                assert time.monotonic() < deadline, dict(seen)
                for shard, entries in waiter.wait(after, count=100, block_ms=500).items():
                    after[shard] = entries[-1].id
                    seen[shard[0]] += [e.value for entry in entries for e in entry.events or ()]
        assert seen == {index: [0.0, 1.0, 2.0] for index in topics}
        # The connections are the primaries', not the partitions': 3 for 16 partitions.
        assert len(waiter._reader.connected_nodes()) == 3
    finally:
        waiter.close()
        broker.close()
