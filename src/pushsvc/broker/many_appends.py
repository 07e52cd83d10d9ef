"""Appending to many topics at once: what a broker that can send many topics' appends
together offers besides `Broker.append_events`.

A request that publishes to many topics (`pushsvc.ingest.cross_topic`) makes one append per
topic. Each stays its own atomic step with its own answer, but a broker whose appends cross
a network sends them together (the Redis broker: one pipeline per connection), so that a
request to a thousand topics costs a few round trips, not a thousand. A broker without it is
called once per topic.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol, runtime_checkable

from pushsvc.broker.base import Appended
from pushsvc.core.event import Event
from pushsvc.core.idempotency import Idempotency
from pushsvc.errors import RequestError


class TopicAppend(NamedTuple):
    """One topic's `Broker.append_events`, its arguments named alike."""

    topic: str
    events: Sequence[Event]
    lateness_us: int
    idempotency: Idempotency | None = None
    keep_late: bool = False


@runtime_checkable
class ManyTopicsAppender(Protocol):
    def append_many(self, appends: Sequence[TopicAppend]) -> list[Appended | RequestError]:
        """What `append_events` of each of `appends` would answer, in order: its Appended,
        or the RequestError it would raise (each append atomic and independent of the
        others, exactly as called one by one)."""
        ...
