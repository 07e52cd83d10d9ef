"""The embedded server's paced publish: a big batch of updates goes out in parts, with a pause
between two, so that the loop serves producers meanwhile. What it keeps is what one atomic
publish keeps; a stream primed in any pause gets every update once, in order; a publish
killed in a pause still goes out whole; and one refused at its start writes nothing. A POST
pauses too, between its validation and its append."""

from __future__ import annotations

from collections.abc import Callable

import orjson
import pytest
from greenlet import GreenletExit
from harness.fenced_publish import publish_applied
from hypothesis import given, settings
from hypothesis import strategies as st

from pushsvc.broker.base import Applied
from pushsvc.broker.memory import MemoryBroker, Store
from pushsvc.broker.memory.broker import PACED_DRAFTS
from pushsvc.broker.shared_log import FIRST
from pushsvc.core.topics import TopicMatcher
from pushsvc.core.updates import Update, UpdateDraft
from pushsvc.deliver.hub import Hub
from pushsvc.deliver.rendering import rendering_for_stream
from pushsvc.deliver.subscription import Primed, subscribe
from pushsvc.errors import Fenced, RequestError
from pushsvc.ingest import InputLimits
from pushsvc.ingest.accept import ingest
from support.memory_core import ManualClock

SHARD = (0, 1)
TOPICS = ("a", "b")


def _drafts(first: int, count: int) -> list[UpdateDraft]:
    return [
        UpdateDraft(
            TOPICS[n % 2], n, orjson.dumps({"topic": TOPICS[n % 2], "ts": n, "windows": {}})
        )
        for n in range(first, first + count)
    ]


def _broker(pause: Callable[[], None] | None) -> tuple[MemoryBroker, ManualClock]:
    clock = ManualClock()
    return MemoryBroker(Store(1, clock=clock), pause=pause), clock


def _kept(broker: MemoryBroker) -> list[Update]:
    """The partition's history, in id order."""
    return list(broker.store.parts[0].published.history)


def _published(broker: MemoryBroker) -> list[tuple[str, int]]:
    return [(u.topic, orjson.loads(u.data)["ts"]) for u in _kept(broker)]


def _sent(primed: Primed) -> list[int]:
    """What the stream wrote, head and live: each update's number (its `ts`), in order."""
    rendering = rendering_for_stream(None, chunked=False, cursor=primed.live_cursor)
    written = b"".join(primed.pages(None, 1 << 62)) + b"".join(
        rendering.blocks(primed.client.queue.drain())
    )
    numbers = []
    for block in written.split(b"\n\n"):
        for line in block.split(b"\n"):
            if line.startswith(b"data: "):
                message = orjson.loads(line[6:])
                if "topics" in message:  # a snapshot: the latest update of each topic
                    numbers += sorted(u["ts"] for u in message["topics"].values())
                else:
                    numbers.append(message["ts"])
    return numbers


