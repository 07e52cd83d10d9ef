"""A process's priming of new streams: at most `limit` at once, their replays batched.

Priming a stream (`subscription.subscribe`: its feed watch, then its replay or snapshot read
from the broker) costs a round trip or more and holds what it read until the head is sent.
After a restart every client reconnects within seconds: unbounded, thousands of primes would
hold thousands of replays at once and crowd out the live streams' writes. A `Priming` lets
`limit` run at once (`DEFAULT_LIMIT`); the others wait their turn, already subscribed to the
hub (their updates queue as any stream's do, and they count against the stream limits), and
their replays are read together (`ReplayBatcher`).

The slots are handed out in turns by client (`turn(key)`, the client's address): the streams
waiting are served one client after another, each client's in the order they came, so that a
client with hundreds of streams waiting (hundreds of replays nobody reads) delays another
client's new stream by one prime per client ahead of it, not by all of its own. How many
wait is bounded by the process's streams (`--max-streams`), not here: a reconnect storm is
thousands of honest clients waiting their turn.

One `Priming` per broker (per process): `install` sets it up where the runtime is built,
`of` finds it (or a default one, for a broker nobody installed one for, e.g. in unit tests).
"""

from __future__ import annotations

import weakref
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import gevent.event

from pushsvc.broker.base import Broker
from pushsvc.deliver.replay_batcher import ReplayBatcher

DEFAULT_LIMIT = 64
"""Streams primed at once in a process. Fixed, not a setting: at 64 a reconnect storm of
10,000 clients came back current several times faster and in less than half the memory of
the unbounded priming (docs/performance.md#reconnect-storm); what a deployment scales is its
processes, not this."""


class FairSlots:
    """`limit` slots, handed to the waiting clients in turns (see the module docstring).
    Greenlet-safe under gevent: nothing here yields but `acquire`'s wait."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self.waiting = 0
        # Each client's waiters, in the order they came; clients in the order of their turn
        # (a client served goes to the end of the line, with its next waiter).
        self._lines: dict[str, deque[gevent.event.Event]] = {}

    def acquire(self, key: str) -> None:
        """Take a slot, waiting for `key`'s turn if none is free or others wait."""
        if self.held < self.limit and not self.waiting:
            self.held += 1
            return
        granted = gevent.event.Event()
        self._lines.setdefault(key, deque()).append(granted)
        self.waiting += 1
        try:
            granted.wait()
        except BaseException:
            if granted.is_set():
                self.release()  # handed a slot as it was killed: pass it on
            else:
                self._drop(key, granted)
            raise

    def release(self) -> None:
        """Give a slot back: to the next client's first waiter, if any (the slot passes
        straight to it), else to the free ones."""
        lines = self._lines
        if not lines:
            self.held -= 1
            return
        key = next(iter(lines))
        line = lines.pop(key)
        granted = line.popleft()
        if line:
            lines[key] = line  # to the end of the line
        self.waiting -= 1
        granted.set()

    def _drop(self, key: str, granted: gevent.event.Event) -> None:
        line = self._lines.get(key)
        if line is not None and granted in line:
            line.remove(granted)
            self.waiting -= 1
            if not line:
                del self._lines[key]


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
        self._slots = FairSlots(limit)

    @contextmanager
    def turn(self, key: str = "") -> Iterator[None]:
        """Wait for one of the `limit` slots, in `key`'s turn (the client's address: see the
        module docstring), then for the `pause` if one was given, and hold the slot for the
        block. A serving process passes `pushsvc.loop_pause.take_turns`, so that streams whose
        slots came in one turn of the loop take turns: a replay read costs milliseconds, and
        64 of them back to back kept every socket waiting. Elsewhere (a simulation, a unit
        test) no loop serves others, and nothing waits."""
        slots = self._slots
        slots.acquire(key)
        try:
            if self._pause is not None:
                self._pause()
            yield
        finally:
            slots.release()

    @property
    def in_flight(self) -> int:
        """Streams being primed now."""
        return self._slots.held

    @property
    def waiting(self) -> int:
        """Streams waiting for a slot."""
        return self._slots.waiting


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
