"""A Mercure resume lookup read a page at a time (`mercure_search.PAGE` entries of a
partition's history per read, `HistoryPages`) answers as the one read of the whole history
did: the same `Resume` (its cursor, its `Mercure-Last-Event-ID`) for an id at the start, in
the middle or at the end of what is kept, for one kept several times (the first in a
replay's order wins), for one trimmed and for one never published, asked one by one and all
together. On the memory broker, on a redis-server and on a Redis Cluster, 4 partitions each
(the hub's topics all kept in one of them: `pushsvc.core.partitions`), with pages of a few
entries so that every search crosses many of them.

The reference is the read before the pages (`support.mercure_hub.lookup_at_once`): a replay
of `mercure.*` from where each partition's history starts, searched, its heads for
`cursor_after`."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import orjson
import pytest
from harness.fenced_publish import publish

from pushsvc.broker.base import HistoryPages
from pushsvc.broker.base import ServingBroker as Broker
from pushsvc.broker.memory import MemoryBroker, Store
from pushsvc.broker.redis import RedisBroker
from pushsvc.core.cursor import EARLIEST
from pushsvc.core.partitions import partition_of
from pushsvc.core.updates import Update, UpdateDraft
from pushsvc.deliver import mercure_resume, mercure_search
from pushsvc.deliver.mercure_resume import Resume
from pushsvc.deliver.mercure_updates import envelope
from support.mercure_hub import lookup_at_once as unpaged

PARTITIONS = 4
HISTORY = 60
"""Updates each partition keeps: the first rounds below are trimmed."""
ROUNDS = 100
PAGE = 7


@pytest.fixture(
    params=[
        "memory",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("cluster", marks=[pytest.mark.redis, pytest.mark.cluster]),
    ]
)
def broker(request: pytest.FixtureRequest) -> Iterator[Broker]:
    made: Broker
    if request.param == "memory":
        # One millisecond for every update: their order across partitions is by sequence
        # alone, then by partition (a Redis's clock gives such ties less often).
        now = time.time()
        made = MemoryBroker(Store(PARTITIONS, clock=lambda: now, history=HISTORY))
    else:
        server = request.getfixturevalue(
            "redis_server" if request.param == "redis" else "redis_cluster"
        )
        made = RedisBroker(
            server.url,
            prefix=request.getfixturevalue("prefix"),
            history=HISTORY,
            partitions=PARTITIONS,
        )
    yield made
    made.close()


@pytest.fixture(autouse=True)
def small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mercure_search, "PAGE", PAGE)


def hub_topics() -> list[str]:
    """`PARTITIONS` pushsvc topics of the Mercure pattern: all in the hub's one partition."""
    topics = [f"mercure.t{n}-{uuid.uuid4().hex[:6]}" for n in range(PARTITIONS)]
    assert len({partition_of(topic, PARTITIONS) for topic in topics}) == 1
    return topics


def mercure_draft(topic: str, update_id: str, n: int) -> UpdateDraft:
    """A Mercure update's draft as the aggregator makes it: a message whose data is the
    envelope."""
    kept = envelope(
        [f"https://example.com/{topic}"],
        f"data {n}",
        private=False,
        update_id=update_id,
        retry=None,
    )
    body = (
        b'{"topic":'
        + orjson.dumps(topic)
        + b',"ts":1,"event":{"value":null,"type":"message","data":'
        + orjson.dumps(kept)
        + b"}}"
    )
    return UpdateDraft(topic, 1_000_000 + n, body)


def fill(broker: Broker) -> dict[str, list[Update]]:
    """`ROUNDS` rounds, each an update of every hub topic published together (one
    millisecond for them, most often: a tie of time across partitions), some ids published
    twice (in one partition, and in two), and updates of another topic between; by id, what
    was published with it."""
    topics = hub_topics()
    published: dict[str, list[Update]] = {}
    for r in range(ROUNDS):
        drafts = []
        for p, topic in enumerate(topics):
            update_id = f"r{r}-p{p}"
            if r % 9 == 5 and p == 3:
                update_id = f"r{r - 2}-p1"  # again, in another partition, later
            if r % 9 == 2 and p == 1:
                update_id = f"r{r - 1}-p3"  # again, later, in a partition numbered before
            if r % 11 == 7 and p == 2:
                update_id = f"r{r - 4}-p2"  # again, in its own partition
            drafts.append(mercure_draft(topic, update_id, r * PARTITIONS + p))
        drafts.append(
            UpdateDraft("stats.elsewhere", r, b'{"topic":"stats.elsewhere","id":"r0-p0"}')
        )
        for update in publish(broker, drafts):
            if update.topic.startswith("mercure."):
                update_id = orjson.loads(update.data)["event"]["data"]["id"]
                published.setdefault(update_id, []).append(update)
    return published


def test_a_lookup_read_in_pages_answers_as_the_one_read_did(broker: Broker) -> None:
    assert isinstance(broker, HistoryPages)
    published = fill(broker)
    kept = unpaged(broker, list(published))
    found = [i for i, resume in zip(published, kept, strict=True) if resume.after is not None]
    trimmed = [i for i, resume in zip(published, kept, strict=True) if resume.after is None]
    assert trimmed and len(found) > PAGE * PARTITIONS, (len(trimmed), len(found))
    twice = [i for i in found if len(published[i]) > 1]
    assert twice and all(len({u.id.partition for u in published[i]}) == 1 for i in twice)
    asked = [
        *found[:3],  # the start of what is kept
        found[len(found) // 2],  # the middle
        *found[-3:],  # the end
        *twice,
        trimmed[0],
        trimmed[-1],
        f"urn:uuid:{uuid.uuid4()}",  # never published
    ]
    for update_id in asked:
        assert mercure_resume.resolve_many(broker, [update_id]) == unpaged(broker, [update_id])
    assert mercure_resume.resolve_many(broker, asked) == unpaged(broker, asked)
    every = [*published, "earliest", f"urn:uuid:{uuid.uuid4()}"]
    expected = [*unpaged(broker, list(published)), mercure_resume.resolve(broker, "earliest")]
    assert mercure_resume.resolve_many(broker, every) == [*expected, Resume(None, EARLIEST)]


def test_pages_are_paused_between_and_read_no_further_than_what_was_found(
    broker: Broker,
) -> None:
    published = fill(broker)
    pauses: list[int] = []
    unknown = f"urn:uuid:{uuid.uuid4()}"
    assert mercure_resume.resolve_many(broker, [unknown], lambda: pauses.append(1)) == [
        Resume(None, EARLIEST)
    ]
    # The hub's partition read to its end (it keeps HISTORY entries), a pause between pages.
    assert len(pauses) == -(-HISTORY // PAGE) - 1
    # The oldest id kept: found on the first page of its partition, and no partition read
    # past it.
    oldest = next(
        i
        for i, resume in zip(published, unpaged(broker, list(published)), strict=True)
        if resume.after is not None
    )
    pauses.clear()
    assert mercure_resume.resolve_many(broker, [oldest], lambda: pauses.append(1)) == unpaged(
        broker, [oldest]
    )
    assert len(pauses) < 2 * PARTITIONS, len(pauses)
