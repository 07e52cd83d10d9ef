"""The broker contract: how raw events reach the aggregator and updates reach the hubs.

Two implementations share this contract and one test suite
(`tests/test_broker_contract.py`): `memory` (one process only) and `redis`
(any number of processes on any number of hosts).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from pushsvc.events import Event

EventsHandler = Callable[[str, list[Event]], None]
"""Called with (topic, events) for every published batch, in publish order."""

UpdatesHandler = Callable[[list["Update"]], None]
"""Called with updates in id order; a list may mix topics."""

TopicFilter = Callable[[str], bool]


@dataclass(frozen=True, slots=True)
class UpdateDraft:
    """An update as the aggregator produced it, before the broker gave it an id.

    `body` is one line of JSON, an object that starts with `{"topic":`; the
    broker inserts the id as the object's first member.
    """

    topic: str
    clock_us: int
    body: bytes


@dataclass(frozen=True, slots=True)
class Update:
    """An update with its id: what the history keeps and subscribers receive.

    `data` is `{"id":"<id>",` followed by the draft's body after its `{`.
    """

    topic: str
    id: str
    clock_us: int
    data: bytes


def with_id(draft: UpdateDraft, update_id: str) -> Update:
    data = b'{"id":"' + update_id.encode() + b'",' + draft.body[1:]
    return Update(draft.topic, update_id, draft.clock_us, data)


class Subscription(Protocol):
    def close(self) -> None:
        """Stop delivery; idempotent."""


class Broker(Protocol):
    """Carries raw events to aggregators and updates to every process's hub.

    Guarantees: events of one topic reach the aggregator in publish order;
    updates get ids that strictly increase in the order they are emitted,
    across all topics; every update is appended to a bounded history (the
    newest `history` updates) before any subscriber sees it; delivery to
    subscribers is at most once (a subscriber that was disconnected resumes
    from the history). All methods are greenlet-safe.
    """

    def publish_events(self, topic: str, events: Sequence[Event]) -> int:
        """Hand a batch to the aggregators; return how many received it (0: nobody).

        Raises BrokerUnavailable when the broker cannot be reached.
        """
        ...

    def consume_events(self, handler: EventsHandler) -> Subscription:
        """Aggregator side: receive every published batch."""
        ...

    def publish_updates(self, drafts: Sequence[UpdateDraft]) -> list[Update]:
        """Give each draft an id, append it to the history, remember it as its
        topic's latest, and deliver it to every update subscriber; atomically
        per call, so ids are in delivery order even with several publishers."""
        ...

    def consume_updates(self, handler: UpdatesHandler) -> Subscription:
        """Hub side: receive every update (one subscription per process)."""
        ...

    def replay(self, after_id: str, match: TopicFilter) -> list[Update] | None:
        """Updates after `after_id` for topics that `match`, oldest first.

        None when the history cannot replay everything after that id: the id
        is malformed, from another epoch, or older than what the history keeps.
        """
        ...

    def latest(self, match: TopicFilter) -> dict[str, Update]:
        """The newest update of every topic that `match`es."""
        ...

    def ping(self) -> None:
        """Raise BrokerUnavailable unless the broker answers."""
        ...

    def close(self) -> None: ...
