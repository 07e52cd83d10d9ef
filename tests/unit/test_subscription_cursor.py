"""Priming a stream over several partitions (deliver/subscription, deliver/rendering).

Both of pushsvc's brokers keep one history for now, so the multi-partition path is driven
here by a small broker written in the test: it implements the `Broker.replay` contract over
a few partitions, each with its own epoch and bounded history, and nothing else it need not.
The integration suite runs the contract itself on the real brokers.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass, field

import orjson
import pytest

from pushsvc.broker.base import Replayed
from pushsvc.core.cursor import Cursor
from pushsvc.core.topics import TopicMatcher
from pushsvc.core.updates import Update, UpdateId
from pushsvc.deliver.hub import Hub
from pushsvc.deliver.rendering import rendering_for_stream
from pushsvc.deliver.subscription import Primed, reads_several_partitions, subscribe

# Topic → partition, as the test broker places them.
PLACES = {"a": 0, "b": 1, "c": 2, "a2": 0}


@dataclass
class _Partition:
    epoch: str
    keep: int
    issued: dict[UpdateId, int] = field(default_factory=dict)
    """Every id of this epoch → its index in the partition's order."""
    history: list[Update] = field(default_factory=list)
    """The newest `keep` updates."""


class PartitionedBroker:
    """Several partitions, each its own epoch and bounded history (`keep` updates). Ids are
    `epoch:clock-0`, one clock for all partitions, so merging by the id's time is publish
    order, as the contract asks of a broker that can tell."""

    def __init__(self, partitions: int = 3, keep: int = 100) -> None:
        self.partitions = partitions
        self._parts = [_Partition(self._epoch(p, "c0ffee00"), keep) for p in range(partitions)]
        self._clock = 0
        self._latest: dict[str, Update] = {}

    @staticmethod
    def _epoch(partition: int, token: str) -> str:
        return (format(partition, "x") if partition else "") + token

    def partition_of(self, topic: str) -> int:
        return PLACES[topic] % self.partitions

    def publish(self, *topics: str) -> list[Update]:
        published = []
        for topic in topics:
            self._clock += 1
            part = self._parts[self.partition_of(topic)]
            update_id = UpdateId(part.epoch, self._clock, 0)
            body = orjson.dumps({"topic": topic, "ts": self._clock, "windows": {}})
            update = Update.numbered(topic, update_id, self._clock, body)
            part.issued[update_id] = len(part.issued)
            part.history = [*part.history, update][-part.keep :]
            self._latest[topic] = update
            published.append(update)
        return published

    def reset(self, partition: int) -> None:
        """The partition's history lost (Redis restarted empty there): a new epoch."""
        self._parts[partition] = _Partition(
            self._epoch(partition, "deadbeef"), self._parts[partition].keep
        )
        for topic in [t for t in self._latest if self.partition_of(t) == partition]:
            del self._latest[topic]

    def replay(self, after: Cursor, match: TopicMatcher) -> Replayed:
        lost = {p for p in after if p >= self.partitions}
        streams: list[list[Update]] = []
        for p, part in enumerate(self._parts):
            kept = part.history
            mine = after.get(p)
            if mine is not None:
                index = part.issued.get(mine)
                oldest = part.issued[kept[0].id] if kept else len(part.issued)
                if index is None or index + 1 < oldest:
                    lost.add(p)  # another epoch, never issued, or trimmed past it
                    continue
                kept = kept[index + 1 - oldest :]
            streams.append([u for u in kept if match(u.topic)])
        merged = list(heapq.merge(*streams, key=lambda u: u.id.ms))
        return Replayed(merged, frozenset(lost))

    def latest(self, match: TopicMatcher) -> dict[str, Update]:
        return {t: u for t, u in self._latest.items() if match(t)}

    def latest_groups(self, topics: Sequence[str]) -> dict[str, list[bytes]]:
        return {}


class _Feed:
    def watch(self, selectors: Sequence[str]) -> None: ...

    def unwatch(self, selectors: Sequence[str]) -> None: ...

    def close(self) -> None: ...


