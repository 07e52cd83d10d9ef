"""Connections waiting on their client, oldest first, and shedding them when descriptors run
short (pure; greenlet-safe: nothing here yields).

A connection waits on its client while its request line, headers or body have not all come,
and while it idles between keep-alive requests. Deadlines bound how long each waits
(`--header-timeout`, `--body-timeout`, `--body-read-timeout`), but not how many wait at
once: a few hundred connections that each send a head and a `Content-Length` they never
fulfil took every descriptor from the producers for as long as the deadlines let them.

So descriptors are taken back from the waiting, oldest first, when they run short: whenever
accepting fails for want of a descriptor, and before waiting connections alone would leave
fewer than `reserve` of the open-file limit free. A shed connection is shut down; its
greenlet reads the end of the stream and closes it. A connection that is writing, a stream's
included, is never shed: it is not waiting.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class Waiting(Protocol):
    def shed(self) -> None:
        """Shut the connection down (its greenlet then ends it)."""


class WaitingClients:
    """The connections waiting on their client, in the order they began to wait."""

    __slots__ = ("_on_shed", "_waiting", "cap")

    def __init__(self, cap: int, *, on_shed: Callable[[int], object] = lambda count: None) -> None:
        self.cap = cap
        """The most connections that may wait at once; the oldest is shed past it."""
        self._waiting: dict[Waiting, None] = {}  # insertion order: oldest first
        self._on_shed = on_shed
        """Told how many were shed, each time some are."""

    def __len__(self) -> int:
        return len(self._waiting)

    def started(self, client: Waiting) -> None:
        waiting = self._waiting
        waiting.pop(client, None)  # waiting anew: now the youngest
        if len(waiting) >= self.cap:
            self.shed(len(waiting) - self.cap + 1)
        waiting[client] = None

    def ended(self, client: Waiting) -> None:
        self._waiting.pop(client, None)

    def shed(self, count: int) -> int:
        """Shed the `count` oldest waiting connections; returns how many there were."""
        waiting = self._waiting
        oldest = [client for client, _ in zip(waiting, range(count), strict=False)]
        for client in oldest:
            del waiting[client]
            client.shed()
        if oldest:
            self._on_shed(len(oldest))
        return len(oldest)
