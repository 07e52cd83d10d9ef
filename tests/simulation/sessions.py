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
from typing import TYPE_CHECKING

from pushsvc.aggregate.sessionize import Sessionizer
from pushsvc.broker.memory import MemoryBroker
from pushsvc.broker.memory.lease import MemoryLease
from pushsvc.core.event import Event
from pushsvc.rules.file_shape import decode_rules_file
from pushsvc.rules.sessions import SessionRule, parse_sessions
from simulation.leased import LeasedSide, S

if TYPE_CHECKING:
    from simulation.world import World

SOURCE = "s.0"
"""The session rule's source: a topic of its own, never deleted (a deletion restarts a topic's
clock, and an event the store then takes may be late for the assembler: a limit, not a bug)."""
TOPIC = "sessions"
KEY = "user"
USERS = ("u0", "u1", "u2")
GAPS = ("200ms", "500ms", "1s")


class SessionSide(LeasedSide):
    """The session rule of one world, its sessionizer processes and its checks."""

    kind = "sessionizer"
    topic = TOPIC

    def __init__(self, world: World, rng: random.Random) -> None:
        super().__init__(world, rng)
        table = {
            "topic": TOPIC,
            "from": [SOURCE],
            "key": KEY,
            "gap": rng.choice(GAPS),
            "keep_key": True,
        }
        self.rule: SessionRule = parse_sessions(decode_rules_file({"session": [table]}).session)[0]
        self.gap_us = self.rule.gap_us
        self.checkpoint_s = rng.choice((0.1, 0.3, 1.0))
        # Beyond every session's end: the gap, the allowed lateness, the assembler's slot.
        self.wait_s = (self.gap_us + world.lateness_us + S) / S + 0.1
        self.seen: dict[tuple[str, int], str] = {}
        """Each session logged, by (key, first event µs): its entry's id."""
        self._scanned = 0
        self._wanted: set[tuple[str, int, int, int]] | None = None
        for _ in range(rng.randint(1, 2)):
            self.start()

    @property
    def rules(self) -> tuple[SessionRule, ...]:
        return (self.rule,)

    def new_runner(self, broker: MemoryBroker, lease: MemoryLease) -> Sessionizer:
        world = self.world
        return Sessionizer(
            broker,
            self.rules,
            lateness_us=world.lateness_us,
            lease=lease,
            settle_ms=0,
            checkpoint_s=self.checkpoint_s,
            clock=world.clock,
        )

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

    def close(self) -> None:
        self.append(user=None)
        self._wanted = self.oracle()

    # -- the checks ----------------------------------------------------------------------

    def _sessions_journal(self) -> list[tuple[str, int, int, int, str]]:
        """The sessions logged since the last call: (key, first µs, last µs, events, id)."""
        journal = self.world.store.journal(TOPIC)
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

    def missing(self) -> str | None:
        got, wanted = self._logged_sessions(), self._wanted
        if got == wanted:
            return None
        assert wanted is not None
        return (
            f"sessions logged {sorted(got - wanted)} not in the oracle, and the oracle's "
            f"{sorted(wanted - got)} not logged"
        )

    def _logged_sessions(self) -> set[tuple[str, int, int, int]]:
        journal = self.world.store.journal(TOPIC)
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
        journal = self.world.store.journal(SOURCE)
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
    """The world's sessions, in a fifth of the seeds."""
    rng = random.Random(f"sessions:{world.seed}")
    if rng.random() >= 0.2:
        return None
    return SessionSide(world, rng)
