"""Replays read together are the replays read one by one, gaps included, and really are read
together: many streams' replays of a partition cost one read of its history, not one each.

On a real Redis: a history of several partitions, trimmed so that old cursors and topics whose
first update is gone are lost, against cursors that hypothesis draws from every kind a client
can send (kept ids, trimmed ids, ids never issued, another epoch's, a partition the broker
does not have, none).
"""

from __future__ import annotations

from collections.abc import Iterator

import gevent
import orjson
import pytest
import redis
from harness.fenced_publish import publish as publish_fenced
from harness.redis_server import RedisServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pushsvc.broker.redis import RedisBroker
from pushsvc.core.cursor import Cursor
from pushsvc.core.topics import TopicMatcher
from pushsvc.core.updates import UpdateDraft, UpdateId, new_epoch
from pushsvc.deliver.replay_batcher import ReplayBatcher

pytestmark = pytest.mark.redis

PARTITIONS = 4
TOPICS = ("a", "b", "c.x", "c.y", "d", "early", "late")
SELECTORS = (*TOPICS, "c.*")


class History:
    """A broker whose history holds updates of `TOPICS` (some trimmed) and every id issued."""

    def __init__(self, broker: RedisBroker) -> None:
        self.broker = broker
        self.issued: dict[int, list[UpdateId]] = {p: [] for p in range(PARTITIONS)}
        drafts = [UpdateDraft("early", 0, b'{"n":0}')]
        for n in range(1, 120):
            topic = TOPICS[(n * 7) % 5]  # a, b, c.x, c.y, d: each partition trims its own
            drafts.append(UpdateDraft(topic, n, orjson.dumps({"n": n})))
        drafts.append(UpdateDraft("late", 120, b'{"n":120}'))
        for draft in drafts:
            for update in publish_fenced(broker, [draft]):
                self.issued[update.id.partition].append(update.id)


@pytest.fixture
def history(own_redis: RedisServer) -> Iterator[History]:
    broker = RedisBroker(own_redis.url, history=10, partitions=PARTITIONS)
    try:
        yield History(broker)
    finally:
        broker.close()


def cursors(history: History) -> st.SearchStrategy[Cursor]:
    """Any cursor a client may send: per partition nothing, an id issued there (kept or
    trimmed), one never issued, one of another epoch; sometimes a partition not kept."""

    def of_partition(partition: int) -> st.SearchStrategy[UpdateId | None]:
        issued = history.issued[partition]
        kinds: list[st.SearchStrategy[UpdateId | None]] = [st.none()]
        if issued:
            last = issued[-1]
            kinds += [
                st.sampled_from(issued),
                st.sampled_from(issued[-3:]),  # most reconnecting clients are near the end
                st.just(UpdateId(last.epoch, last.ms + 1000, 0)),  # never issued
                st.just(UpdateId(new_epoch(partition), last.ms, last.seq)),  # another epoch
            ]
        return st.one_of(kinds)

    per_partition = st.tuples(*(of_partition(p) for p in range(PARTITIONS)))
    stranger = st.one_of(st.none(), st.just(UpdateId(new_epoch(PARTITIONS + 1), 1, 0)))
    return st.builds(
        lambda ids, extra: Cursor([i for i in (*ids, extra) if i is not None]),
        per_partition,
        stranger,
    )


def matchers() -> st.SearchStrategy[TopicMatcher]:
    return st.lists(st.sampled_from(SELECTORS), min_size=1, max_size=3, unique=True).map(
        TopicMatcher
    )


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_replays_read_together_are_the_replays_read_one_by_one(
    history: History, data: st.DataObject
) -> None:
    asked = data.draw(st.lists(st.tuples(cursors(history), matchers()), min_size=1, max_size=8))
    together = history.broker.replay_many(asked)
    alone = [history.broker.replay(after, match) for after, match in asked]
    assert together == alone


def test_the_history_drawn_from_has_gaps_of_every_kind(history: History) -> None:
    """The comparison above is worth something only if lost partitions come up: a trimmed
    id, a topic whose first update is trimmed, and replays that are whole."""
    broker = history.broker
    a = broker.partition_of("a")
    oldest_issued = history.issued[a][0]
    assert broker.replay(Cursor([oldest_issued]), TopicMatcher(["a"])).lost == {a}
    early = broker.partition_of("early")
    assert broker.replay(Cursor(), TopicMatcher(["early"])).lost == {early}
    near_the_end = Cursor(ids[-3] for ids in history.issued.values() if ids)
    whole = broker.replay(near_the_end, TopicMatcher(["a", "b", "c.*", "d"]))
    assert not whole.lost and whole.updates


def test_a_replay_of_several_partitions_comes_in_the_order_redis_wrote_it(
    history: History,
) -> None:
    """Merged across partitions by each update's stream time, `<ms>-<seq>`, each partition in
    its own order: read one partition after another, they would come grouped by partition."""
    near_the_end = Cursor(ids[-4] for ids in history.issued.values() if ids)
    for replayed in history.broker.replay_many([(near_the_end, TopicMatcher(["*"]))] * 2):
        updates = replayed.updates
        times = [(u.id.ms, u.id.seq) for u in updates]
        assert len({u.id.partition for u in updates}) > 1 and len({ms for ms, _ in times}) > 1
        assert times == sorted(times)
        for partition in {u.id.partition for u in updates}:
            mine = [u.id for u in updates if u.id.partition == partition]
            assert mine == history.issued[partition][-len(mine) :]


def xranges(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return int(stats.get("cmdstat_xrange", {}).get("calls", 0))


def test_concurrent_replays_of_a_partition_read_its_history_once_per_batch(
    history: History, own_redis: RedisServer
) -> None:
    broker = history.broker
    partition = broker.partition_of("a")
    issued = history.issued[partition]
    asked = [
        (Cursor([issued[-1 - n % 5]]), TopicMatcher(["a" if n % 2 else "b"])) for n in range(200)
    ]
    alone = [broker.replay(after, match) for after, match in asked]
    batcher = ReplayBatcher(broker)
    client = redis.Redis.from_url(own_redis.url)
    try:
        client.config_resetstat()
        greenlets = [gevent.spawn(batcher.replay, after, match) for after, match in asked]
        gevent.joinall(greenlets, raise_error=True)
        read = xranges(client)
    finally:
        client.close()
    assert [g.value for g in greenlets] == alone
    # 200 streams arriving together: one batch, one XRANGE per partition they read, not 200
    # (a second batch would read both partitions again).
    assert read == len({partition, broker.partition_of("b")}), read
