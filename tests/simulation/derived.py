"""Derived topics in the simulation: a `[[derive]]` rule over source topics of its own, and one
or two deriver processes (`pushsvc.aggregate.derive.Deriver`, each with a lease from a store of
its own, as the derive lease on Redis) that the scheduler steps, kills, restarts and pauses past
their lease, on the world's store and clock.

Drawn from a random generator of its own (`random.Random(f"derive:{seed}")`), so that a seed
without a derived topic runs exactly the schedule it ran before they were added.

Invariants (`DeriveSide.check`, after every step; `DeriveSide.missing`, once settled):

* each boundary is logged once: no two events of the derived topic at the same boundary (what
  the deriver's idempotency key `derive:<t µs>` names), through kills, pauses past the lease
  and restarts;
* none logged late or out of place: every event of the derived topic is at a boundary (a
  whole multiple of `every`), and its value is the expression over the sources' events logged
  in `[t - range, t)` (the oracle below: the events of the sources' journals in buckets of
  `every`; the expression itself is `pushsvc.rules.derive.evaluate`'s, the one place it is
  computed);
* once the faults stop and the sources' clocks pass the allowed lateness, the boundaries
  logged and their values are exactly the oracle's: from the end of the earliest bucket of
  any source to the newest boundary every source's published clock has passed by the
  allowed lateness, those whose value is defined, none missing (a boundary refused as late
  is one missing).
"""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING

from pushsvc.aggregate.derive import Deriver
from pushsvc.broker.memory import MemoryBroker
from pushsvc.broker.memory.lease import MemoryLease
from pushsvc.core.event import Event
from pushsvc.core.topics import TopicMatcher
from pushsvc.rules.analytics import Rules
from pushsvc.rules.derive import DeriveRule, Term, evaluate, parse_derives
from pushsvc.rules.file_shape import decode_rules_file
from simulation.leased import LeasedSide, S

if TYPE_CHECKING:
    from simulation.world import World

TOPIC = "derived"
EVERY_US = S
EXPRESSIONS = (
    "sum[1s](d.a) / count[1s](d.b)",
    "count[2s](d.a) + sum[1s](d.b)",
    "sum[1s](d.a)",
)
"""The sources are `d.` topics (a rule of their own: series of `every`, a count window so that
they are never forgotten, and never deleted): a deletion or a forget drops a source's buckets,
which changes a boundary's value between two derivers' reads (kept first: a limit)."""


