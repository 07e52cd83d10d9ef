"""A process's priming of new streams: at most `limit` at once, their replays batched.

Priming a stream (`subscription.subscribe`: its feed watch, then its replay or snapshot read
from the broker) costs a round trip or more and holds what it read until the head is sent.
After a restart every client reconnects within seconds: unbounded, thousands of primes would
hold thousands of replays at once and crowd out the live streams' writes. A `Priming` lets
`limit` run at once (`DEFAULT_LIMIT`); the others wait their turn, already subscribed to the
hub (their updates queue as any stream's do, and they count against the stream limits), and
their replays are read together (`ReplayBatcher`).

One `Priming` per broker (per process): `install` sets it up where the runtime is built,
`of` finds it (or a default one, for a broker nobody installed one for, e.g. in unit tests).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from gevent.lock import BoundedSemaphore

from pushsvc.broker.base import Broker
from pushsvc.deliver.replay_batcher import ReplayBatcher

DEFAULT_LIMIT = 64
"""Streams primed at once in a process. Fixed, not a setting: at 64 a reconnect storm of
10,000 clients came back current several times faster and in less than half the memory of
the unbounded priming (docs/performance.md#reconnect-storm); what a deployment scales is its
processes, not this."""


class Priming:
    """See the module docstring. Greenlet-safe under gevent; one per process."""

    def __init__(
        self,
        broker: Broker,
        limit: int = DEFAULT_LIMIT,
        pause: Callable[[], None] | None = None,
    ) -> None:
        if limit < 1:
            raise ValueError(f"at least one stream must be primed at a time, not {limit}")
        self.limit = limit
        self._pause = pause
        self.replays = ReplayBatcher(broker)
        self._slots = BoundedSemaphore(limit)

    @contextmanager
    def turn(self) -> Iterator[None]:
        """Wait for one of the `limit` slots, then for the `pause` if one was given, and hold
        the slot for the block. A serving process passes `pushsvc.loop_pause.take_turns`, so
        that streams whose slots came in one turn of the loop take turns: a replay read costs
        milliseconds, and 64 of them back to back kept every socket waiting. Elsewhere (a
        simulation, a unit test) no loop serves others, and nothing waits."""
        with self._slots:
            if self._pause is not None:
                self._pause()
            yield

    @property
    def in_flight(self) -> int:
        """Streams being primed now."""
        return self.limit - self._slots.counter


_installed: weakref.WeakKeyDictionary[Broker, Priming] = weakref.WeakKeyDictionary()


def install(
    broker: Broker, limit: int = DEFAULT_LIMIT, pause: Callable[[], None] | None = None
) -> Priming:
    """Prime the streams of `broker` at most `limit` at once, each after `pause` (replacing
    any earlier one)."""
    priming = _installed[broker] = Priming(broker, limit, pause)
    return priming


def of(broker: Broker) -> Priming:
    """The `Priming` of `broker` (installed, or a default one made now)."""
    priming = _installed.get(broker)
    if priming is None:
        priming = install(broker)
    return priming
