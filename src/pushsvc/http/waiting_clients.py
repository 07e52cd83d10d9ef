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
* in all, past `cap`, and whenever accepting fails for want of a descriptor.

A shed connection is shut down; its greenlet reads the end of the stream and closes it. A
connection that is being answered or written, a stream's included, is never shed: it is not
waiting.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import islice
from typing import Protocol


class Waiting(Protocol):
    def shed(self) -> None:
        """Shut the connection down (its greenlet then ends it)."""


class WaitingClients:
    """The connections waiting on their client, in the order they began to wait."""

    __slots__ = ("_address_of", "_by_address", "_on_shed", "_waiting", "cap", "per_address")

    def __init__(
        self,
        cap: int,
        *,
        per_address: int | None = None,
        on_shed: Callable[[int], object] = lambda count: None,
    ) -> None:
        self.cap = cap
        """The most connections that may wait at once; the oldest is shed past it."""
        self.per_address = per_address
        """The most that may wait from one address (None: no such cap)."""
        self._waiting: dict[Waiting, None] = {}  # insertion order: oldest first
        self._by_address: dict[str, dict[Waiting, None]] = {}  # likewise, per address
        self._address_of: dict[Waiting, str] = {}
        self._on_shed = on_shed
        """Told how many were shed, each time some are."""

    def __len__(self) -> int:
        return len(self._waiting)

    def started(self, client: Waiting, address: str) -> None:
        """`client`, from `address`, waits from now (again: it is then the youngest)."""
        self.ended(client)
        shed = 0
        mine = self._by_address.get(address)
        if self.per_address is not None and mine is not None and len(mine) >= self.per_address:
            shed += self._shed_from(list(islice(mine, len(mine) - self.per_address + 1)))
        waiting = self._waiting
        if len(waiting) >= self.cap:
            shed += self._shed_from(list(islice(waiting, len(waiting) - self.cap + 1)))
        waiting[client] = None
        self._address_of[client] = address
        self._by_address.setdefault(address, {})[client] = None
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
