"""The Mercure hub's active subscriptions, live: a connection's subscriptions tracked while it
lasts, their events published, and the listings read (`--mercure-subscriptions`).

A connection's subscriptions join the process's registry (`pushsvc.deliver.
mercure_subscriptions`) in its view, before it streams (a full registry refuses it there), and
leave it when the stream is over, whatever ends it. Each join and leave is queued; one greenlet
(`run`) takes everything queued at once, writes it through to where other processes read it
(Redis: `pushsvc.broker.redis.mercure_subscriptions`; embedded, the registry is the answer),
then appends its events to the log as one batch per `EVENTS_PER_APPEND`: subscription events
are pushsvc messages (topic `SUBSCRIPTIONS_TOPIC`, type `mercure`, a private envelope whose
one topic is the subscription's path), so they get every promise an update has and reach
exactly the subscribers a private update on that topic reaches.

Why queued: a stream ends in whatever greenlet notices (its writer, the hub's sweeper, a peer
watch), where a wait on Redis does not belong; and a reconnect storm of thousands of streams
costs a few appends, not thousands. The order of one subscription's events is kept (one queue,
one writer), and each change is written through before its event is appended, so a listing
read after an event's id holds what the event announces.

What is lost: the events of a batch the log refuses (Redis unreachable) are logged and
dropped; the listing stays right (written whole again once Redis is back).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import gevent.event
import orjson

from pushsvc.core.presence import Stop
from pushsvc.core.subscription_registry import SubscriptionRegistry, Tracked
from pushsvc.deliver.mercure_selectors import Selector
from pushsvc.deliver.mercure_subscriptions import (
    EVENT_TYPE,
    collection_path,
    document,
    subscription_path,
)
from pushsvc.deliver.mercure_updates import envelope

log = logging.getLogger(__name__)

EVENTS_PER_APPEND = 500
"""Subscription events appended in one batch at most (each a few hundred bytes: well within
a body's bound)."""


class SubscriptionStore(Protocol):
    """Where a process reads every web process's subscriptions and writes its own."""

    def write(self, added: Sequence[Tracked], removed: Sequence[str]) -> None: ...

    def get(self, path: str) -> bytes | None: ...

    def bodies(self, collection: str | None) -> Iterator[bytes]: ...

    def run(self, stop: Stop) -> None: ...

    def close(self) -> None: ...


class LocalSubscriptions:
    """The embedded server's: the one process's registry is every subscription."""

    def __init__(self, registry: SubscriptionRegistry) -> None:
        self.registry = registry

    def write(self, added: Sequence[Tracked], removed: Sequence[str]) -> None:
        pass

    def get(self, path: str) -> bytes | None:
        return self.registry.get(path)

    def bodies(self, collection: str | None) -> Iterator[bytes]:
        return self.registry.bodies(collection)

    def run(self, stop: Stop) -> None:
        pass

    def close(self) -> None:
        pass


Append = Callable[[bytes], None]
"""Appends a JSON array of pushsvc events to `SUBSCRIPTIONS_TOPIC` (raises what ingest does)."""


class ActiveSubscriptions:
    """See the module docstring."""

    def __init__(
        self, registry: SubscriptionRegistry, store: SubscriptionStore, append: Append
    ) -> None:
        self.registry = registry
        self.store = store
        self._append = append
        self._queue: list[tuple[bool, Tracked, bytes]] = []
        """(joined, the subscription, its event) in order."""
        self._wake = gevent.event.Event()
        self.events_dropped = 0

    def open(
        self,
        hub_path: str,
        selectors: Sequence[Selector],
        payload_for: Callable[[Selector], Any] | None,
    ) -> Callable[[], None]:
        """Track a connection's subscriptions (one per selector) under a new subscriber id and
        announce them; what to call once it is over. TooManySubscriptions when the registry is
        full (nothing tracked)."""
        subscriber = f"urn:uuid:{uuid.uuid4()}"
        made: list[tuple[Tracked, dict[str, Any]]] = []
        for selector in selectors:
            match_type = selector.match_type
            path = subscription_path(hub_path, match_type, selector.text, subscriber)
            payload = None if payload_for is None else payload_for(selector)
            doc = document(
                path, match_type, selector.text, subscriber, active=True, payload=payload
            )
            collection = collection_path(hub_path, match_type, selector.text)
            made.append((Tracked(path, collection, orjson.dumps(doc)), doc))
        self.registry.add(t for t, _ in made)
        for tracked, doc in made:
            self._queue_event(True, tracked, doc)
        closed = False

        def close() -> None:
            nonlocal closed
            if closed:
                return
            closed = True
            self.registry.remove(t.path for t, _ in made)
            for tracked, doc in made:
                self._queue_event(False, tracked, {**doc, "active": False})

        return close

    def _queue_event(self, joined: bool, tracked: Tracked, doc: dict[str, Any]) -> None:
        kept = envelope(
            [tracked.path],
            orjson.dumps(doc).decode(),
            private=True,
            update_id=f"urn:uuid:{uuid.uuid4()}",
            retry=None,
        )
        event = orjson.dumps({"type": EVENT_TYPE, "data": kept})
        self._queue.append((joined, tracked, event))
        self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._queue)

    def run(self, stop: Stop) -> None:
        """Write and announce what is queued, until `stop`; then what is left."""
        while not stop.wait(0):
            self._wake.wait(1.0)
            self._wake.clear()
            self.flush()
        self.flush()

    def flush(self) -> None:
        taken, self._queue = self._queue, []
        if not taken:
            return
        added: dict[str, Tracked] = {}
        removed: dict[str, None] = {}
        for joined, tracked, _ in taken:
            if joined:
                added[tracked.path] = tracked
                removed.pop(tracked.path, None)
            else:
                added.pop(tracked.path, None)
                removed[tracked.path] = None
        try:
            self.store.write(list(added.values()), list(removed))
        except Exception:
            log.warning("writing the Mercure subscriptions failed; rewritten at next refresh")
        for at in range(0, len(taken), EVENTS_PER_APPEND):
            chunk = taken[at : at + EVENTS_PER_APPEND]
            body = b"[" + b",".join(event for _, _, event in chunk) + b"]"
            try:
                self._append(body)
            except Exception as exc:
                self.events_dropped += len(chunk)
                log.warning(
                    "%d Mercure subscription events were not published: %s", len(chunk), exc
                )
