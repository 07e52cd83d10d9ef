"""The memory broker: the shared-log core (event log, leases, membership, fenced publishing
and checkpoints: `pushsvc.broker.shared_log`) in one process. `pushsvc serve` runs on it, and
the simulation (`tests/simulation/`) plays many processes on one store, on a manual clock,
with injected store errors."""

from pushsvc.broker.memory.broker import MemoryBroker, MemoryUpdatesFeed
from pushsvc.broker.memory.clock import Clock, ManualClock
from pushsvc.broker.memory.faults import Fate, Faults, no_faults
from pushsvc.broker.memory.store import Store

__all__ = [
    "Clock",
    "Fate",
    "Faults",
    "ManualClock",
    "MemoryBroker",
    "MemoryUpdatesFeed",
    "Store",
    "no_faults",
]
