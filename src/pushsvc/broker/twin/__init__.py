"""The memory twin of the Redis core: the shared event log, leases, membership, fenced
publishing and checkpoints (`pushsvc.broker.shared_log`) in one process, on an injected
clock, with injectable store errors. For tests and simulations (`tests/simulation/`)."""

from pushsvc.broker.twin.broker import MemoryLogBroker
from pushsvc.broker.twin.clock import Clock, ManualClock
from pushsvc.broker.twin.faults import Fate, Faults, no_faults
from pushsvc.broker.twin.store import Store

__all__ = ["Clock", "Fate", "Faults", "ManualClock", "MemoryLogBroker", "Store", "no_faults"]
