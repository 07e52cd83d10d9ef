"""Per-client limits a web process enforces before it does any work: open streams (per client
IP and in all) and the publish rate (per token subject, else per client IP).

Both are per process, like Centrifugo's node limits: N web processes admit N times the
total, and a client's streams spread over them count separately (docs/security.md).
Greenlet-safe: nothing here yields.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from pushsvc.core.token_bucket import Clock, TokenBucket
from pushsvc.errors import RateLimited, ServerBusy, TooManyStreams

# A process at its stream limit asks clients back after this long (EventSource itself
# waits its retry time; other clients read Retry-After).
BUSY_RETRY_AFTER_S = 5


class StreamSlots:
    """Open streams per client IP and in all. `acquire` returns the release function."""

    def __init__(self, *, per_ip: int, total: int) -> None:
        self.per_ip = per_ip
        self.total = total
        self._by_ip: dict[str, int] = {}
        self.open = 0

    def acquire(self, ip: str) -> Callable[[], None]:
        if self.open >= self.total:
            raise ServerBusy(
                f"this server holds its maximum of {self.total} streams; retry later",
                retry_after_s=BUSY_RETRY_AFTER_S,
            )
        held = self._by_ip.get(ip, 0)
        if held >= self.per_ip:
            raise TooManyStreams(f"at most {self.per_ip} streams per client address")
        self._by_ip[ip] = held + 1
        self.open += 1
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            self.open -= 1
            left = self._by_ip[ip] - 1
            if left:
                self._by_ip[ip] = left
            else:
                del self._by_ip[ip]

        return release


class RateLimiter:
    """A token bucket per key: `rate` events per second, a burst of one second's worth.

    A request is admitted while its key's bucket holds a whole token (`admit`, before the body is
    read) and then charged one token per event it logged (`charge`), so a batch may leave the
    bucket in debt: a producer sending batches bigger than the burst is held to the same
    average rate instead of being refused for ever, and a refused batch costs nothing.
    """

    # Full buckets are forgotten once there are this many keys, so a scan of many client
    # addresses costs memory only while they keep sending.
    PRUNE_AT = 10_000

    def __init__(self, rate: float, *, clock: Clock = time.monotonic) -> None:
        self.rate = rate
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}

    def admit(self, key: str) -> None:
        """Raise RateLimited, with the seconds to wait, when `key`'s bucket holds no whole
        token."""
        bucket = self._buckets.get(key)
        if bucket is None:
            return  # a key not seen lately has a full bucket
        wait_s = bucket.wait_s()
        if wait_s:
            wait = math.ceil(wait_s)
            raise RateLimited(
                f"over the publish rate of {self.rate:g} events/s; retry in {wait} s",
                retry_after_s=wait,
            )

    def charge(self, key: str, events: int) -> None:
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.PRUNE_AT:
                self._prune()
            bucket = self._buckets[key] = TokenBucket(self.rate, clock=self._clock)
        bucket.charge(events)

    def _prune(self) -> None:
        self._buckets = {
            key: bucket for key, bucket in self._buckets.items() if bucket.refilled() < bucket.burst
        }
