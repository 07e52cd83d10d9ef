"""Connections waiting on their client, oldest first, and shedding them when there are too
many, from one address or in all (pure; greenlet-safe: nothing here yields).

A connection waits on its client while its TLS handshake, request line, headers or body have
not all come, and while it idles between keep-alive requests. Deadlines bound how long each
waits (`--header-timeout`, `--body-timeout`, `--body-read-timeout`), but not how many wait
at once: a few hundred connections that each send a head and a `Content-Length` they never
fulfil took every descriptor from the producers for as long as the deadlines let them.

So the waiting are shed, oldest first:

* from one client address past `per_address` of them (`--max-waiting-per-ip`; nginx's
  `limit_conn`, but only for connections that keep the server waiting, so a client's
  requests under way and its streams never count);
* in all, past `cap` (`--max-waiting`);
* and whenever accepting fails for want of a descriptor.

Past a cap, only a connection that has waited `min_age_s` is shed: a connection accepted
before its request arrived waits too, and thousands of EventSources reconnecting at once
from one address (a restart, behind a NAT) would otherwise shed each other. Out of
descriptors, the oldest go whatever their age.

A shed connection is shut down; its greenlet reads the end of the stream and closes it. A
connection that is being answered or written, a stream's included, is never shed: it is not
waiting.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from itertools import islice, takewhile
from typing import Protocol


class Waiting(Protocol):
    def shed(self) -> None:
        """Shut the connection down (its greenlet then ends it)."""


class WaitingClients:
    """The connections waiting on their client, in the order they began to wait."""

    __slots__ = (
        "_address_of",
        "_by_address",
        "_clock",
        "_on_shed",
        "_waiting",
        "cap",
        "min_age_s",
        "per_address",
    )

    def __init__(
        self,
        cap: int,
        *,
        per_address: int | None = None,
        min_age_s: float = 1.0,
        on_shed: Callable[[int], object] = lambda count: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cap = cap
        """The most connections that may wait at once; the oldest is shed past it."""
        self.per_address = per_address
        """The most that may wait from one address (None: no such cap)."""
        self.min_age_s = min_age_s
        """Past a cap, a connection is shed only once it has waited this long."""
        self._clock = clock
        # Each connection's start of waiting, in insertion order: oldest first.
        self._waiting: dict[Waiting, float] = {}
        self._by_address: dict[str, dict[Waiting, float]] = {}  # likewise, per address
        self._address_of: dict[Waiting, str] = {}
        self._on_shed = on_shed
        """Told how many were shed, each time some are."""

    def __len__(self) -> int:
        return len(self._waiting)

    def started(self, client: Waiting, address: str) -> None:
        """`client`, from `address`, waits from now (again: it is then the youngest)."""
        # Twice a request on every keep-alive connection (its head, then its body): a few
        # dict operations, and a dict made only for an address that has none waiting.
        waiting = self._waiting
        if client in waiting:
            del waiting[client]
            self._forget_address(client)
        now = self._clock()
        shed = 0
        by_address = self._by_address
        mine = by_address.get(address)
        if mine is not None and self.per_address is not None and len(mine) >= self.per_address:
            shed += self._shed_from(self._old(mine, len(mine) - self.per_address + 1, now))
        if len(waiting) >= self.cap:
            shed += self._shed_from(self._old(waiting, len(waiting) - self.cap + 1, now))
        if shed:
            mine = by_address.get(address)  # shedding forgets an address left with none
        if mine is None:
            mine = by_address[address] = {}
        mine[client] = now
        waiting[client] = now
        self._address_of[client] = address
        if shed:
            self._on_shed(shed)

    def ended(self, client: Waiting) -> None:
        if client in self._waiting:
            del self._waiting[client]
            self._forget_address(client)

    def shed(self, count: int) -> int:
        """Shed the `count` oldest waiting connections; returns how many there were."""
        shed = self._shed_from(list(islice(self._waiting, count)))
        if shed:
            self._on_shed(shed)
        return shed

    def _old(self, waiting: dict[Waiting, float], count: int, now: float) -> list[Waiting]:
        """Up to `count` of the oldest in `waiting` that have waited `min_age_s`."""
        since = now - self.min_age_s
        return [
            client
            for client, _ in takewhile(lambda e: e[1] <= since, islice(waiting.items(), count))
        ]

    def _shed_from(self, oldest: list[Waiting]) -> int:
        for client in oldest:
            del self._waiting[client]
            self._forget_address(client)
            client.shed()
        return len(oldest)

    def _forget_address(self, client: Waiting) -> None:
        address = self._address_of.pop(client)
        mine = self._by_address[address]
        del mine[client]
        if not mine:
            del self._by_address[address]
