"""Connections waiting on their client, oldest first, and shedding them when there are too
many, from one address or in all (pure; greenlet-safe: nothing here yields).

A connection waits on its client while its TLS handshake, request line, headers or body have
not all come, and while it idles between keep-alive requests. Deadlines bound how long each
waits (`--body-timeout`, and a third of it for a head or a body's next piece), but not how many wait
at once: a few hundred connections that each send a head and a `Content-Length` they never
fulfil took every descriptor from the producers for as long as the deadlines let them.

So the waiting are shed, oldest first:

* from one client address past `per_address` of them (a sixteenth of `--max-waiting`; nginx's
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

Shedding has a budget, `shed_rate` a second (a sixteenth of `--max-waiting`). Without one, an
attacker that opens a connection whenever one is shed sets the pace: the attacker's connections
churn through the cap, each costing the server's CPU to accept, read and shed, and the producers
wait (measured: docs/performance.md, 'Hostile clients'). While the budget is spent, or the cap
is reached with none old enough to shed, the server is `strained`: a connection just accepted
from an address with `newcomer_waiting` connections waiting is reset at once (`admits`: no
greenlet, nothing read, a fraction of a shed's CPU), and one from any other address, a newcomer,
comes in and costs the budget as a shed does. Past a burst more of debt, the server stops
accepting (`accept_pause_s`) and newcomers wait in the listen queue, as behind HAProxy's
`maxconn`: only an attack from thousands of addresses gets there. Refusing rather than pausing
keeps the listen queue moving, so a client new to the server gets in within milliseconds instead
of seconds of SYN retries behind the attacker's."""

from __future__ import annotations

import time
from collections.abc import Callable
from itertools import islice, takewhile
from typing import Protocol

from pushsvc.core.token_bucket import TokenBucket

NEWCOMER_WAITING = 8
"""While strained, an address with this many connections waiting is refused at once; one
with fewer is a newcomer (a browser opens up to 6 connections to one origin, and its idle
keep-alives wait)."""


class Waiting(Protocol):
    def shed(self) -> None:
        """Shut the connection down (its greenlet then ends it)."""


class WaitingClients:
    """The connections waiting on their client, in the order they began to wait."""

    __slots__ = (
        "_address_of",
        "_budget",
        "_by_address",
        "_clock",
        "_on_shed",
        "_waiting",
        "cap",
        "min_age_s",
        "newcomer_waiting",
        "per_address",
    )

    def __init__(
        self,
        cap: int,
        *,
        per_address: int | None = None,
        min_age_s: float = 1.0,
        shed_rate: float = 256.0,
        newcomer_waiting: int = NEWCOMER_WAITING,
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
        self.newcomer_waiting = newcomer_waiting
        """While strained, an address with this many waiting is refused at once."""
        self._budget = TokenBucket(shed_rate, clock=clock)
        """Sheds past a cap, a second: past it accepting pauses (`accept_pause_s`)."""
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
            self._budget.charge(shed)
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

    def strained(self) -> bool:
        """Whether a new connection can only come in past the caps: the shedding budget is
        spent, or the cap is reached and none may be shed yet."""
        if self._budget.wait_s():
            return True
        if len(self._waiting) >= self.cap:
            oldest = next(iter(self._waiting.values()))
            return oldest + self.min_age_s > self._clock()
        return False

    def admits(self, address: str) -> bool:
        """Whether a connection just accepted from `address` comes in. Strained, only one from
        an address with fewer than `newcomer_waiting` connections waiting comes in (a
        newcomer), and it costs the budget as a shed does; one from an address keeping the
        server waiting more is refused at once. Without a per-address cap (behind a proxy,
        whose address is every client's) none is refused: each costs the budget."""
        if not self.strained():
            return True
        mine = self._by_address.get(address)
        # Behind a proxy (no per-address cap) every connection comes from its address.
        if mine is not None and self.per_address is not None and len(mine) >= self.newcomer_waiting:
            return False
        self._budget.charge(1)
        return True

    def accept_pause_s(self) -> float:
        """How long accepting should pause now (0: not at all): while the budget is in debt by
        more than a burst (newcomers past the caps, or sheds, came faster than its pace)."""
        budget = self._budget
        debt = budget.burst + budget.refilled()
        return 0.0 if debt > 0 else (1 - debt) / budget.rate

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
