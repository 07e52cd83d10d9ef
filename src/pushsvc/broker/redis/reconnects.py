"""How long a pub/sub reader waits before it connects again, for both readers (`pubsub`, one
connection; `sharded_pubsub`, one per primary of a Redis Cluster).

Each failure in a row doubles the step, from the first up to a cap, and a connection that
works starts again from the first. Each wait is redis-py's equal jitter
(`redis.backoff.EqualJitterBackoff`): half the step, plus a random part of the other half.
When Redis restarts or fails over, every web process loses its connection in the same
instant; without jitter they would all come back in the same instant too, at each step. Half
the step stays fixed, so a Redis that is down is not asked again sooner than that."""

from __future__ import annotations

from redis.backoff import EqualJitterBackoff

_MAX_DOUBLINGS = 32
"""Past this many failures in a row the step is the cap anyway; `2 ** failures` would
overflow a float after some 1,000 of them (an hour and a half down at 5 s a wait)."""


class Reconnects:
    """The waits of one reader's reconnections: `first_s` is the first step, `cap_s` the
    largest. Not thread-safe: each reader thread keeps its own."""

    def __init__(self, first_s: float, cap_s: float) -> None:
        self._backoff = EqualJitterBackoff(cap=cap_s, base=first_s)
        self._failures = 0

    def connected(self) -> None:
        """A connection worked: the next wait is from the first step again."""
        self._failures = 0

    def next_wait_s(self) -> float:
        """How long to wait before the next attempt, counting one more failure in a row."""
        wait = self._backoff.compute(min(self._failures, _MAX_DOUBLINGS))
        self._failures += 1
        return wait
