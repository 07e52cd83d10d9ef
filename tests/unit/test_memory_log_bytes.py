"""The memory store's event log bounded in bytes: a partition's log holds at most
`--history-bytes` of messages not yet published (their types and data), past which an append
is refused as a full Redis refuses it (`503 broker_full`, nothing logged), and a message's
data leaves the log once it is published (its type stays for the windows)."""

from __future__ import annotations

import pytest

from pushsvc.broker.base import Applied
from pushsvc.broker.memory import MemoryBroker, Store
from pushsvc.broker.memory.log import MemoryEventLog
from pushsvc.broker.memory.store import message_bytes
from pushsvc.broker.shared_log import FIRST
from pushsvc.core.event import Event, Message
from pushsvc.core.idempotency import DIGEST_BYTES, Idempotency
from pushsvc.core.updates import UpdateDraft
from pushsvc.errors import BrokerFull

S = 1_000_000
BOUND = 1_000
SHARD = (0, 1)


def _message(n: int, size: int, kind: str = "big") -> Event:
    """A message whose type and data are `size` bytes together."""
    data = b'"' + str(n).encode().ljust(size - len(kind) - 2, b"x") + b'"'
    event = Event(None, 10 * S + n, None, Message(kind, data))
    assert message_bytes([event]) == size
    return event


def _store(entry_events: int = 1000) -> Store:
    store = Store(1, clock=lambda: 1_000.0, history_bytes=BOUND)
    store.entry_events = entry_events
    return store


def _publish_through(store: Store, entry_id: str, entries: int, after: str) -> None:
    """The aggregator's fenced publish of the entries up to `entry_id` (no drafts needed)."""
    token = store.token()
    store.acquire(0, token, token, 60_000)
    store.publish(0, [UpdateDraft("t", 1, b"{}")], Applied(SHARD, entry_id, entries, after), token)


def test_message_bytes_count_each_message_type_and_data_and_nothing_else() -> None:
    events = [
        Event(1.0, 1, {"site": "a"}),
        Event(None, 2, None, Message("shipped", b'{"order":4711}')),
        Event(2.0, 3, None, Message("n", b"7")),
    ]
    assert message_bytes(events) == len("shipped") + 14 + 2


def test_a_batch_past_the_bound_is_refused_and_nothing_of_it_is_logged() -> None:
    store = _store()
    store.append("t", [_message(0, 600)], S, None)
    key = Idempotency("k", bytes(DIGEST_BYTES), 60_000)
    with pytest.raises(BrokerFull) as refused:
        store.append("t", [_message(1, 300), _message(2, 200)], S, key)
    assert refused.value.code == "broker_full" and refused.value.retry_after_s == 5
    part = store.parts[0]
    assert part.message_bytes == 600 and part.logged == 1
    assert part.clocks["t"] == 10 * S  # the refused batch's newer events moved nothing
    assert store.parts[0].keys.get("t", key, 1_000.0) is None  # nor was its key remembered
    # Up to the bound exactly, and events with no message, are taken.
    store.append("t", [_message(3, 400)], S, None)
    store.append("t", [Event(1.0, 11 * S)] * 50, S, None)
    assert part.message_bytes == BOUND and part.logged == 3


def test_an_empty_log_takes_a_batch_bigger_than_the_bound() -> None:
    """A batch is bounded by the request's own bound (`--max-body`): refused for ever, a
    batch past the log's bound would never be logged."""
    store = _store()
    store.append("t", [_message(n, 400) for n in range(4)], S, None)
    assert store.parts[0].message_bytes == 1_600
    with pytest.raises(BrokerFull):
        store.append("t", [_message(5, 10)], S, None)


def test_publishing_an_entry_frees_its_bytes_and_drops_its_data_but_not_its_type() -> None:
    store = _store(entry_events=2)  # the batch below is two entries
    first = [_message(0, 300, "a"), Event(5.0, 10 * S + 1)]
    second = [_message(2, 300, "b")]
    store.append("t", first + second, S, None)
    part = store.parts[0]
    assert part.message_bytes == 600
    [one, two] = MemoryEventLog(store, SHARD).read(FIRST, count=10)
    assert one.events == first and two.events == second  # as appended, data and all
    _publish_through(store, one.id, 1, FIRST)
    assert part.message_bytes == 300  # the second entry is not published yet
    [one_again, two_again] = MemoryEventLog(store, SHARD).read(FIRST, count=10)
    assert one_again.events is not None and two_again.events is not None
    assert one_again.events[0].message == Message("a", b"null")
    assert one_again.events[1] == first[1]
    assert two_again.events == second
    # Room again: a batch that did not fit before fits now.
    store.append("t", [_message(3, 700)], S, None)
    assert part.message_bytes == BOUND


def test_a_trimmed_entry_no_longer_counts() -> None:
    store = _store()
    store.append("t", [_message(0, 600)], S, None)
    store.append("t", [_message(1, 300)], S, None)
    [_, second] = MemoryEventLog(store, SHARD).read(FIRST, count=10)
    MemoryEventLog(store, SHARD).trim(second.id)
    assert store.parts[0].message_bytes == 300


def test_the_broker_refuses_as_redis_does_when_full() -> None:
    """Through `MemoryBroker.append_events`, what the POST answers `503 broker_full`."""
    broker = MemoryBroker(_store())
    broker.append_events("t", [_message(0, 900)], lateness_us=S)
    with pytest.raises(BrokerFull, match="--history-bytes"):
        broker.append_events("u", [_message(1, 200)], lateness_us=S)
    assert broker.event_log(SHARD).state().applied_count == 0  # nothing applied, one entry logged
    assert broker.lag()[0].entries == 1
