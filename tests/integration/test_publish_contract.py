"""The publish step (`pushsvc.broker.publish_payload`): one batch sequence, three backends.

The memory broker's `Store.publish` (in memory, on a manual clock), `publish_updates.lua` on one
redis-server and on a Redis Cluster apply the same payload; fed the same batches, they must
leave the same state, field by field: what each publish answered (kind, topic, clock, JSON),
the history a stream replays, the topics' latest updates, live groups, active alert
instances, series tiers, checkpoints and the applied position, and refuse the same batches
(Fenced, PublishedAlready) without writing anything.

Ids are left out of every comparison: an id is `<epoch>:<ms>-<seq>`, and the epoch is random
per history while ms is the clock of whoever numbers (a manual clock in memory, Redis's own),
so ids agree in order only, which each backend's `Broker` contract already holds them to.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import orjson
import pytest
from harness.live import wait_until

from pushsvc.broker.base import Applied
from pushsvc.broker.memory import MemoryBroker, Store
from pushsvc.broker.redis import RedisBroker
from pushsvc.broker.shared_log import FIRST, LeaseGroup, LogBroker
from pushsvc.core.checkpoint import Checkpoint
from pushsvc.core.cursor import Cursor
from pushsvc.core.partitions import Partition, partition_of
from pushsvc.core.topics import ALERTS, TopicMatcher
from pushsvc.core.updates import (
    SeriesWrite,
    Update,
    UpdateDraft,
    alert_draft,
    deletion_draft,
    point_draft,
)
from pushsvc.errors import Fenced, PublishedAlready
from support.memory_core import ManualClock

S = 1_000_000
PARTITIONS = 2
SHARD: Partition = (0, PARTITIONS)
TTL_US = 30 * S
BASE_US = 1_763_700_000 * S
EVERYTHING = TopicMatcher(["*"])
TIER = "1s"


def topics_of_shard(count: int) -> list[str]:
    return [f"t{i}" for i in range(100) if partition_of(f"t{i}", PARTITIONS) == SHARD[0]][:count]


A, B, C = topics_of_shard(3)


@dataclass
class Backend:
    """One deployment's store, and a process (broker) holding SHARD's lease on it."""

    kind: str
    url: str = ""
    prefix: str = ""
    clock: ManualClock = field(default_factory=ManualClock)
    groups: list[LeaseGroup] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.store = Store(PARTITIONS, clock=self.clock)
        self.broker: LogBroker = (
            MemoryBroker(self.store)
            if self.kind == "memory broker"
            else RedisBroker(self.url, prefix=self.prefix, partitions=PARTITIONS)
        )
        group = self.broker.lease_group(ttl_us=TTL_US)
        self.groups.append(group)
        group.round()
        self.token = group.take([SHARD])[SHARD].token
        self.log = self.broker.event_log(SHARD)

    def publish(self, drafts: list[UpdateDraft], applied: Applied) -> list[Update]:
        if self.kind == "memory broker":
            self.clock.advance(0.001)  # ids move with the clock, as Redis's do
        return self.broker.publish_updates(drafts, applied=applied, fence=self.token)

    def active_alerts(self) -> list[bytes]:
        return sorted(self.broker.active_alerts())

    def newest_point(self, topic: str, group_id: str = "") -> int | None:
        """The newest bucket start (ms) of the topic's (or group's) tier; None: none kept."""
        page = self.broker.series(
            topic,
            resolution=TIER,
            group_id=group_id,
            since_us=0,
            until_us=2**62,
            retention_us=2**62,
            limit=10_000,
        )
        return page.points[-1][0] // 1000 if page.points else None

    def state(self) -> dict[str, object]:
        """Everything the contract compares, ids left out."""
        broker = self.broker
        replayed = broker.replay(Cursor(), EVERYTHING)
        return {
            "history": [_message(u) for u in replayed.updates],
            "latest": {t: _message(u) for t, u in broker.latest(EVERYTHING).items()},
            "groups": {t: sorted(g) for t, g in broker.latest_groups([A, B, C]).items()},
            "alerts": self.active_alerts(),
            "points": {t: self.newest_point(t) for t in (A, B, C)},
            "checkpoints": sorted(c.topic for c in self.log.checkpoints()),
            "applied": self.log.applied(),
        }

    def close(self) -> None:
        for group in self.groups:
            group.close()
        self.broker.close()


def _message(update: Update) -> tuple[str, str, int, bytes]:
    """An update without its id: kind (SSE event), topic, clock, the JSON after the id."""
    head, _, rest = update.data.partition(b",")
    assert head.startswith(b'{"id":"')
    return update.event, update.topic, update.clock_us, rest


@pytest.fixture(
    params=[
        "memory broker",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("cluster", marks=[pytest.mark.redis, pytest.mark.cluster]),
    ]
)
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "memory broker":
        made = Backend("memory broker")
    else:
        server = request.getfixturevalue(
            "redis_server" if request.param == "redis" else "redis_cluster"
        )
        made = Backend(request.param, server.url, request.getfixturevalue("prefix"))
    yield made
    made.close()


def update(
    topic: str, n: int, groups: tuple[str, ...] = (), forgotten: tuple[str, ...] = ()
) -> UpdateDraft:
    body = orjson.dumps({"topic": topic, "n": n, "windows": {}})
    kept = tuple((gid, orjson.dumps({"key": {"g": gid}, "n": n})) for gid in groups)
    return UpdateDraft(topic, BASE_US + n * S, body, kept, forgotten)


def point(topic: str, n: int, bucket_s: int) -> UpdateDraft:
    write = SeriesWrite(TIER, "", BASE_US + bucket_s * S, b"\x00\xffpacked%d" % bucket_s, BASE_US)
    return point_draft(topic, BASE_US + n * S, write, {"count": n})


def alert(n: int, key: str, active: bool) -> UpdateDraft:
    body = orjson.dumps({"alert": key, "state": "firing" if active else "resolved", "n": n})
    return alert_draft(ALERTS, BASE_US + n * S, body, key, active)


def checkpoint(topic: str) -> Checkpoint:
    return Checkpoint(topic, (1, 0), BASE_US, 0, b"", ())


def run_batches(backend: Backend) -> list[object]:
    """The batch sequence every backend is fed; what each publish answered, and the state."""
    answers: list[object] = []
    delivered: list[Update] = []
    # Every process gets what was published, each message saying its kind (pub/sub on Redis).
    backend.broker.consume_updates(delivered.extend).watch([A, B, C, ALERTS])
    assert backend.log.save_checkpoints(backend.token, [checkpoint(A), checkpoint(B)]) == 2
    first = [
        update(A, 1, groups=("g1", "g2")),
        update(B, 2, groups=("h1",)),
        point(A, 3, bucket_s=1),
        point(B, 3, bucket_s=1),
        alert(4, "k1", active=True),
        alert(4, "k2", active=True),
        update(A, 5, forgotten=("g1",)),
        update(C, 5),
        deletion_draft(C, BASE_US + 6 * S),  # in the same run as C's update: no latest left
    ]
    answers.append([_message(u) for u in backend.publish(first, Applied(SHARD, "5-0", 5, FIRST))])
    answers.append(backend.state())
    second = [
        point(A, 7, bucket_s=1),  # its tier holds it already: not published again
        point(A, 8, bucket_s=2),
        alert(9, "k1", active=False),
        update(B, 10, groups=("h2",)),
        deletion_draft(B, BASE_US + 11 * S),  # drops B's latest, groups, series, checkpoint
        update(B, 12, groups=("h3",)),  # B starts again: its first update
        update(C, 13),
    ]
    answers.append([_message(u) for u in backend.publish(second, Applied(SHARD, "9-0", 4, "5-0"))])
    answers.append(backend.state())
    published = answers[0] + answers[2]  # type: ignore[operator]
    wait_until(lambda: len(delivered) >= len(published), timeout=10, what="every update delivered")
    answers.append([_message(u) for u in delivered])
    # Refused batches write nothing.
    with pytest.raises(PublishedAlready):
        backend.publish([update(A, 20)], Applied(SHARD, "10-0", 1, "5-0"))
    with pytest.raises(Fenced):
        backend.broker.publish_updates(
            [update(A, 21)], applied=Applied(SHARD, "10-0", 1, "9-0"), fence="not-the-token"
        )
    answers.append(backend.state())
    return answers


def test_every_backend_publishes_the_same_batches_to_the_same_state(backend: Backend) -> None:
    got = run_batches(backend)
    # The memory broker is the reference: compute it here (cheap) and hold each backend to it.
    reference = Backend("memory broker")
    try:
        expected = run_batches(reference)
    finally:
        reference.close()
    assert got == expected
    first_answer, after_first, second_answer, after_second, delivered, after_refusals = got
    assert delivered == first_answer + second_answer  # type: ignore[operator]
    # And the reference says what the Lua always did, so the memory broker is held to it too.
    assert [m[0] for m in second_answer] == [
        "point",
        "alert",
        "stats",
        "snapshot",
        "stats",
        "stats",
    ]
    assert after_second == after_refusals
    assert isinstance(after_first, dict) and isinstance(after_second, dict)
    assert set(after_first["latest"]) == {A, B}  # C's deletion is nobody's latest
    assert set(after_second["latest"]) == {A, B, C}
    assert after_second["groups"] == {
        A: [orjson.dumps({"key": {"g": "g2"}, "n": 1})],
        B: [orjson.dumps({"key": {"g": "h3"}, "n": 12})],
    }
    assert after_second["points"] == {A: (BASE_US + 2 * S) // 1000, B: None, C: None}
    assert after_second["checkpoints"] == [A]
    assert after_second["applied"] == "9-0"
    assert len(after_second["alerts"]) == 1  # k1 resolved, k2 firing
    assert len(first_answer) == 9