def _prime(broker: PartitionedBroker, selectors: tuple[str, ...], last: str | None) -> Primed:
    hub = Hub(queue_size=100, slow_timeout_us=10**7)
    return subscribe(broker, hub, _Feed(), TopicMatcher(selectors), last)  # type: ignore[arg-type]


def _messages(data: bytes) -> list[dict[str, str]]:
    """SSE messages as field → value (enough for these tests: one data line each)."""
    out = []
    for block in data.split(b"\n\n"):
        if block:
            fields = dict(line.split(": ", 1) for line in block.decode().split("\n"))
            out.append(fields)
    return out


def _ids(messages: list[dict[str, str]]) -> list[str | None]:
    return [m.get("id") for m in messages]


def test_a_stream_over_several_partitions_writes_its_cursor_as_id() -> None:
    broker = PartitionedBroker()
    a1, b1, c1 = broker.publish("a", "b", "c")
    primed = _prime(broker, ("a", "b", "c"), a1.id.text)
    assert primed.cursor_ids and primed.snapshot is None
    # Partitions 1 and 2 are absent from the cursor: all they keep is replayed.
    assert primed.replay == [b1, c1]
    messages = _messages(b"".join(primed.pages(None, 1 << 62)))
    assert _ids(messages) == [f"{a1.id},{b1.id}", f"{a1.id},{b1.id},{c1.id}"]
    # The update's own id stays its own in its data.
    assert [orjson.loads(m["data"])["id"] for m in messages] == [b1.id.text, c1.id.text]
    assert primed.cursor == Cursor([a1.id, b1.id, c1.id]) == primed.client.queue.floor


def test_resuming_from_any_id_written_gets_exactly_the_rest() -> None:
    broker = PartitionedBroker()
    first = broker.publish("a", "b")
    rest = broker.publish("c", "a", "a2", "b", "c", "a")
    primed = _prime(broker, ("*",), Cursor([first[0].id]).text)
    assert primed.replay == [first[1], *rest]
    written = _messages(b"".join(primed.pages(None, 1 << 62)))
    for i, message in enumerate(written):
        again = _prime(broker, ("*",), message["id"])
        assert again.snapshot is None  # no gap
        assert again.replay == primed.replay[i + 1 :]  # no duplicate, nothing lost


def test_a_lost_partition_gets_a_gap_snapshot_of_its_topics_only_then_the_others_replay() -> None:
    broker = PartitionedBroker()
    a1, b1, c1 = broker.publish("a", "b", "c")
    cursor = Cursor([a1.id, b1.id, c1.id])
    broker.reset(1)  # partition 1 ("b") lost its history
    a2, b2, c2, a3 = broker.publish("a", "b", "c", "a")
    primed = _prime(broker, ("*",), cursor.text)
    assert primed.snapshot is not None and primed.snapshot.gap
    assert primed.snapshot.latest == {"b": b2}  # the lost partition's topics only
    assert primed.replay == [a2, c2, a3]  # the others, exactly
    snapshot, *replayed = _messages(b"".join(primed.pages(None, 1 << 62)))
    assert snapshot["event"] == "snapshot"
    assert orjson.loads(snapshot["data"]) == {
        "gap": True,
        "topics": {"b": {"id": b2.id.text, "ts": b2.clock_us, "windows": {}}},
    }
    # The snapshot's id: the lost partition at the snapshot, the others where the client was,
    # so resuming from it replays the rest exactly.
    assert snapshot["id"] == Cursor([a1.id, b2.id, c1.id]).text
    assert _ids(replayed) == [
        Cursor([a2.id, b2.id, c1.id]).text,
        Cursor([a2.id, b2.id, c2.id]).text,
        Cursor([a3.id, b2.id, c2.id]).text,
    ]
    again = _prime(broker, ("*",), snapshot["id"])
    assert again.snapshot is None and again.replay == [a2, c2, a3]
    assert primed.client.queue.floor == Cursor([a3.id, b2.id, c2.id])


