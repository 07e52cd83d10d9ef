"""The memory broker: the shared-log core (event log, leases, membership, fenced publishing
and checkpoints: `pushsvc.broker.shared_log`) in one process. `pushsvc serve` runs on it, and
the simulation (`tests/simulation/`) plays many processes on one store, through the test
subclasses of `tests/support/memory_core.py` (a manual clock, injected store errors)."""

from pushsvc.broker.memory.broker import MemoryBroker, MemoryUpdatesFeed
from pushsvc.broker.memory.clock import Clock
from pushsvc.broker.memory.store import Store

__all__ = [
    "Clock",
    "MemoryBroker",
    "MemoryUpdatesFeed",
    "Store",
]
