"""Transient store errors, injected: what a store does with each call.

A call to Redis can fail before it runs (a refused connection: nothing happened) or after (a
timeout, a dropped connection: it ran, and the caller never learns so). The store asks its
`Faults` for the fate of every call, by operation and partition, so a test or a simulation
decides which calls fail and how; both fates raise BrokerUnavailable to the caller, as the
Redis classes do.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum

from pushsvc.core.partitions import Partition


class Fate(Enum):
    OK = "ok"
    FAIL = "fail"
    """Refused before it ran: nothing changed."""
    LOST = "lost"
    """It ran, but its reply was lost."""


Faults = Callable[[str, Partition | None], Fate]
"""The fate of one call: (operation, partition or None) -> Fate. Operations: append, publish,
read, state, applied, upto, ticks, forget, save_checkpoints, checkpoints, announce_rules,
trim, round (a lease group's round trip), renew (one lease's renewal within it), take,
release, leave, acquire (a lone lease's renewal)."""


def no_faults(operation: str, shard: Partition | None) -> Fate:
    return Fate.OK
