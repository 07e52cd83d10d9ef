"""Sessions in the simulation: a `[[session]]` rule over a topic of its own, and one or two
sessionizer processes (`pushsvc.aggregate.sessionize.Sessionizer`, each with a lease from a
store of its own, as the session lease on Redis) that the scheduler steps, kills, restarts and
pauses past their lease, on the world's store and clock.

Drawn from a random generator of its own (`random.Random(f"sessions:{seed}")`), so that a seed
without sessions runs exactly the schedule it ran before they were added; and a seed with
them, exactly the same schedule on every run.

Invariants (`SessionSide.check`, after every step; `SessionSide.check_end`, once settled):

* each session is logged once: no two events of the session topic share a key and a first
  event (what the sessionizer's idempotency key `session:<digest>:<first µs>` names), through
  kills, pauses past the lease and restarts from the saved state;
* once the world has settled past every session's end, the sessions logged are exactly those
  of the source events logged (a key's events, in time order, split where two are more than
  the gap apart): each event in exactly one session, each session's first and last event and
  its event count as the oracle's.

The session topic's events are not identified by their value (a duration, often 0.0): the
checker counts them per topic (`Checker.produced`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pushsvc.aggregate.sessionize import Sessionizer
from pushsvc.broker.memory import MemoryBroker, Store
from pushsvc.broker.memory.lease import MemoryLease
from pushsvc.core.event import Event
from pushsvc.rules.sessions import SessionRule, parse_sessions

if TYPE_CHECKING:
    from simulation.world import World

SOURCE = "s.0"
"""The session rule's source: a topic of its own, never deleted (a deletion restarts a topic's
clock, and an event the store then takes may be late for the assembler: a limit, not a bug)."""
TOPIC = "sessions"
KEY = "user"
USERS = ("u0", "u1", "u2")
GAPS = ("200ms", "500ms", "1s")
S = 1_000_000


class _OneRound:
    """The `stop` a sessionizer's `run` loop takes, set after one round: the scheduler runs the
    product's loop (its error handling included) one round at a time."""

    def __init__(self) -> None:
        self._rounds = 0

    def is_set(self) -> bool:
        self._rounds += 1
        return self._rounds > 1

    def wait(self, timeout: float | None = None) -> bool:
        return True


@dataclass(eq=False)
class SessionProcess:
    """One process's sessionizer, with its broker and its lease."""

    name: str
    broker: MemoryBroker
    lease: MemoryLease
    sessionizer: Sessionizer
    paused_until: float = 0.0
    renewed_at: float = float("-inf")


