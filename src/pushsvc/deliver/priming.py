"""A process's priming of new streams: at most `limit` at once, their replays batched.

Priming a stream (`subscription.subscribe`: its feed watch, then its replay or snapshot read
from the broker) costs a round trip or more and holds what it read until the head is sent.
After a restart every client reconnects within seconds: unbounded, thousands of primes would
hold thousands of replays at once and crowd out the live streams' writes. A `Priming` lets
`limit` run at once (`--max-priming`); the others wait their turn, already subscribed to the
hub (their updates queue as any stream's do, and they count against the stream limits), and
their replays are read together (`ReplayBatcher`).

One `Priming` per broker (per process): `install` sets it up where the runtime is built,
`of` finds it (or a default one, for a broker nobody installed one for, e.g. in unit tests).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager

from gevent.lock import BoundedSemaphore

from pushsvc.broker.base import Broker
from pushsvc.deliver.replay_batcher import ReplayBatcher

DEFAULT_LIMIT = 64


class Priming:
    """See the module docstring. Greenlet-safe under gevent; one per process."""

    def __init__(self, broker: Broker, limit: int = DEFAULT_LIMIT) -> None:
        if limit < 1:
            raise ValueError(f"at least one stream must be primed at a time, not {limit}")
        self.limit = limit
        self.replays = ReplayBatcher(broker)
        self._slots = BoundedSemaphore(limit)

    @contextmanager
    def turn(self) -> Iterator[None]:
        """Wait for one of the `limit` slots, hold it for the block."""
        with self._slots:
            yield

    @property
    def in_flight(self) -> int:
        """Streams being primed now."""
        return self.limit - self._slots.counter


_installed: weakref.WeakKeyDictionary[Broker, Priming] = weakref.WeakKeyDictionary()


def install(broker: Broker, limit: int = DEFAULT_LIMIT) -> Priming:
    """Prime the streams of `broker` at most `limit` at once (replacing any earlier one)."""
    priming = _installed[broker] = Priming(broker, limit)
    return priming


def of(broker: Broker) -> Priming:
    """The `Priming` of `broker` (installed, or a default one made now)."""
    priming = _installed.get(broker)
    if priming is None:
        priming = install(broker)
    return priming