@settings(max_examples=60, deadline=None)
@given(
    size=st.integers(1, 3 * PACED_DRAFTS + 7),
    primed_in=st.integers(0, 4),
    resuming=st.booleans(),
)
def test_a_stream_primed_in_any_pause_gets_every_update_once_in_order(
    size: int, primed_in: int, resuming: bool
) -> None:
    """The batch `size` drafts after 2 published ones; a stream is primed in pause number
    `primed_in` (0: before the batch), from the last update before it (`resuming`) or with a
    snapshot."""
    streams: list[Primed] = []
    pauses = 0
    hub = Hub(queue_size=1_000_000, slow_timeout_us=10**9, max_stream_buffer=1 << 30)

    def prime() -> None:
        last = None
        if resuming:
            last = _kept(broker)[1].id.text  # the last update before the batch
        streams.append(subscribe(broker, hub, feed, TopicMatcher(["*"]), last))

    def pause() -> None:
        nonlocal pauses
        pauses += 1
        if pauses == primed_in:
            prime()

    broker, _ = _broker(pause)
    feed = broker.consume_updates(hub.dispatch)
    publish_applied(broker, SHARD, _drafts(0, 2), "1-0", "0-0")
    if primed_in == 0:
        prime()
    publish_applied(broker, SHARD, _drafts(2, size), "2-0", "1-0")
    assert pauses == -(-size // PACED_DRAFTS) - 1
    plain, _ = _broker(None)
    publish_applied(plain, SHARD, _drafts(0, 2), "1-0", "0-0")
    publish_applied(plain, SHARD, _drafts(2, size), "2-0", "1-0")
    assert _published(broker) == _published(plain)
    if not streams:  # primed in a pause the batch did not have
        return
    (stream,) = streams
    sent = _sent(stream)
    if resuming:
        assert sent == list(range(2, 2 + size))
    else:
        # A snapshot of each topic's latest, then every update after the newest of them.
        newest = max(sent[:2])
        assert sent[2:] == list(range(newest + 1, 2 + size))


def test_a_publish_killed_in_a_pause_still_goes_out_whole() -> None:
    """gevent kills a greenlet by raising in it where it waits: in a pause. The rest of the
    batch is kept and delivered before the kill goes on, as a script that started ends."""

    def pause() -> None:
        raise GreenletExit

    broker, _ = _broker(pause)
    delivered: list[Update] = []
    broker.consume_updates(delivered.extend)
    size = 2 * PACED_DRAFTS + 1
    with pytest.raises(GreenletExit):
        publish_applied(broker, SHARD, _drafts(0, size), "1-0", "0-0")
    assert [n for _, n in _published(broker)] == list(range(size))
    assert [orjson.loads(u.data)["ts"] for u in delivered] == list(range(size))


def test_a_paced_publish_refused_at_its_start_writes_nothing() -> None:
    """The fence is checked once, before the first part, as a script checks it first."""
    pauses: list[int] = []
    broker, _ = _broker(lambda: pauses.append(1))
    lease = broker.lease_group(ttl_us=60_000_000)
    lease.round()
    held = lease.take([SHARD])[SHARD]
    with pytest.raises(Fenced):
        broker.publish_updates(
            _drafts(0, 2 * PACED_DRAFTS),
            applied=Applied(SHARD, "1-0", 1, "0-0"),
            fence=held.token + "-not",
        )
    assert _published(broker) == []
    assert pauses == []


def test_a_post_pauses_between_its_validation_and_its_append() -> None:
    """The embedded server's POST handler pauses once its batch is validated (a big batch
    holds the loop some 30 ms in all): nothing is logged before the pause, the batch after
    it; a batch refused by validation changes nothing and does not pause."""
    broker, _ = _broker(None)
    log = broker.event_log(SHARD)
    logged_at_pause: list[int] = []

    def pause() -> None:
        logged_at_pause.append(len(log.read(FIRST, count=10)))

    events = orjson.dumps([{"value": n} for n in range(3)])
    appended = ingest(
        broker, "t", events, "application/json", limits=InputLimits(),
        lateness_us=0, now_us=2_000_000_000_000_000, pause=pause,
    )  # fmt: skip
    assert appended.accepted == 3
    assert logged_at_pause == [0]
    assert len(log.read(FIRST, count=10)) == 1
    with pytest.raises(RequestError):
        ingest(
            broker, "t", b'[{"value": "x"}]', "application/json", limits=InputLimits(),
            lateness_us=0, now_us=2_000_000_000_000_000, pause=pause,
        )  # fmt: skip
    assert logged_at_pause == [0]
    assert len(log.read(FIRST, count=10)) == 1


def test_a_paced_batch_is_unpublished_in_the_lag_until_its_last_part() -> None:
    """Whoever waits for the log to be published (`lag`: a test's settling, `/metrics`, the
    readiness check) waits for a paced batch's last part, as for one script: in every pause
    its entry is still behind, and after the last part nothing is."""
    behind_in_pauses: list[int] = []
    broker, _ = _broker(lambda: behind_in_pauses.append(broker.lag()[0].entries))
    log = broker.event_log(SHARD)
    ingest(
        broker, "a", b'[{"value": 1}]', "application/json", limits=InputLimits(),
        lateness_us=0, now_us=2_000_000_000_000_000,
    )  # fmt: skip
    (entry,) = log.read(FIRST, count=10)
    assert broker.lag()[0].entries == 1
    publish_applied(broker, SHARD, _drafts(0, 3 * PACED_DRAFTS), entry.id, FIRST)
    assert behind_in_pauses == [1, 1]
    assert broker.lag()[0].entries == 0