class SessionSide:
    """The session rule of one world, its sessionizer processes and its checks."""

    def __init__(self, world: World, rng: random.Random) -> None:
        self.world = world
        self.rng = rng
        table = {
            "topic": TOPIC,
            "from": [SOURCE],
            "key": KEY,
            "gap": rng.choice(GAPS),
            "keep_key": True,
        }
        self.rule: SessionRule = parse_sessions([table])[0]
        self.gap_us = self.rule.gap_us
        self.checkpoint_s = rng.choice((0.1, 0.3, 1.0))
        self.lease_store = Store(1, clock=world.clock)
        self.processes: list[SessionProcess] = []
        self.started = 0
        self.seen: dict[tuple[str, int], str] = {}
        """Each session logged, by (key, first event µs): its entry's id."""
        self._scanned = 0
        self.fired = world.faults.fired
        """The moments reached, counted with the world's (`Faults.fired`)."""
        for _ in range(rng.randint(1, 2)):
            self.start()

    @property
    def rules(self) -> tuple[SessionRule, ...]:
        return (self.rule,)

    # -- the processes -------------------------------------------------------------------

    def start(self) -> None:
        world = self.world
        self.started += 1
        name = f"z{self.started}"
        broker = MemoryBroker(world.store, name=name)
        lease = MemoryLease(self.lease_store, (0, 1), ttl_us=world.lease_us)
        sessionizer = Sessionizer(
            broker,
            self.rules,
            lateness_us=world.lateness_us,
            lease=lease,
            settle_ms=0,
            checkpoint_s=self.checkpoint_s,
            clock=world.clock,
        )
        self.processes.append(SessionProcess(name, broker, lease, sessionizer))
        world.note("start sessionizer %s", name)

    def crash(self, process: SessionProcess) -> None:
        self.processes.remove(process)
        process.broker.close()
        if process.lease.holding:
            self.fired["sessionizer killed holding its lease"] += 1
        self.world.note("crash sessionizer %s", process.name)

    def step(self, process: SessionProcess) -> None:
        """The lease's keeper (every third of its ttl) and one round of the sessionizer's loop,
        in either order: a process that wakes from a pause may run a round before its keeper
        learns the lease went to another."""
        now = self.world.clock()
        if process.paused_until > now:
            return
        due = now - process.renewed_at >= process.lease.ttl_s / 3
        keeper_first = self.rng.random() < 0.5
        if due and keeper_first:
            self._renew(process)
        if process.lease.holding and process.renewed_at < now - process.lease.ttl_s:
            self.fired["sessionizer steps on a lapsed lease"] += 1
        before = process.sessionizer.replayed
        process.sessionizer.run(_OneRound())  # type: ignore[arg-type]
        if process.sessionizer.replayed > before:
            self.fired["session answered from its key"] += 1
        if due and not keeper_first:
            self._renew(process)

    def _renew(self, process: SessionProcess) -> None:
        was = process.lease.holding
        process.lease.renew()
        process.renewed_at = self.world.clock()
        if process.lease.holding and not was:
            self.fired["sessionizer took the lease"] += 1

    # -- the scheduler's draws -----------------------------------------------------------

    def turn(self, *, faulty: bool) -> None:
        """After each of the world's turns: maybe an event of the source, a sessionizer's
        step, or (while faults happen) a kill, a restart or a pause past the lease."""
        rng = self.rng
        roll = rng.random()
        if roll < 0.12:
            self.append()
        elif roll < 0.45:
            if self.processes:
                self.step(rng.choice(self.processes))
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
            process = rng.choice(self.processes)
            world = self.world
            process.paused_until = world.clock() + world.lease_us / S * rng.uniform(1.2, 3)
            self.fired["sessionizer paused past its lease"] += 1
            world.note("pause sessionizer %s until %.2f", process.name, process.paused_until)

    def append(self, *, user: str | None = "") -> None:
        """An event of the source topic, for one of the users (`user=None`: with no key, which
        only moves the assembler's clock)."""
        world = self.world
        rng = self.rng
        if user == "":
            user = rng.choice(USERS)
        world.value += 1
        late = rng.choice((0, 0, 0, S // 10, S // 2)) if user is not None else 0
        tags = None if user is None else {KEY: user}
        world.send(SOURCE, Event(float(world.value), world.wall_us() - late, tags), None)

    # -- the checks ----------------------------------------------------------------------

    def _sessions_journal(self) -> list[tuple[str, int, int, int, str]]:
        """The sessions logged since the last call: (key, first µs, last µs, events, id)."""
        journal = self.world.store.part(TOPIC).journal
        assert journal is not None
        found = []
        for entry in journal[self._scanned :]:
            if entry.topic != TOPIC or entry.events is None:
                continue
            for event in entry.events:
                tags = event.tags or {}
                last = event.ts_us
                first = last - round(event.value * S)
                found.append((tags[KEY], first, last, int(tags["events"]), entry.id))
        self._scanned = len(journal)
        return found

    def check(self) -> None:
        """No session logged twice."""
        for key, first, _last, _events, entry_id in self._sessions_journal():
            if (key, first) in self.seen:
                raise self.world.broken(
                    f"the session of {key} from {first} was logged twice: entries "
                    f"{self.seen[(key, first)]} and {entry_id}"
                )
            self.seen[(key, first)] = entry_id
            self.fired["session logged"] += 1

    def settle(self) -> None:
        """The faults stop: a sessionizer runs; time passes beyond every session's end (the
        gap, the allowed lateness and the assembler's slot of a second) and one event with no
        key moves the assembler's clock there; then every session ends and is logged."""
        world = self.world
        if not self.processes:
            self.start()
        for process in self.processes:
            process.paused_until = min(process.paused_until, world.clock())
        target = world.clock() + (self.gap_us + world.lateness_us + S) / S + 0.1
        while world.clock() < target:
            world.pass_step(extra=self._step_all, seconds=0.1)
        self.append(user=None)
        wanted = self.oracle()
        deadline = world.clock() + 30
        while True:
            world.pass_step(extra=self._step_all, seconds=0.1)
            self.check()
            if self._logged_sessions() == wanted and world.all_published():
                return
            if world.clock() > deadline:
                got = self._logged_sessions()
                raise world.broken(
                    f"sessions logged {sorted(got - wanted)} not in the oracle, and the "
                    f"oracle's {sorted(wanted - got)} not logged, 30 s after the faults stopped"
                )

    def _step_all(self) -> None:
        for process in self.rng.sample(self.processes, len(self.processes)):
            self.step(process)

    def _logged_sessions(self) -> set[tuple[str, int, int, int]]:
        journal = self.world.store.part(TOPIC).journal
        assert journal is not None
        return {
            (e.tags[KEY], e.ts_us - round(e.value * S), e.ts_us, int(e.tags["events"]))
            for entry in journal
            if entry.topic == TOPIC and entry.events is not None
            for e in entry.events
            if e.tags is not None
        }

    def oracle(self) -> set[tuple[str, int, int, int]]:
        """The sessions of every keyed source event logged: per key, in time order, a new
        session where the next event is more than the gap after the previous one."""
        journal = self.world.store.part(SOURCE).journal
        assert journal is not None
        times: dict[str, list[int]] = {}
        for entry in journal:
            if entry.topic == SOURCE and entry.events is not None:
                for event in entry.events:
                    if event.tags is not None and KEY in event.tags:
                        times.setdefault(event.tags[KEY], []).append(event.ts_us)
        sessions = set()
        for key, stamps in times.items():
            stamps.sort()
            first = last = stamps[0]
            count = 1
            for ts in stamps[1:]:
                if ts - last > self.gap_us:
                    sessions.add((key, first, last, count))
                    first, count = ts, 0
                last = ts
                count += 1
            sessions.add((key, first, last, count))
        return sessions


def maybe(world: World) -> SessionSide | None:
    """The world's sessions, in a quarter of the seeds."""
    rng = random.Random(f"sessions:{world.seed}")
    if rng.random() >= 0.25:
        return None
    return SessionSide(world, rng)
