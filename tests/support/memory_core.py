"""The memory core as tests and the simulation drive it: a manual clock, a store that injects
transient errors and keeps a journal, and a broker whose log waiter never waits.

The product's classes (`pushsvc.broker.memory`) take none of these: each is a subclass or a
wrapper here, around the one seam the store has, `Store.run` (one Redis round trip, whole).

* `ManualClock`: a clock that moves only when told, so a test decides what time it is.
* `FaultyStore`: each round trip first asks its `Faults` for its fate. A call to Redis can fail
  before it runs (a refused connection: nothing happened) or after (a timeout, a dropped
  connection: it ran, and the caller never learns so); both raise BrokerUnavailable to the
  caller, as the Redis classes do. It also keeps every entry ever logged, in order, per
  partition (`journal`; a trim leaves it): what a simulation's oracle reads (it grows without
  bound).
* `AtOnceBroker`: a `MemoryBroker` whose log waiter answers at once with nothing to read, as a
  simulation on a manual clock needs (it moves the clock itself; the product's waiter waits
  for an append).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from enum import Enum
from typing import TypeVar

from pushsvc.broker.memory import MemoryBroker, Store
from pushsvc.broker.memory.store import LoggedEvents, PartitionData
from pushsvc.broker.shared_log import Entry, LogWaiter
from pushsvc.core.partitions import Partition, partition_of
from pushsvc.errors import BrokerUnavailable

T = TypeVar("T")


class ManualClock:
    """A clock that moves only when told: `advance(s)`. Calling it reads it."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"a clock does not go back ({seconds} s)")
        self.now += seconds


class Fate(Enum):
    OK = "ok"
    FAIL = "fail"
    """Refused before it ran: nothing changed."""
    LOST = "lost"
    """It ran, but its reply was lost."""


Faults = Callable[[str, Partition | None], Fate]
"""The fate of one call: (operation, partition or None) -> Fate. Operations: append, delete,
publish, read, state, applied, upto, ticks, forget, save_checkpoints, checkpoints,
announce_rules, trim, round (a lease group's round trip), renew (one lease's renewal within
it), take, release, leave, acquire (a lone lease's renewal)."""


def no_faults(operation: str, shard: Partition | None) -> Fate:
    return Fate.OK


# Bound once: looking a member up on its enum class costs a call of its own, and a simulation
# makes hundreds of thousands of store calls.
_FAIL, _LOST = Fate.FAIL, Fate.LOST


class FaultyStore(Store):
    """A `Store` whose round trips meet their `faults`' fate, and which keeps a journal (see
    the module's doc)."""

    def __init__(self, partitions: int, *, faults: Faults = no_faults, **kwargs: object) -> None:
        super().__init__(partitions, **kwargs)  # type: ignore[arg-type]
        self.faults = faults
        self.journals: list[list[Entry]] = [[] for _ in range(partitions)]
        """Per partition, every entry ever logged, in order."""

    def journal(self, topic: str) -> list[Entry]:
        """The journal of `topic`'s partition."""
        return self.journals[partition_of(topic, self.partitions)]

    def run(self, operation: str, shard: Partition | None, call: Callable[[], T]) -> T:
        fate = self.faults(operation, shard)
        if fate is _FAIL:
            raise BrokerUnavailable(f"{operation}: the store refused (injected)")
        result = super().run(operation, shard, call)
        if fate is _LOST:
            raise BrokerUnavailable(f"{operation}: the reply was lost (injected)")
        return result

    def add_entry(
        self, part: PartitionData, entry: Callable[[str, int], Entry | LoggedEvents]
    ) -> str:
        logged = super().add_entry(part, entry)
        made = part.entries[-1]
        self.journals[part.index].append(made if isinstance(made, Entry) else made.entry())
        return logged


class _AtOnce:
    """A `LogWaiter` that never waits: `block_ms` is taken as 0."""

    def __init__(self, waiter: LogWaiter) -> None:
        self._waiter = waiter

    def wait(
        self, after: Mapping[Partition, str], *, count: int, block_ms: int
    ) -> dict[Partition, list[Entry]]:
        return self._waiter.wait(after, count=count, block_ms=0)

    def close(self) -> None:
        self._waiter.close()


class AtOnceBroker(MemoryBroker):
    """A `MemoryBroker` whose log waiter answers at once (see the module's doc)."""

    def log_waiter(self) -> LogWaiter:
        return _AtOnce(super().log_waiter())
