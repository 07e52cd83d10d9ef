"""Asks in flight to the application's backend, bounded per process and per client address
(pure; `pushsvc.security.backend_auth`).

The process bound (`backend_auth.MAX_ASKS`) protects the application from pushsvc. The address
bound protects the other users from one client: every made-up cookie is a credential the
cache has never seen, so without it one address sending fresh cookies would hold every ask,
and every other user's sign-in and stream renewal would get 503 until it stopped. It is a
quarter of the process bound (at least one), so three quarters stay for everyone else
whatever one address sends.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from pushsvc.errors import AuthUnavailable, TooManyRequests

ADDRESS_SHARE = 4
"""One client address may hold at most 1/ADDRESS_SHARE of the process's asks."""


def per_address(max_asks: int) -> int:
    """The asks one client address may have in flight, given the process's bound."""
    return max(1, max_asks // ADDRESS_SHARE)


class AskSlots:
    """Counts the asks in flight, in all and per address (one greenlet step at a time: not
    locked). Holds an entry only for an address with an ask in flight."""

    def __init__(self, max_asks: int) -> None:
        self.max_asks = max_asks
        self.per_address = per_address(max_asks)
        self._total = 0
        self._by_address: dict[str, int] = {}

    @contextmanager
    def held(self, address: str) -> Iterator[None]:
        """One ask's slot for its duration. AuthUnavailable (503) when the process has none
        left; TooManyRequests (429) when the address holds its share."""
        if self._total >= self.max_asks:
            raise AuthUnavailable(
                "too many requests wait on the application's auth backend; retry later"
            )
        held = self._by_address.get(address, 0)
        if held >= self.per_address:
            raise TooManyRequests(
                f"this address has {held} requests waiting on the application's auth backend, "
                "as many as one address may; retry once they are answered",
                retry_after_s=AuthUnavailable.retry_after_s,
            )
        self._total += 1
        self._by_address[address] = held + 1
        try:
            yield
        finally:
            self._total -= 1
            left = self._by_address[address] - 1
            if left:
                self._by_address[address] = left
            else:
                del self._by_address[address]

    def in_flight(self, address: str | None = None) -> int:
        return self._total if address is None else self._by_address.get(address, 0)