def test_a_partition_trimmed_past_the_cursor_is_lost_the_others_replay() -> None:
    broker = PartitionedBroker(keep=2)
    a1, b1 = broker.publish("a", "b")
    b_more = broker.publish("b", "b", "b")  # partition 1 keeps only the last two
    (a2,) = broker.publish("a")
    primed = _prime(broker, ("a", "b"), Cursor([a1.id, b1.id]).text)
    assert primed.snapshot is not None and primed.snapshot.latest == {"b": b_more[-1]}
    assert primed.replay == [a2]
    assert primed.cursor == Cursor([a2.id, b_more[-1].id])


def test_a_lost_partition_without_matching_data_leaves_the_cursor() -> None:
    broker = PartitionedBroker()
    a1, c1 = broker.publish("a", "c")
    broker.reset(2)
    (a2,) = broker.publish("a")
    primed = _prime(broker, ("a", "c"), Cursor([a1.id, c1.id]).text)
    assert primed.snapshot is not None and primed.snapshot.latest == {} and primed.gap
    assert primed.replay == [a2]
    assert primed.cursor == Cursor([a2.id])  # nothing of partition 2 any more


@pytest.mark.parametrize(
    "last",
    ["garbage", "c0ffee00:1-0,c0ffee00:2-0", "400c0ffee00:1-0"],
    ids=["malformed", "two ids of one partition", "no such partition"],
)
def test_an_id_we_could_not_have_issued_is_a_gap_snapshot_of_everything(last: str) -> None:
    broker = PartitionedBroker()
    a1, b1, c1 = broker.publish("a", "b", "c")
    primed = _prime(broker, ("*",), last)
    assert primed.snapshot is not None and primed.gap
    assert primed.snapshot.latest == {"a": a1, "b": b1, "c": c1}
    assert primed.replay == []
    (snapshot,) = _messages(b"".join(primed.pages(None, 1 << 62)))
    assert snapshot["id"] == Cursor([a1.id, b1.id, c1.id]).text


def test_a_partition_the_broker_does_not_have_is_a_gap_of_nothing_the_others_replay() -> None:
    # A cursor from a deployment with more partitions: its extra part is lost, the rest is not.
    broker = PartitionedBroker()
    a1, b1 = broker.publish("a", "b")
    (a2,) = broker.publish("a")
    stranger = UpdateId("3c0ffee00", 5, 0)
    primed = _prime(broker, ("a", "b"), Cursor([a1.id, b1.id, stranger]).text)
    assert primed.snapshot is not None and primed.snapshot.gap
    assert primed.snapshot.latest == {}
    assert primed.replay == [a2]
    assert primed.cursor == Cursor([a2.id, b1.id])


def test_live_updates_continue_the_cursor_and_the_floor_drops_what_the_head_had() -> None:
    broker = PartitionedBroker()
    a1, b1 = broker.publish("a", "b")
    hub = Hub(queue_size=100, slow_timeout_us=10**7)
    primed = subscribe(broker, hub, _Feed(), TopicMatcher(["*"]), None)  # type: ignore[arg-type]
    assert _ids(_messages(b"".join(primed.pages(None, 1 << 62)))) == [Cursor([a1.id, b1.id]).text]
    # b1 was in flight when the snapshot was read: the floor drops it; c1 is new.
    (c1,) = broker.publish("c")
    hub.dispatch([b1])
    hub.dispatch([c1])
    rendering = rendering_for_stream(None, chunked=False, cursor=primed.live_cursor)
    blocks = rendering.blocks(primed.client.queue.drain())
    assert _ids(_messages(b"".join(blocks))) == [Cursor([a1.id, b1.id, c1.id]).text]


@pytest.mark.parametrize(
    ("partitions", "selectors", "several"),
    [
        (1, ("*",), False),  # one partition in all
        (3, ("a",), False),  # one topic
        (3, ("a", "a2"), False),  # several topics of one partition
        (3, ("a", "b"), True),
        (3, ("*",), True),  # a pattern may reach any partition
    ],
)
def test_only_a_stream_over_several_partitions_writes_its_cursor(
    partitions: int, selectors: tuple[str, ...], several: bool
) -> None:
    broker = PartitionedBroker(partitions=partitions)
    matcher = TopicMatcher(selectors)
    assert reads_several_partitions(broker, matcher) is several  # type: ignore[arg-type]
