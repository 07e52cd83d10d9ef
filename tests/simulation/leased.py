"""A process that computes under a lease (a sessionizer, a deriver), as the simulation drives
it: its lease kept every third of its ttl and one round of its `run` loop, in either order."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import gevent.event

from pushsvc.broker.memory import MemoryBroker, Store
from pushsvc.broker.memory.lease import MemoryLease
from support.memory_core import AtOnceBroker

if TYPE_CHECKING:
    from simulation.world import World

S = 1_000_000


class OneRound:
    """The `stop` a `run` loop takes, set after one round: the scheduler runs the product's
    loop (its error handling included) one round at a time."""

    def __init__(self) -> None:
        self._rounds = 0

    def is_set(self) -> bool:
        self._rounds += 1
        return self._rounds > 1

    def wait(self, timeout: float | None = None) -> bool:
        return True


class Runner(Protocol):
    @property
    def replayed(self) -> int: ...

    def run(self, stop: gevent.event.Event) -> None: ...


@dataclass(eq=False)
class LeasedProcess:
    """One process's runner, with its broker and its lease (a store of its own holds it)."""

    name: str
    kind: str
    """What it runs, as the moments name it: "sessionizer", "deriver"."""
    broker: MemoryBroker
    lease: MemoryLease
    runner: Runner
    paused_until: float = 0.0
    renewed_at: float = float("-inf")

    def step(self, now: float, rng: random.Random, fired: Counter[str]) -> None:
        """The lease's keeper (when due) and one round, in either order: a process that wakes
        from a pause may run a round before its keeper learns the lease went to another."""
        if self.paused_until > now:
            return
        due = now - self.renewed_at >= self.lease.ttl_s / 3
        keeper_first = rng.random() < 0.5
        if due and keeper_first:
            self._renew(now, fired)
        if self.lease.holding and self.renewed_at < now - self.lease.ttl_s:
            fired[f"{self.kind} steps on a lapsed lease"] += 1
        before = self.runner.replayed
        self.runner.run(OneRound())  # type: ignore[arg-type]
        if self.runner.replayed > before:
            fired[f"{self.kind} answered from its key"] += 1
        if due and not keeper_first:
            self._renew(now, fired)

    def _renew(self, now: float, fired: Counter[str]) -> None:
        was = self.lease.holding
        self.lease.renew()
        self.renewed_at = now
        if self.lease.holding and not was:
            fired[f"{self.kind} took the lease"] += 1


class LeasedSide:
    """One or two processes of one `kind` on the world's store and clock, each with a lease
    from a store of their own; the scheduler's draws for them (their own random generator)."""

    kind = ""
    topic = ""
    """The topic it appends to."""
    pauses = (1.2, 3.0)
    """How long a pause lasts, in lease periods (at least, at most)."""

    def __init__(self, world: World, rng: random.Random) -> None:
        self.world = world
        self.rng = rng
        self.lease_store = Store(1, clock=world.clock)
        self.processes: list[LeasedProcess] = []
        self.started = 0
        self.fired = world.faults.fired
        """The moments reached, counted with the world's (`Faults.fired`)."""

    def new_runner(self, broker: MemoryBroker, lease: MemoryLease) -> Runner:
        """A `Sessionizer` or a `Deriver` (its `run` takes a gevent `Event`; `OneRound` is
        what that loop reads of one)."""
        raise NotImplementedError

    def start(self) -> None:
        world = self.world
        self.started += 1
        name = f"{self.kind[0]}{self.started}"
        broker = AtOnceBroker(world.store, name=name)
        lease = MemoryLease(self.lease_store, (0, 1), ttl_us=world.lease_us)
        runner = self.new_runner(broker, lease)
        self.processes.append(LeasedProcess(name, self.kind, broker, lease, runner))
        world.note("start %s %s", self.kind, name)

    def crash(self, process: LeasedProcess) -> None:
        self.processes.remove(process)
        process.broker.close()
        if process.lease.holding:
            self.fired[f"{self.kind} killed holding its lease"] += 1
        self.world.note("crash %s %s", self.kind, process.name)

    def step_all(self) -> None:
        now = self.world.clock()
        for process in self.rng.sample(self.processes, len(self.processes)):
            process.step(now, self.rng, self.fired)

    def turn(self, *, faulty: bool) -> None:
        """After each of the world's turns: maybe an event of a source, a process's round, or
        (while faults happen) a kill, a start or a pause past the lease."""
        rng = self.rng
        roll = rng.random()
        if roll < 0.12:
            self.append()
        elif roll < 0.45:
            if self.processes:
                rng.choice(self.processes).step(self.world.clock(), rng, self.fired)
        elif roll < 0.5 and faulty:
            self._fault()
        self.check()

    def _fault(self) -> None:
        rng = self.rng
        kind = rng.random()
        if kind < 0.35 and self.processes:
            self.crash(rng.choice(self.processes))
        elif kind < 0.6 and len(self.processes) < 2:
            self.start()
        elif self.processes:
            # The holder, mostly: its successor then logs what the holder, woken, logs again.
            holders = [p for p in self.processes if p.lease.holding]
            process = rng.choice(holders if holders and rng.random() < 0.8 else self.processes)
            world = self.world
            process.paused_until = world.clock() + world.lease_us / S * rng.uniform(*self.pauses)
            self.fired[f"{self.kind} paused past its lease"] += 1
            world.note("pause %s %s until %.2f", self.kind, process.name, process.paused_until)

    def prepare(self) -> None:
        """The faults stop: one process at least, none paused."""
        if not self.processes:
            self.start()
        for process in self.processes:
            process.paused_until = 0.0

    wait_s = 0.0
    """How long after the faults stop its sources' clocks must move on (`close`)."""

    def append(self) -> None:
        raise NotImplementedError

    def check(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Once `wait_s` passed: events that move its sources' clocks to now."""
        raise NotImplementedError

    def missing(self) -> str | None:
        """What the oracle says is still to be logged, or was logged and should not have been
        (None: nothing)."""
        raise NotImplementedError
