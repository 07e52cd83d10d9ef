"""One process's active Mercure subscriptions, as the hub's listings read them (pure).

The registry the subscriptions API lists from and the Redis broker's shared registry
extends (`pushsvc.broker.redis.mercure_subscriptions`): each subscription's path, its
matcher's collection and its document, serialized once when it starts, so a listing joins
bytes. Here, below the broker and the delivery layers that both use it; what a subscription's
path and document are is `pushsvc.deliver.mercure_subscriptions`'.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

MAX_TRACKED = 50_000
"""Subscriptions one web process tracks: each holds its path, its collection's, its document
and index entries, about 1 KB with a small payload (50,000 with 330-byte documents: 50 MB),
more with a large one. Past it a new Mercure connection waits (503, Retry-After)."""


class TooManySubscriptions(Exception):
    """The process tracks `max_tracked` subscriptions: a new connection waits."""


@dataclass(frozen=True, slots=True)
class Tracked:
    """One subscription as the registry holds it: its path, its matcher's collection path and
    its active document serialized."""

    path: str
    collection: str
    body: bytes


class SubscriptionRegistry:
    """One process's active subscriptions (see the module docstring). Nothing here yields."""

    def __init__(self, max_tracked: int = MAX_TRACKED) -> None:
        self.max_tracked = max_tracked
        self._all: dict[str, Tracked] = {}
        self._by_collection: dict[str, dict[str, Tracked]] = {}

    def __len__(self) -> int:
        return len(self._all)

    def add(self, subscriptions: Iterable[Tracked]) -> None:
        """Track every one of `subscriptions`, or none (TooManySubscriptions)."""
        given = list(subscriptions)
        if len(self._all) + len(given) > self.max_tracked:
            raise TooManySubscriptions(
                f"this server tracks {self.max_tracked} Mercure subscriptions; retry later"
            )
        for tracked in given:
            self._all[tracked.path] = tracked
            self._by_collection.setdefault(tracked.collection, {})[tracked.path] = tracked

    def remove(self, paths: Iterable[str]) -> None:
        for path in paths:
            tracked = self._all.pop(path, None)
            if tracked is None:
                continue
            of_collection = self._by_collection.get(tracked.collection)
            if of_collection is not None:
                of_collection.pop(path, None)
                if not of_collection:
                    del self._by_collection[tracked.collection]

    def get(self, path: str) -> bytes | None:
        tracked = self._all.get(path)
        return None if tracked is None else tracked.body

    def bodies(self, collection: str | None) -> Iterator[bytes]:
        """The documents of one matcher's collection (None: every one)."""
        chosen = self._all if collection is None else self._by_collection.get(collection, {})
        return (t.body for t in list(chosen.values()))

    def items(self) -> Iterator[tuple[str, bytes]]:
        return ((t.path, t.body) for t in list(self._all.values()))