class DeriveSide(LeasedSide):
    """The derive rule of one world, its deriver processes and its checks."""

    kind = "deriver"
    topic = TOPIC
    pauses = (1.5, 6.0)
    """Long enough, often, for the successor to log a boundary or two that the holder, woken
    before its keeper, then logs again (answered from the key)."""

    def __init__(self, world: World, rng: random.Random, rules: Rules) -> None:
        super().__init__(world, rng)
        table = {"topic": TOPIC, "every": "1s", "value": rng.choice(EXPRESSIONS)}
        self.rule: DeriveRule = parse_derives(
            decode_rules_file({"derive": [table]}).derive,
            lambda topic: rules.series_of(rules.for_topic(topic)),
        )[0]
        self.sources = self.rule.sources
        # The sources' clocks past the last boundary by the allowed lateness.
        self.wait_s = (world.lateness_us + EVERY_US) / S + 0.1
        self.rules: Rules | None = None
        """The world's rules with this one (set by the world before any process starts)."""
        self.seen: dict[int, str] = {}
        """Each boundary logged: its entry's id."""
        self.values: dict[int, float] = {}
        self._scanned = 0

    def begin(self, rules: Rules) -> None:
        """The world's rules are set: its processes start."""
        self.rules = rules
        # A backlog first (a producer catching up): events of the last seconds, in time order,
        # so that boundaries are due from the start and the derivers' kills and pauses meet
        # boundaries to log (a boundary falls due the allowed lateness after it ends).
        world = self.world
        backlog = self.rng.randint(4, 8)
        for back in range(backlog, 0, -1):
            for topic in self.sources:
                world.value += 1
                ts = world.wall_us() - back * S // 2
                world.send(topic, Event(float(world.value), ts, None), None)
        for _ in range(self.rng.choice((1, 2, 2))):
            self.start()

    def new_runner(self, broker: MemoryBroker, lease: MemoryLease) -> Deriver:
        assert self.rules is not None
        return Deriver(broker, self.rules, lateness_us=self.world.lateness_us, lease=lease)

    def append(self) -> None:
        """An event of each source (their clocks move together, so boundaries fall due as
        time passes): on time mostly, sometimes late within the lateness."""
        world = self.world
        rng = self.rng
        for topic in self.sources:
            world.value += 1
            late = rng.choice((0, 0, 0, S // 10, S // 2, 2 * S))
            ts = world.wall_us() - late
            world.send(topic, Event(float(world.value), ts, None), None)

    def close(self) -> None:
        world = self.world
        for topic in self.sources:
            world.value += 1
            ts = world.wall_us()
            world.send(topic, Event(float(world.value), ts, None), None)

    def check(self) -> None:
        """No boundary logged twice, none off a boundary, none with a value the sources'
        events do not give."""
        journal = self.world.store.journal(TOPIC)
        fresh = []
        for entry in journal[self._scanned :]:
            if entry.topic != TOPIC or entry.events is None:
                continue
            for event in entry.events:
                t = event.ts_us
                if t in self.seen:
                    raise self.world.broken(
                        f"{TOPIC}: boundary {t} logged twice: entries {self.seen[t]} and {entry.id}"
                    )
                if t % EVERY_US:
                    raise self.world.broken(f"{TOPIC}: an event at {t}, not on a boundary")
                self.seen[t] = entry.id
                self.values[t] = event.value
                fresh.append(t)
                self.fired["boundary logged"] += 1
        self._scanned = len(journal)
        if fresh:
            buckets = self._buckets()
            for t in fresh:
                want = self._value(buckets, t)
                if want is None or not math.isclose(self.values[t], want, abs_tol=1e-9):
                    raise self.world.broken(
                        f"{TOPIC}: boundary {t} logged {self.values[t]}, the sources' events "
                        f"give {want}"
                    )

    def _buckets(self) -> dict[str, dict[int, list[float]]]:
        """Each source's events logged, by the start of their bucket of `every`."""
        found: dict[str, dict[int, list[float]]] = {topic: {} for topic in self.sources}
        for topic in self.sources:
            journal = self.world.store.journal(topic)
            kept = found[topic]
            for entry in journal:
                if entry.topic == topic and entry.events is not None:
                    for event in entry.events:
                        start = event.ts_us // EVERY_US * EVERY_US
                        kept.setdefault(start, []).append(event.value)
        return found

    def _value(self, buckets: dict[str, dict[int, list[float]]], t: int) -> float | None:
        values: dict[Term, float | None] = {}
        for term in self.rule.terms:
            inside = [
                v
                for start in range(t - term.range_us, t, EVERY_US)
                for v in buckets[term.topic].get(start, ())
            ]
            assert term.stat in ("count", "sum"), term
            values[term] = float(len(inside)) if term.stat == "count" else math.fsum(inside)
        return evaluate(self.rule.expression, values)

    def oracle(self) -> dict[int, float] | None:
        """Every boundary due now, with its value (None: a source has no clock yet)."""
        latest = self.world.web.latest(TopicMatcher(list(self.sources)))
        if len(latest) < len(self.sources):
            return None
        lateness = self.world.lateness_us
        due = (min(u.clock_us for u in latest.values()) - lateness) // EVERY_US * EVERY_US
        buckets = self._buckets()
        starts = [min(b) for b in buckets.values() if b]
        if not starts:
            return {}
        out = {}
        for t in range(min(starts) + EVERY_US, due + EVERY_US, EVERY_US):
            value = self._value(buckets, t)
            if value is not None and math.isfinite(value):
                out[t] = value
        return out

    def missing(self) -> str | None:
        wanted = self.oracle()
        if wanted is None:
            return "a source without a clock"
        got = set(self.seen)
        if got == wanted.keys():
            # And each with the value of every event of its buckets, as logged in the end (a
            # boundary computed before its buckets closed had only some of them).
            wrong = [
                (t, self.values[t], want)
                for t, want in sorted(wanted.items())
                if not math.isclose(self.values[t], want, abs_tol=1e-9)
            ]
            return f"{TOPIC}: (boundary, logged, oracle) {wrong}" if wrong else None
        return (
            f"{TOPIC}: boundaries logged {sorted(got - wanted.keys())} not in the oracle, and "
            f"the oracle's {sorted(wanted.keys() - got)} not logged"
        )


def maybe(world: World, rules: Rules) -> DeriveSide | None:
    """The world's derived topic, in 15% of the seeds (`rules`: the world's, with the
    sources' rule)."""
    rng = random.Random(f"derive:{world.seed}")
    if rng.random() >= 0.15:
        return None
    return DeriveSide(world, rng, rules)
