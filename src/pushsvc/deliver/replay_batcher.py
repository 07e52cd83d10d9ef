"""Replays of the streams that arrive together, read from the broker together.

When a web process restarts, every client reconnects with its `Last-Event-ID` within a few
seconds and each wants a replay; read one by one, that is a round trip per partition per
client. A `ReplayBatcher` gathers the requests: the first starts a reader greenlet, which
yields once (every stream primed in the same turn of the event loop joins) and hands them all
to the broker's `replay_many`; requests that arrive while a batch is being read make the
next batch (group commit: no timer, at most one read in flight, batches as large as the load
makes them). A broker that cannot read many replays at once (the memory brokers replay in
process, with nothing to share) is asked one by one.

Each result is what the stream's own `broker.replay` would have read at the moment of its
batch's read, which comes after the stream's feed watch (`subscription.subscribe`): the
gap and lost rules hold exactly as for a replay of its own. Greenlet-safe under gevent; not
thread-safe (one per process, like the hub).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol, runtime_checkable

import gevent
from gevent.event import AsyncResult

from pushsvc.broker.base import Broker, Replayed
from pushsvc.core.cursor import Cursor
from pushsvc.core.topics import TopicMatcher
from pushsvc.errors import BrokerUnavailable


@runtime_checkable
class ReplaysMany(Protocol):
    """A broker that reads many streams' replays at once (`RedisBroker`)."""

    def replay_many(self, asked: Sequence[tuple[Cursor, TopicMatcher]]) -> list[Replayed]:
        """`replay(after, match)` of each of `asked`, in order."""
        ...


class _Asked(NamedTuple):
    after: Cursor
    match: TopicMatcher
    answer: AsyncResult[Replayed]


class ReplayBatcher:
    """`replay` as `Broker.replay`, batched with the concurrent ones (module docstring)."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self._many = broker if isinstance(broker, ReplaysMany) else None
        self._pending: list[_Asked] = []
        self._reader: gevent.Greenlet[[], None] | None = None

    def replay(self, after: Cursor, match: TopicMatcher) -> Replayed:
        """See `Broker.replay`; raises what the broker raises (BrokerUnavailable)."""
        if self._many is None:
            return self._broker.replay(after, match)
        answer: AsyncResult[Replayed] = AsyncResult()
        self._pending.append(_Asked(after, match, answer))
        if self._reader is None:
            self._reader = gevent.spawn(self._read)
        replayed = answer.get()
        assert replayed is not None, "an answer is set or raises"
        return replayed

    def _read(self) -> None:
        assert self._many is not None
        batch: list[_Asked] = []
        try:
            gevent.sleep(0)  # the streams primed in this turn of the loop join the batch
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    results = self._many.replay_many([(a.after, a.match) for a in batch])
                except Exception as exc:
                    for asked in batch:
                        asked.answer.set_exception(exc)
                else:
                    for asked, result in zip(batch, results, strict=True):
                        asked.answer.set(result)
                batch = []
        finally:
            self._reader = None
            # Killed mid-read (the process is stopping): nobody is left waiting for ever.
            for asked in (*batch, *self._pending):
                if not asked.answer.ready():
                    asked.answer.set_exception(BrokerUnavailable("the replay was interrupted"))
            self._pending = []
