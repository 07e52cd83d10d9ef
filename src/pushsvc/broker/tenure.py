"""What a holder knows of its lease: whether it holds it, under which token, until when for
sure. One rule for every store the lease lives in (`redis/lease.py` on Redis, the memory store's
`memory/lease.py`), so that what a simulation on the memory store finds holds for Redis too.

The store answers each renewal with a `LeaseCode` (lease_acquire.lua) or fails. A renewal
that fails (a timeout, a lost connection, an error reply such as `BUSY` or `LOADING`) says
nothing about the lease: the store may well have renewed it. So a holder keeps its lease until
the last expiry it had confirmed (when its last successful renewal was sent, plus the ttl,
less a margin for the two clocks' rates), and only then counts it lost. Giving a valid lease up
on one transient error would hand its partition over and rebuild its windows cold for
nothing; keeping it is safe, since every write it makes is fenced by its token anyway.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from enum import IntEnum
from typing import cast

import gevent.event

from pushsvc.core import partition_log

log = logging.getLogger(__name__)


class LeaseCode(IntEnum):
    """`lease_acquire.lua`'s reply (its HELD, RENEWED, TAKEN, RESUMED locals)."""

    HELD = 0
    """Another process holds the lease."""
    RENEWED = 1
    """Ours, and our tenure goes on under the same token."""
    TAKEN = 2
    """It was free and is ours now, under a fresh token: a new tenure, after another's."""
    RESUMED = 3
    """It had lapsed, and nobody took it since we did: ours again, our tenure goes on."""


CLOCK_MARGIN = 0.1
"""The share of the ttl a holder gives up before its confirmed expiry: its monotonic clock and
the store's may run at slightly different rates, and the store starts the ttl after the
request left."""


class Tenure:
    """A lease as one process sees it; `holding` is what it last learned, `token` names its
    current (or last) tenure and changes when it takes the lease after another."""

    def __init__(
        self, key: str, *, ttl_ms: int, clock: Callable[[], float], token: Callable[[], str]
    ) -> None:
        self.key = key
        self._new_token = token
        self.token = token()
        self.holding = False
        self._failing: type[Exception] | None = None
        self._ttl_ms = ttl_ms
        self._clock = clock
        self._asked_at = 0.0
        """When the renewal whose reply `renewed` learns from was sent (our clock, s)."""
        self.confirmed_until = float("-inf")
        """Until when (our clock, s) the lease is ours for sure: the last successful renewal's
        sending time plus the ttl, less the margin."""
        self._log = log
        self._routine = logging.INFO
        """The level of a routine change of hands (taken); losing a lease is a warning."""

    def one_of_many(self) -> None:
        """A partition's lease, one of the many a lease group holds: taking it is a DEBUG line
        of `pushsvc.partitions` (the pool logs one line for all it took), losing it a
        warning there."""
        self._log = partition_log.log
        self._routine = logging.DEBUG

    @property
    def ttl_s(self) -> float:
        return self._ttl_ms / 1000

    def asking(self) -> str:
        """A renewal is being sent now; the token a new tenure would take."""
        self._asked_at = self._clock()
        return self._new_token()

    def renewed(self, reply: object, fresh: str) -> bool:
        """Learn from the acquire script's reply (a `LeaseCode`, or the exception instead of
        it) whether we hold the lease; `fresh`: the token a new tenure takes."""
        if isinstance(reply, Exception):
            return self._unconfirmed(reply)
        code = LeaseCode(cast(int, reply))
        self._failing = None
        holding = code is not LeaseCode.HELD
        if holding:
            self.confirmed_until = self._asked_at + self.ttl_s * (1 - CLOCK_MARGIN)
        if code is LeaseCode.TAKEN:
            self.token = fresh
            if self.holding:
                self._log.warning("the lease %s lapsed and was held by another meanwhile", self.key)
        elif code is LeaseCode.RESUMED and self.holding:
            self._log.warning("the lease %s lapsed (a pause?); nobody took it meanwhile", self.key)
        if holding and not self.holding:
            # Every aggregator takes a share of the partitions' leases at start: routine.
            self._log.log(self._routine, "took the lease %s", self.key)
        elif self.holding and not holding:
            self._log.warning("lost the lease %s", self.key)
        self.holding = holding
        return holding

    def _unconfirmed(self, exc: Exception) -> bool:
        """A renewal failed: we hold the lease while its confirmed expiry is ahead."""
        holding = self.holding and self._clock() < self.confirmed_until
        # Once per kind of failure: a full Redis refuses to give a free lease out every ttl/3
        # until memory is freed.
        if type(exc) is not self._failing:
            if holding:
                left = self.confirmed_until - self._clock()
                self._log.warning(
                    "lease check failed: %s (the lease is ours for %.1f s more)", exc, left
                )
            else:
                self._log.warning("lease check failed: %s", exc)
        self._failing = type(exc)
        if self.holding and not holding:
            # Worded as every other change of hands ends, with the key (tests and operators
            # match " the lease <key>" at the end of the line).
            self._log.warning("no renewal confirmed before it expired: lost the lease %s", self.key)
        self.holding = holding
        return holding

    def gave_up(self) -> None:
        """Released: ours no more, and nothing confirmed."""
        self.holding = False
        self.confirmed_until = float("-inf")

    def renew(self) -> bool:
        """Renew the lease, or take a free one (the store's own round trip)."""
        raise NotImplementedError

    def release(self) -> None:
        """Give the lease up now (the store's own round trip)."""
        raise NotImplementedError

    def keep(self, stop: gevent.event.Event) -> None:
        """Renew every ttl/3 until `stop` is set; then give the lease up."""
        try:
            while not stop.is_set():
                self.renew()
                stop.wait(self._ttl_ms / 3000)
        finally:
            self.release()
