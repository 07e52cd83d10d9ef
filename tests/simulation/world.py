"""A deterministic simulation of pushsvc's core: aggregator processes, a producer and a web
process on the memory broker (`pushsvc.broker.memory`, what `pushsvc serve` runs), in one
process, under a seeded scheduler.

Each process is what `pushsvc aggregate` runs (`PartitionPool`, its `ShardRunner`s), stepped
by the scheduler instead of a greenlet, its rebuilds inline. The scheduler draws, from the
seed alone, what happens next: a producer's append (a plain event, a message with a value or
one without; half of them with an idempotency key,
retried at once or later when it fails, refused or with its reply lost), a repeat of a batch
sent with a key (maybe right around the end of the key's window) or the key reused for
another body, a web process's delete of a topic, a process's step, time passing, a crash
(every object of the process dropped, nothing released), a restart, a pause past the lease,
a member joining or leaving gracefully, a transient store error (refused, or run with its
reply lost) on any one call. Then the faults stop and the world settles.

After every step the invariants hold (`Checker`): every logged event yields exactly one
update and every logged delete exactly one deletion, per partition in log order, with ids
increasing per partition; each update's count and sum over every window, and its messages by
type over every time window, equal a model's (`Model`), whose topic starts afresh at its delete
entry (an event logged before it is the old topic's, and no update of it comes after the
deletion); the publishes a partition accepts never go back to a tenure after a later one began;
the store answers each keyed append as a model of its keys says (within the key's window: the
same body replayed and nothing logged, another body refused with nothing logged; past it:
logged anew), and a delete answers True exactly when it logged a delete entry, the topic's
latest gone at once; once the faults stop, every partition is held within two lease periods,
and then the history replays what was delivered and each topic's latest is its last update
(none after its deletion); and in a world where only single transient errors happen, no
partition is ever rebuilt cold after it was first taken. A run that breaks one raises
`Broken`, with the seed and the last steps.

In some seeds, by draws of their own, a session rule and its sessionizers
(`simulation.sessions`) and a derive rule and its derivers (`simulation.derived`) run beside
them as leased processes (`simulation.leased`), each with invariants of its own.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from greenlet import GreenletExit, greenlet

from pushsvc.aggregate.aggregator import Aggregator
from pushsvc.aggregate.partition_pool import PartitionPool
from pushsvc.broker.base import Applied
from pushsvc.broker.memory import MemoryBroker
from pushsvc.broker.shared_log import Entry
from pushsvc.core.cursor import Cursor
from pushsvc.core.event import PAST_GRACE, Event, Message
from pushsvc.core.idempotency import Idempotency
from pushsvc.core.lateness import late_topic
from pushsvc.core.topics import TopicMatcher
from pushsvc.core.updates import Kind, Update, UpdateDraft
from pushsvc.errors import BrokerUnavailable, IdempotencyKeyReused, LateEvent
from pushsvc.rules.analytics import Rule, Rules
from pushsvc.rules.tiers import SeriesTier
from simulation import derived as derive_side
from simulation import sessions as session_side
from simulation.leased import LeasedSide
from support.memory_core import AtOnceBroker, Fate, FaultyStore, ManualClock

S = 1_000_000
LEASE_US = 600_000
LEASE_S = LEASE_US / S
LATENESS_US = 3 * S
WINDOWS_US = (S, 3 * S)
LAST = (3,)
TIME_LABELS = tuple((width, f"{width // S}s") for width in WINDOWS_US)
COUNT_LABELS = tuple((size, f"last{size}") for size in LAST)
WALL_BASE_US = 1_763_700_000 * S
COUNTED = Rule(1, ("c.*",), WINDOWS_US, LAST, ("count", "sum"), exact_up_to_us=max(WINDOWS_US))
"""The `c.` topics: exact time windows and a count window (durable: checkpointed, never
forgotten, since a count window never empties)."""
TIMED = Rule(0, ("*",), WINDOWS_US, (), ("count", "sum"), exact_up_to_us=max(WINDOWS_US))
"""The others: time windows only (rebuilt from the log, forgotten once idle and empty)."""
RULES = Rules((COUNTED,), TIMED)
DERIVE_SOURCES = Rule(
    2,
    ("d.*",),
    WINDOWS_US,
    LAST,
    ("count", "sum"),
    exact_up_to_us=max(WINDOWS_US),
    series=(SeriesTier(S, 3600 * S),),
)
"""The `d.` topics, sources of a derived topic (`simulation.derived`): the count window as
`COUNTED`'s (never forgotten), and series of a second, which the deriver reads."""


def _counted(topic: str) -> bool:
    """Whether a topic has the count window (`COUNTED`, `DERIVE_SOURCES`)."""
    return topic.startswith(("c.", "d."))


EVERYTHING = TopicMatcher(["*"])
TRANSIENT_OPERATIONS = (
    "append",
    "publish",
    "read",
    "renew",
    "round",
    "take",
    "ticks",
    "forget",
    "save_checkpoints",
    "state",
    "upto",
    "checkpoints",
    "applied",
    "trim",
)
KEY_WINDOWS_MS = (60_000, 60_000, 200, 500)
"""How long the store remembers a producer's key: the run's whole length, or less, so that a
repeat races the window's end."""


_OK = Fate.OK  # bound once: a member looked up on its enum class costs a call per store call
DIES = -1.0
"""A stall that never ends: the process is killed right before the call."""


MESSAGE_TYPES = ("shipped", "error")


def _drawn_event(rng: random.Random, number: float, ts: int) -> Event:
    """The producer's next event, numbered `number`: mostly a plain event, sometimes a message
    with a value, sometimes one without (its number then in its data, which names it)."""
    draw = rng.random()
    if draw >= 0.3:
        return Event(number, ts, None)
    message = Message(rng.choice(MESSAGE_TYPES), orjson.dumps({"v": number}))
    return Event(None if draw < 0.15 else number, ts, None, message)


def mark(event: Event) -> float:
    """What names an event in the simulation: its value, or a value-less message's number."""
    if event.value is not None:
        return event.value
    assert event.message is not None
    number: float = orjson.loads(event.message.data)["v"]
    return number


class Broken(AssertionError):
    """An invariant does not hold."""


class Faults:
    """One-shot faults armed by the scheduler: the next call of an operation fails
    (`armed`), or the process making it stalls right before it (`stalls`: for how long), the
    others running meanwhile (a pause in the middle of a step: the call then goes out late,
    as one prepared before a long GC pause does), or for ever (`DIES`: killed midway)."""

    def __init__(self, clock: ManualClock) -> None:
        self.armed: dict[str, Fate] = {}
        self.stalls: dict[str, float] = {}
        self._clock = clock
        self.fired_at = float("-inf")
        self.fired: Counter[str] = Counter()
        """What happened, as `"{kind} before {operation}"` (kind: death, stall, or the
        fate of a transient error): which moments a run reached."""

    def __call__(self, operation: str, shard: object) -> Fate:
        if self.stalls and operation in self.stalls:
            task = greenlet.getcurrent()
            if task.parent is not None:  # a process's step, not the producer's append
                stall = self.stalls.pop(operation)
                self.fired[f"{'death' if stall == DIES else 'stall'} before {operation}"] += 1
                task.parent.switch(stall)
        if not self.armed:
            return _OK
        fate = self.armed.pop(operation, _OK)
        if fate is not _OK:
            self.fired_at = self._clock()
            self.fired[f"{fate.value} {operation}"] += 1
        return fate


class WatchedStore(FaultyStore):
    """The store, telling the checker which tenure each accepted publish was made under."""

    def __init__(self, checker: Checker, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.checker = checker

    def publish(
        self,
        index: int,
        drafts: Sequence[UpdateDraft],
        applied: Applied,
        fence: str,
    ) -> list[Update]:
        published = super().publish(index, drafts, applied, fence)
        self.checker.accepted(index, fence)
        return published


class TopicModel:
    """One topic's events since it was (re)started, and its clock."""

    def __init__(self, counted: bool) -> None:
        self.counted = counted
        """Whether the topic has the count window (`COUNTED`)."""
        # Kept in time order (ties in log order), as two lists: a time window is then a
        # suffix found by bisection, and a count window the last N, instead of a scan and
        # a sort of every event at each update.
        self.times: list[int] = []
        self.values: list[float] = []
        self.message_times: list[int] = []
        self.message_types: list[str] = []
        self.clock: int | None = None

    def add(self, event: Event) -> None:
        ts = event.ts_us
        if event.value is not None:
            at = bisect.bisect_right(self.times, ts)  # after the equal ones: log order
            self.times.insert(at, ts)
            self.values.insert(at, event.value)
        if event.message is not None:
            at = bisect.bisect_right(self.message_times, ts)
            self.message_times.insert(at, ts)
            self.message_types.insert(at, event.message.type)

    def messages(self) -> dict[str, dict[str, int]]:
        """Messages by type in every time window that holds one, at the clock."""
        assert self.clock is not None
        found = {}
        for width, label in TIME_LABELS:
            start = bisect.bisect_right(self.message_times, self.clock - width)
            inside = Counter(self.message_types[start:])
            if inside:
                found[label] = dict(inside)
        return found

    def windows(self) -> dict[str, tuple[int, float]]:
        """count and sum of every window, at the clock. (The values are whole numbers, so
        a sum is exact in any order.)"""
        assert self.clock is not None
        found = {}
        for width, label in TIME_LABELS:
            inside = self.values[bisect.bisect_right(self.times, self.clock - width) :]
            found[label] = (len(inside), float(sum(inside)))
        # Count windows hold the last N events in time order (ties in log order).
        for size, label in COUNT_LABELS if self.counted else ():
            last = self.values[-size:]
            found[label] = (len(last), float(sum(last)))
        return found


class Model:
    """One partition's statistics, from its log (every entry ever logged, in order): what
    every update must say. Walked forward as the partition's updates arrive."""

    def __init__(self, journal: list[Entry]) -> None:
        self.journal = journal
        self.at = 0
        """The next journal entry to apply."""
        self.topics: dict[str, TopicModel] = {}
        self.tick_entry: int | None = None
        self.ticked: set[str] = set()
        """Topics whose update the current tick entry already yielded."""

    def _apply(self, entry: Entry) -> None:
        if entry.forgotten is not None:
            for topic in entry.forgotten:
                self.topics.pop(topic, None)
        elif entry.ticks is not None:
            for topic, clock in entry.ticks.items():
                model = self.topics.get(topic)
                if model is None:
                    model = self.topics[topic] = TopicModel(_counted(topic))
                model.clock = clock if model.clock is None else max(model.clock, clock)

    def _next_yielding(self) -> Entry | None:
        """Walk to the partition's next entry that yields an update of its own, an event or
        a delete (not applied), applying the tick and forget entries on the way."""
        while self.at < len(self.journal):
            entry = self.journal[self.at]
            if entry.events is not None or entry.deleted is not None:
                return entry
            self._apply(entry)
            self.at += 1
            self.tick_entry = None
        return None

    def event(self, topic: str, value: float) -> TopicModel:
        """Walk to the event `value` of `topic`: it must be the partition's next event (or
        delete) not yet published."""
        entry = self._next_yielding()
        if entry is None or entry.events is None or entry.topic != topic:
            raise Broken(self._misplaced(f"an update for {topic} event {value}", topic, value))
        first = entry.events[0]
        if mark(first) != value:
            raise Broken(self._misplaced(f"an update for {topic} event {value}", topic, value))
        model = self.topics.get(topic)
        if model is None:
            model = self.topics[topic] = TopicModel(_counted(topic))
        if first.mark != PAST_GRACE:  # (a message past the grace: pushed, in no statistic)
            model.add(first)
            model.clock = first.ts_us if model.clock is None else max(model.clock, first.ts_us)
        # One event per entry: the next is the next entry.
        self.at += 1
        self.tick_entry = None
        return model

    def deletion(self, topic: str) -> tuple[int, ...]:
        """Walk to the delete entry of `topic`: it must be the partition's next event or
        delete not yet published. The topic's windows start afresh after it. The clocks its
        deletion may carry: the deleted topic's (0: none), or also 0 when every window of it
        was empty (an aggregator rebuilt from a log trimmed past its events does not hold
        such a topic, where one that applied them still does)."""
        entry = self._next_yielding()
        if entry is None or entry.deleted != topic:
            raise Broken(self._misplaced(f"a deletion of {topic}", topic, None))
        self.at += 1
        self.tick_entry = None
        model = self.topics.pop(topic, None)
        if model is None or model.clock is None:
            return (0,)
        if not model.counted and all(n == 0 for n, _ in model.windows().values()):
            return (model.clock, 0)
        return (model.clock,)

    def _misplaced(self, what: str, topic: str, value: float | None) -> str:
        """Why an update is not the one the log yields next (only when it is not)."""
        expected = self._next_yielding()
        if expected is None:
            due = "nothing, every entry published (twice?)"
        elif expected.deleted is not None:
            due = f"the deletion of {expected.deleted}"
        else:
            assert expected.events is not None
            due = f"the update of {expected.topic} event {mark(expected.events[0])}"
        if value is not None:
            # An event logged before a delete of its topic already published: the old
            # topic's update after its deletion.
            for at in range(self.at):
                entry = self.journal[at]
                if entry.events is not None and mark(entry.events[0]) == value:
                    deleted_since = any(e.deleted == topic for e in self.journal[at + 1 : self.at])
                    if deleted_since:
                        return f"{what}, of {topic} as it was before its deletion, after it"
        return f"{what} came where the log yields {due}"

    def tick(self, topic: str, clock: int) -> TopicModel:
        """Walk to the tick entry that yielded `topic`'s tick update at `clock`: no event
        entry may be passed on the way."""
        if self.tick_entry is not None and topic not in self.ticked:
            entry = self.journal[self.tick_entry]
            assert entry.ticks is not None
            if entry.ticks.get(topic) == clock:
                self.ticked.add(topic)
                return self.topics[topic]
        while self.at < len(self.journal):
            entry = self.journal[self.at]
            if entry.events is not None or entry.deleted is not None:
                break
            self._apply(entry)
            self.at += 1
            if entry.ticks is not None and entry.ticks.get(topic) == clock:
                self.tick_entry, self.ticked = self.at - 1, {topic}
                return self.topics[topic]
        raise Broken(f"a tick update of {topic} at {clock} that no tick entry yields here")


class Checker:
    """The invariants, checked as updates are delivered and after every step."""

    def __init__(self, store_parts: int) -> None:
        self.models: list[Model] = []
        self.last_id: dict[int, tuple[str, int, int]] = {}
        self.delivered: Counter[float] = Counter()
        """Each event's updates delivered."""
        self.copies: dict[float, int] = {}
        """The events logged more than once, and how many times: a batch repeated with its
        key after the key's window (`World.send`), each copy an event of its own."""
        self.deletions: Counter[str] = Counter()
        """Each topic's deletions delivered."""
        self.failure: Broken | None = None
        self.updates: list[Update] = []
        """Every update delivered, in delivery order."""
        self.tenures: list[list[str]] = [[] for _ in range(store_parts)]
        """Per partition, the tokens its accepted publishes were made under, in turn."""
        self.produced: frozenset[str] = frozenset()
        """Topics pushsvc appends to itself (a session topic): their events' values are no
        identity (a session's duration), so their updates are counted per topic."""
        self.produced_delivered: Counter[str] = Counter()

    def attach(self, store: FaultyStore) -> None:
        self.models = [Model(journal) for journal in store.journals]

    def accepted(self, index: int, fence: str) -> None:
        if self.failure is None:
            try:
                self._accepted(index, fence)
            except Broken as exc:
                self.failure = exc

    def _accepted(self, index: int, fence: str) -> None:
        seen = self.tenures[index]
        if seen and seen[-1] == fence:
            return
        if fence in seen:
            raise Broken(
                f"partition {index} accepted a publish under tenure {fence} after tenure "
                f"{seen[-1]} had published: two holders at once"
            )
        seen.append(fence)

    def on_updates(self, updates: list[Update]) -> None:
        """A web process's consumer: every update as delivered. The first broken invariant
        is kept (the store would only log it) and raised after the step."""
        if self.failure is None:
            try:
                self._check(updates)
            except Broken as exc:
                self.failure = exc

    def _check(self, updates: list[Update]) -> None:
        for update in updates:
            partition = update.id.partition
            mark = (update.id.epoch, update.id.ms, update.id.seq)
            last = self.last_id.get(partition)
            if last is not None and (last[0] != mark[0] or last[1:] >= mark[1:]):
                raise Broken(f"update id {update.id} after {last} in partition {partition}")
            self.last_id[partition] = mark
            self.updates.append(update)
            if update.kind is Kind.POINT:
                continue  # a closed series bucket of a derived topic's source: its deriver's
            model = self.models[partition]
            if update.is_deletion:
                clocks = model.deletion(update.topic)
                if update.clock_us not in clocks:
                    raise Broken(
                        f"the deletion of {update.topic} at {update.id} says clock "
                        f"{update.clock_us}, the model {clocks[0]}"
                    )
                self.deletions[update.topic] += 1
                continue
            body = orjson.loads(update.data)
            if update.topic in self.produced:
                self._check_produced(update, body, model)
                continue
            if body["reason"] == "event":
                echo = body["event"]
                value = echo["value"] if "value" in echo else echo["data"]["v"]
                if self.delivered[value] >= self.copies.get(value, 1):
                    raise Broken(f"event {value} of {update.topic} yielded two updates")
                self.delivered[value] += 1
                topic_model = model.event(update.topic, value)
            else:
                topic_model = model.tick(update.topic, update.clock_us)
            want = topic_model.windows()
            got = {k: (w["count"], float(w["sum"])) for k, w in body["windows"].items()}
            if got != want:
                raise Broken(f"{update.topic} at {update.id}: windows {got}, the model {want}")
            counted = {
                k: {kind: c["count"] for kind, c in w["messages"].items()}
                for k, w in body["windows"].items()
                if "messages" in w
            }
            if counted != topic_model.messages():
                raise Broken(
                    f"{update.topic} at {update.id}: messages {counted}, the model "
                    f"{topic_model.messages()}"
                )

    def _check_produced(self, update: Update, body: dict[str, Any], model: Model) -> None:
        """An update of a topic pushsvc appends to: walked in log order as any other (one per
        entry, counted per topic); its sums only close to the model's, its values being
        fractions of a second, summed in another order."""
        if body["reason"] == "event":
            self.produced_delivered[update.topic] += 1
            topic_model = model.event(update.topic, body["event"]["value"])
        else:
            topic_model = model.tick(update.topic, update.clock_us)
        want = topic_model.windows()
        got = {k: (w["count"], float(w["sum"])) for k, w in body["windows"].items()}
        if got.keys() != want.keys() or any(
            got[k][0] != want[k][0] or not math.isclose(got[k][1], want[k][1], abs_tol=1e-6)
            for k in want
        ):
            raise Broken(f"{update.topic} at {update.id}: windows {got}, the model {want}")


@dataclass(frozen=True)
class Batch:
    """A batch the producer sent with an idempotency key: what a retry or a repeat sends."""

    topic: str
    event: Event
    key: Idempotency


def _keyed(topic: str, event: Event, key: str, window_ms: int) -> Idempotency:
    """`key` for this body: its digest is the request's, as a web process takes it."""
    body = f"{topic} {mark(event)} {event.ts_us}".encode()
    return Idempotency(key, hashlib.sha256(body).digest(), window_ms)


@dataclass(eq=False)
class Process:
    """One `pushsvc aggregate` process: its broker and its partition pool."""

    name: str
    broker: MemoryBroker
    pool: PartitionPool
    paused_until: float = 0.0
    rebuilds: int = 0
    task: greenlet | None = None
    """Its step under way, stalled in the middle (a greenlet, resumed when stepped)."""
    owned: frozenset[tuple[int, int]] = frozenset()
    """The partitions its pool owned when its last step returned (finished or stalled): a
    process's leases change only in its own steps, so this is what it owns between them."""
    owned_before: frozenset[tuple[int, int]] = frozenset()
    took_at: float = float("-inf")
    """When it last took a partition (its first takeover, or one handed to it)."""
    gave_at: float = float("-inf")
    """When it last gave one up (handed over to a newcomer, or lost), holding others still."""


class World:
    """One seeded run (see the module's doc)."""

    def __init__(self, seed: int, *, sides: bool = True) -> None:
        """`sides=False`: no session or derive rule, whatever the seed draws (the world as it
        was before they were added: what the regression seeds replay)."""
        self.seed = seed
        rng = self.rng = random.Random(seed)
        self.clock = ManualClock()
        self.began = self.clock()
        self.partitions = rng.randint(1, 4)
        # One world in four has only single transient errors: no crash, pause or member
        # change, so no partition may be rebuilt cold after it was first taken.
        self.transient_only = seed % 4 == 0
        self.faults = Faults(self.clock)
        self.checker = Checker(self.partitions)
        self.store = WatchedStore(
            self.checker, self.partitions, clock=self.clock, faults=self.faults
        )
        self.checker.attach(self.store)
        self.tick_us = rng.choice((0, S))
        self.topic_ttl_us = rng.choice((0, 2 * S))
        self.topics = [f"t{i}" for i in range(rng.randint(1, 4))]
        self.topics += [f"c.{i}" for i in range(rng.randint(0, 2))]
        self.processes: list[Process] = []
        self.started = 0
        self.web = AtOnceBroker(self.store, name="web")
        self.web.consume_updates(self.checker.on_updates)
        self.value = 0
        self.acknowledged: set[float] = set()
        self.trace: list[tuple[float, str, tuple[object, ...]]] = []
        """(seconds into the run, what happened, its arguments): see `note`."""
        self._logged_values: Counter[float] = Counter()
        self._logged_deletes: Counter[str] = Counter()
        self._scanned = [0] * self.partitions
        self.remembered: dict[str, tuple[bytes, float]] = {}
        """The model of the store's idempotency keys: by key, the digest of the batch it
        logged last and when the store forgets it."""
        self.batches: list[Batch] = []
        """Every batch sent with a key, for repeats."""
        self.unsettled: list[Batch] = []
        """Batches whose attempt failed, not retried yet: retried later, maybe past the key's
        window."""
        self.copies: Counter[float] = Counter()
        """How many times each event was logged (more than once: repeated past its window)."""
        self.taken: dict[int, int] = {}
        """Per partition, how many times a process took it (each time: a cold rebuild)."""
        self.lease_us, self.lateness_us = LEASE_US, LATENESS_US
        self._logged_produced: Counter[str] = Counter()
        self.sessions = session_side.maybe(self) if sides else None
        """A session rule and its sessionizers, in some seeds (their own draws)."""
        self.derived = (
            derive_side.maybe(self, Rules((COUNTED, DERIVE_SOURCES), TIMED)) if sides else None
        )
        """A derive rule and its derivers, in some seeds (their own draws)."""
        self.sides: list[LeasedSide] = [s for s in (self.sessions, self.derived) if s is not None]
        self.rules = RULES
        if self.sides:
            self.rules = Rules(
                (COUNTED,) if self.derived is None else (COUNTED, DERIVE_SOURCES),
                TIMED,
                derives=() if self.derived is None else (self.derived.rule,),
                sessions=() if self.sessions is None else self.sessions.rules,
            )
            self.checker.produced = frozenset(side.topic for side in self.sides)
        if self.derived is not None:
            # A source forgotten (idle past the ttl) loses its clock and its buckets: its
            # derived topic stops until it is posted to again, and a boundary over the
            # forgotten buckets is not the events' (a limit, `simulation.derived`).
            self.topic_ttl_us = 0
            self.derived.begin(self.rules)
        for _ in range(rng.randint(1, 2 if self.transient_only else 3)):
            self.start()

    def note(self, what: str, *args: object) -> None:
        """One line of the run's trace (the last ones are shown when it breaks): `what % args`,
        formatted only if shown."""
        self.trace.append((self.clock() - self.began, what, args))

    def lines(self, last: int | None = None) -> list[str]:
        """The trace as text (its last `last` lines)."""
        shown = self.trace if last is None else self.trace[-last:]
        return [f"{at:7.2f} s  {what % args}" for at, what, args in shown]

    # -- the processes -------------------------------------------------------------------

    def _wall_us(self) -> int:
        return WALL_BASE_US + int(self.clock() * S)

    wall_us = _wall_us

    def broken(self, what: str) -> Broken:
        return Broken(what)

    def pass_step(self, extra: Callable[[], None], seconds: float) -> None:
        """One step of the settling: every process steps, then `extra`, and time passes."""
        for process in list(self.processes):
            self.step_process(process)
        extra()
        self.clock.advance(seconds)
        self._check_step()

    def all_published(self) -> bool:
        return self._all_published()

    def _aggregator(self) -> Aggregator:
        return Aggregator(
            rules=self.rules,
            wall_clock=self._wall_us,
            topic_ttl_us=self.topic_ttl_us,
            lateness_us=LATENESS_US,
        )

    def start(self) -> None:
        self.started += 1
        name = f"p{self.started}"
        broker = AtOnceBroker(self.store, name=name)
        process: Process

        def rebuild(run: object) -> None:
            process.rebuilds += 1
            run()  # type: ignore[operator]

        pool = PartitionPool(
            broker,
            self._aggregator,
            lease_us=LEASE_US,
            tick_us=self.tick_us,
            topic_ttl_us=self.topic_ttl_us,
            clock=self.clock,
            spawn=rebuild,
            max_block_s=0.0,
            sleep=lambda _: None,
            # Often, so that short runs trim and checkpoint many times.
            checkpoint_interval_s=0.5,
        )
        process = Process(name, broker, pool)
        self.processes.append(process)
        self.note("start %s", name)

    def crash(self, process: Process) -> None:
        """Every object of the process dropped; its leases and membership lapse."""
        # The moments the elastic scenarios kill at on real Redis (kill -9 of a newcomer as
        # it takes over, of the first process while it hands partitions over), counted.
        if self.clock() - process.took_at < LEASE_S:
            self.faults.fired["death after take"] += 1
        if self.clock() - process.gave_at < LEASE_S and process.pool.owned:
            self.faults.fired["death mid-handover"] += 1
        self.processes.remove(process)
        if process.task is not None:
            process.task.throw(GreenletExit)  # a step stalled midway never resumes
        process.pool.close()
        process.broker.close()
        self.note("crash %s", process.name)

    def stop(self, process: Process) -> None:
        self.processes.remove(process)
        process.pool.leave()
        process.broker.close()
        self.note("stop %s", process.name)

    def step_process(self, process: Process) -> None:
        """One step of the process's pool, in a greenlet of its own, so that a stall in the
        middle of it (`Faults.stalls`) comes back here and the step resumes later."""
        if process.paused_until > self.clock():
            return
        if process.task is None and not self.faults.stalls:
            # Nothing can stall it: no greenlet needed (a fifth of the run time).
            before = process.owned
            process.pool.step()
            self._count_taken(process, before)
            return
        if process.task is None:
            process.owned_before = process.owned
            process.task = greenlet(process.pool.step)
        stalled = process.task.switch()
        if not process.task.dead and stalled == DIES:
            self.crash(process)  # killed in the middle of its step
            return
        if not process.task.dead:
            process.owned = frozenset(process.pool.owned)  # what it holds while it stalls
            process.paused_until = self.clock() + stalled
            self.note("%s stalls until %.2f", process.name, process.paused_until)
            return
        process.task = None
        self._count_taken(process, process.owned_before)

    def _count_taken(self, process: Process, before: frozenset[tuple[int, int]]) -> None:
        owned = process.owned = frozenset(process.pool.owned)
        if owned == before:
            return  # most steps
        for shard in owned - before:
            self.taken[shard[0]] = self.taken.get(shard[0], 0) + 1
            process.took_at = self.clock()
        if before - owned and owned:
            process.gave_at = self.clock()

    # -- the producer --------------------------------------------------------------------

    def append(self, share: float = 1.0) -> None:
        """One event for one of the first `share` of the topics (the others go idle)."""
        rng = self.rng
        topic = rng.choice(self.topics[: max(1, round(len(self.topics) * share))])
        self.value += 1
        value = float(self.value)
        # Mostly on time, sometimes late (refused, or within the lateness: applied late).
        ts = self._wall_us() - rng.choice((0, 0, 0, S // 2, 2 * S, 4 * S))
        event = _drawn_event(rng, value, ts)
        if rng.random() >= 0.5:
            # As a POST without a key: past the grace, kept on the topic's late stream.
            if self.send_keeping_late(topic, event) in ("logged", "late"):
                self.acknowledged.add(value)
            return  # failed: not acknowledged; it may be in the log all the same
        batch = Batch(
            topic, event, _keyed(topic, event, f"k{self.value}", rng.choice(KEY_WINDOWS_MS))
        )
        self.batches.append(batch)
        if self.send_batch(batch) == "failed":
            self.faults.fired[
                f"keyed append failed, logged {batch.key.key in self.remembered}"
            ] += 1
            if rng.random() < 0.5:
                self.send_batch(batch)  # a retry at once: its key cannot log it twice
            else:
                self.unsettled.append(batch)

    def send_batch(self, batch: Batch) -> str:
        """Send `batch` with its key, as a producer's first attempt, retry or repeat: the
        store must answer as the model of its keys says (`self.remembered`). Its outcome."""
        key = batch.key
        now = self.clock()
        kept = self.remembered.get(key.key)
        within = kept is not None and now < kept[1]
        expected = "logged"
        if kept is not None and within:
            expected = "replayed" if kept[0] == key.digest else "reused"
        outcome = self.send(batch.topic, batch.event, key)
        if outcome == "failed" and within:
            # Refused before it ran, or ran and answered from the key: nothing logged.
            return outcome
        if outcome not in (expected, "failed") and not (outcome == "late" and not within):
            raise Broken(
                f"{batch.topic} {mark(batch.event)} with key {key.key} answered {outcome} "
                f"where its key says {expected} ({'within' if within else 'past'} its window)"
            )
        if outcome in ("logged", "replayed") and expected != "reused":
            self.acknowledged.add(mark(batch.event))
        if kept is not None:
            # The moments of a key, as reached: a repeat within the window (of the same body or
            # another), or past it; within 0.02 s of its end.
            near = " at the window's end" if abs(now - kept[1]) <= 0.02 else ""
            self.faults.fired[f"key {'within' if within else 'past'} window {outcome}{near}"] += 1
        return outcome

    def send_keeping_late(self, topic: str, event: Event) -> str:
        """One append as the ingest path makes it (`keep_late`): "logged" on the
        topic, "late" on its late stream (past the grace), or "failed". Where it logged is read
        from the journals, and must match the answer: one entry, in the one it names."""
        # The late stream is in its topic's partition: one journal, one append.
        journal = self.store.journal(topic)
        assert journal is self.store.journal(late_topic(topic))
        before = len(journal)
        try:
            answer = self.web.append_events(topic, [event], lateness_us=LATENESS_US, keep_late=True)
            outcome = "late" if answer.late else "logged"
            if answer.accepted + answer.late != 1:
                raise Broken(f"{topic} {mark(event)}: {answer}, for one event")
        except BrokerUnavailable:
            outcome = "failed"
        logged = len(journal) - before
        self.note("append %s %s %s", topic, mark(event), outcome)
        # A message past the grace: on its topic (pushed) and on its late stream (counted).
        entries = 2 if outcome == "late" and event.message is not None else 1
        if (outcome != "failed" and logged != entries) or logged > 2:
            raise Broken(f"{topic} {mark(event)}: answered {outcome}, {logged} logged")
        if logged:
            self.copies[mark(event)] += logged
            if self.copies[mark(event)] > 1:
                self.checker.copies[mark(event)] = self.copies[mark(event)]
        if outcome != "failed":
            self.faults.fired[f"unkeyed append {outcome}"] += 1
        return outcome

    def send(self, topic: str, event: Event, key: Idempotency | None) -> str:
        """One append (a web process's POST): "logged", "replayed", "reused", "late" or
        "failed". Whether it logged is read from the journal, and must match the answer."""
        journal = self.store.journal(topic)
        before = len(journal)
        try:
            answer = self.web.append_events(
                topic, [event], lateness_us=LATENESS_US, idempotency=key
            )
            outcome = "replayed" if answer.replayed else "logged"
            # A message past the grace is logged all the same (pushed, counted late).
            if answer.accepted + answer.late != 1 or (answer.late and event.message is None):
                raise Broken(f"{topic} {mark(event)}: {answer}, for one event")
        except LateEvent:
            outcome = "late"
        except IdempotencyKeyReused:
            outcome = "reused"
        except BrokerUnavailable:
            outcome = "failed"
        logged = len(journal) - before
        self.note(
            "append %s %s%s %s", topic, mark(event), "" if key is None else " " + key.key, outcome
        )
        if logged != (outcome == "logged") and not (outcome == "failed" and logged == 1):
            raise Broken(
                f"{topic} {mark(event)}: answered {outcome}, and {logged} entries were logged"
            )
        if logged:
            self.copies[mark(event)] += 1
            if self.copies[mark(event)] > 1:
                self.checker.copies[mark(event)] = self.copies[mark(event)]
            if key is not None:
                self.remembered[key.key] = (key.digest, self.clock() + key.window_ms / 1000)
        return outcome

    def repeat(self) -> None:
        """A batch sent again with its key: a retry of one whose attempt failed, or a repeat of
        any (acknowledged or not), or the key reused for another body; now, or right around
        the end of the key's window (time passing meanwhile, every process stepping)."""
        rng = self.rng
        roll = rng.random()
        if roll < 0.4 and self.unsettled:
            batch = self.unsettled.pop(rng.randrange(len(self.unsettled)))
        elif self.batches:
            batch = rng.choice(self.batches)
        else:
            return
        if roll >= 0.75:  # the same key, another body
            self.value += 1
            event = Event(float(self.value), self._wall_us(), None)
            window = rng.choice(KEY_WINDOWS_MS)
            batch = Batch(batch.topic, event, _keyed(batch.topic, event, batch.key.key, window))
            self.batches.append(batch)
        kept = self.remembered.get(batch.key.key)
        if kept is not None and rng.random() < 0.5 and kept[1] - self.clock() < 2:
            self._pass_time(kept[1] - self.clock() + rng.choice((-0.02, -0.001, 0.0, 0.001, 0.02)))
        if self.send_batch(batch) == "failed":
            self.unsettled.append(batch)

    def _pass_time(self, seconds: float) -> None:
        """Time passes as in `_turn`, every process stepping at least every 0.02 s."""
        target = self.clock() + seconds
        while self.clock() < target:
            self.clock.advance(min(0.02, target - self.clock()))
            for process in self.rng.sample(self.processes, len(self.processes)):
                self.step_process(process)

    def delete(self) -> None:
        """`DELETE /topics/{topic}` from a web process: a delete entry logged (or nothing, for
        a topic the store keeps no clock of), and the topic's latest gone at once."""
        rng = self.rng
        topic = rng.choice(self.topics)
        journal = self.store.journal(topic)
        if rng.random() < 0.2:
            # Its own draw, not one of TRANSIENT_OPERATIONS: the processes' faults as before.
            self.faults.armed["delete"] = rng.choice((Fate.FAIL, Fate.LOST))
        for _ in range(2):
            before = len(journal)
            try:
                deleted: bool | None = self.web.delete_topic(topic)
            except BrokerUnavailable:
                deleted = None  # refused, or ran with its reply lost
            logged = journal[before:]
            self.note("delete %s: %s", topic, "failed" if deleted is None else deleted)
            if len(logged) > (1 if deleted is None else deleted) or any(
                e.deleted != topic for e in logged
            ):
                raise Broken(f"delete {topic} answered {deleted} and logged {logged}")
            if deleted is None:
                continue  # again: a delete that went through answers False now
            if len(logged) != deleted:
                raise Broken(f"delete {topic} answered {deleted} and logged {logged}")
            if self.web.latest(TopicMatcher([topic])):
                raise Broken(f"{topic}'s latest is still there after its delete")
            self.faults.fired["delete logged" if deleted else "delete of no topic"] += 1
            return

    # -- the run -------------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._run()
        except Broken as exc:
            raise Broken(self._report(str(exc))) from None

    def describe(self, what: str) -> str:
        return self._report(what)

    def _report(self, what: str) -> str:
        last = "\n  ".join(self.lines(25))
        return f"seed {self.seed}: {what}\nlast steps:\n  {last}"

    def _run(self) -> None:
        rng = self.rng
        steps = rng.randint(40, 160)
        if self.transient_only:
            self._warm_up()
        for step in range(steps):
            self._turn(faulty=True, share=1 - step / steps)
            self._check_step()
        self._settle()

    def _warm_up(self) -> None:
        """Until the processes share the partitions evenly: the takes until then are the
        first ones, not rebuilds a fault caused."""
        deadline = self.clock() + 10
        while not self._balanced():
            for process in self.processes:
                self.step_process(process)
            self.clock.advance(0.02)
            if self.clock() > deadline:
                raise Broken(f"the processes never shared the partitions: {self._owners()}")
        self.taken = {index: 1 for index in range(self.partitions)}
        self.note("balanced")

    def _balanced(self) -> bool:
        if not self._all_held():
            return False
        shares = [len(p.pool.owned) for p in self.processes]
        return max(shares) - min(shares) <= 1 and all(
            len(p.pool.runners) == len(p.pool.owned) for p in self.processes
        )

    def _turn(self, *, faulty: bool, share: float) -> None:
        rng = self.rng
        roll = rng.random()
        if roll < 0.22:
            self.append(share)
        elif roll < 0.235:
            self.delete()
        elif roll < 0.25:
            self.repeat()
        elif roll < 0.6:
            if self.processes:
                self.step_process(rng.choice(self.processes))
        elif roll < 0.92:
            # Time passes, and every process not paused gets to run (a greenlet's loop).
            self.clock.advance(rng.choice((0.02, 0.1, 0.2)))
            for process in rng.sample(self.processes, len(self.processes)):
                self.step_process(process)
        elif faulty:
            self._fault()
        for side in self.sides:
            side.turn(faulty=faulty)

    def _fault(self) -> None:
        rng = self.rng
        if self.transient_only:
            # One at a time, a lease period apart: each a single error.
            if not self.faults.armed and self.clock() > self.faults.fired_at + LEASE_S:
                operation = rng.choice(TRANSIENT_OPERATIONS)
                fate = rng.choice((Fate.FAIL, Fate.LOST))
                self.faults.armed[operation] = fate
                self.note("arm %s %s", operation, fate.value)
            return
        kind = rng.random()
        if kind < 0.4:
            operation = rng.choice(TRANSIENT_OPERATIONS)
            fate = rng.choice((Fate.FAIL, Fate.LOST))
            self.faults.armed[operation] = fate
            self.note("arm %s %s", operation, fate.value)
        elif kind < 0.55 and self.processes:
            self.crash(rng.choice(self.processes))
        elif kind < 0.7 and len(self.processes) < 4:
            if self.processes:
                self.faults.fired["member joins"] += 1
            self.start()
        elif kind < 0.8 and self.processes:
            process = rng.choice(self.processes)
            if process.task is None:
                self.faults.fired["graceful stop"] += 1
                self.stop(process)
            else:
                self.crash(process)  # stalled midway: it cannot stop gracefully
        elif kind < 0.9:
            operation = rng.choice(TRANSIENT_OPERATIONS)
            dies = rng.random() < 0.3
            self.faults.stalls[operation] = DIES if dies else LEASE_S * rng.uniform(1.2, 3)
            self.note("arm %s %s", operation, "death" if dies else "stall")
        elif self.processes:
            process = rng.choice(self.processes)
            process.paused_until = self.clock() + LEASE_S * rng.uniform(1.2, 3)
            self.faults.fired["pause past the lease"] += 1
            self.note("pause %s until %.2f", process.name, process.paused_until)

    def _check_step(self) -> None:
        if self.checker.failure is not None:
            raise self.checker.failure

    def _settle(self) -> None:
        """The faults stop: every partition held again within two lease periods, then
        everything logged published."""
        self.faults.armed.clear()
        self.faults.stalls.clear()
        if not self.processes:
            self.start()
        stopped = self.clock()
        woken = max(p.paused_until for p in self.processes)
        self.note("faults stop")
        while not self._all_published():
            for process in list(self.processes):
                self.step_process(process)
            self.clock.advance(0.02)
            self._check_step()
            now = self.clock()
            # Paused processes wake within the period; count it from when the last wakes.
            if now > max(stopped, woken) + 2 * LEASE_S and not self._all_held():
                raise Broken(f"not every partition held within two lease periods: {self._owners()}")
            if now > max(stopped, woken) + 30:
                raise Broken("not everything logged was published within 30 s")
        self._check_step()
        if self.sides:
            self._settle_sides()
        self._check_end()

    def _settle_sides(self) -> None:
        """The sessionizers and derivers: one process at least, none paused; time passes until
        their sources' clocks may move past every session's end and every boundary (events
        that move them there, `close`); then everything they should log is logged."""
        sides = self.sides
        for side in sides:
            side.prepare()

        def step_sides() -> None:
            for side in sides:
                side.step_all()

        target = self.clock() + max(side.wait_s for side in sides)
        while self.clock() < target:
            # Under a lease period at a time: every lease is renewed in time.
            self.pass_step(step_sides, min(0.45, target - self.clock()))
        for side in sides:
            side.close()
        deadline = self.clock() + 30
        while True:
            self.pass_step(step_sides, 0.1)
            for side in sides:
                side.check()
            if self._all_published() and not any(side.missing() for side in sides):
                return
            if self.clock() > deadline:
                missing = "; ".join(m for side in sides if (m := side.missing()))
                raise Broken(f"{missing or 'not all published'}, 30 s after the faults stopped")

    def _owners(self) -> dict[int, list[str]]:
        owners: dict[int, list[str]] = {i: [] for i in range(self.partitions)}
        for process in self.processes:
            for shard in process.owned:
                owners[shard[0]].append(process.name)
        return owners

    def _all_held(self) -> bool:
        return all(len(names) == 1 for names in self._owners().values())

    def _logged(self) -> Counter[float]:
        """Every event logged so far, with its copies, and every delete (what the journals
        gained since the last call, added: they only grow)."""
        for part in self.store.parts:
            journal = self.store.journals[part.index]
            for entry in journal[self._scanned[part.index] :]:
                if entry.topic in self.checker.produced:
                    if entry.events is not None:
                        self._logged_produced[entry.topic] += 1
                elif entry.events is not None:
                    self._logged_values[mark(entry.events[0])] += 1
                elif entry.deleted is not None:
                    self._logged_deletes[entry.deleted] += 1
            self._scanned[part.index] = len(journal)
        return self._logged_values

    def _all_published(self) -> bool:
        logged = self._logged()
        return (
            self._all_held()
            and logged <= self.checker.delivered
            and self._logged_deletes <= self.checker.deletions
            and self._logged_produced <= self.checker.produced_delivered
        )

    def _check_end(self) -> None:
        for process in self.processes:
            # `Process.owned` stands in for the pool's own answer between steps: were a lease
            # to change outside a step, the checks above would have read a stale one.
            if process.owned != frozenset(process.pool.owned):
                raise AssertionError(
                    f"the world's record of what {process.name} owns, {sorted(process.owned)}, "
                    f"is not its pool's, {process.pool.owned}"
                )
        logged = Counter(self._logged())
        if not self.acknowledged <= logged.keys():
            raise Broken(
                f"acknowledged events not logged: {sorted(self.acknowledged - logged.keys())}"
            )
        if logged != self.checker.delivered:
            missing = sorted((logged - self.checker.delivered).elements())
            raise Broken(f"logged events without an update: {missing}")
        if self._logged_deletes != self.checker.deletions:
            raise Broken(
                f"deletes logged {dict(self._logged_deletes)}, deletions delivered "
                f"{dict(self.checker.deletions)}"
            )
        if self._logged_produced != self.checker.produced_delivered:
            raise Broken(
                f"events logged by pushsvc {dict(self._logged_produced)}, their updates "
                f"delivered {dict(self.checker.produced_delivered)}"
            )
        self._check_reads()
        if self.transient_only:
            rebuilt = {i: n for i, n in self.taken.items() if n > 1}
            if rebuilt:
                raise Broken(f"a transient error made partitions rebuild cold: {rebuilt}")

    def _check_reads(self) -> None:
        """What a web process reads for a stream that starts or resumes: the history replays
        exactly what was delivered, and each topic's latest update is its last one delivered
        (unless a forget entry dropped it)."""
        replayed = self.web.replay(Cursor(), EVERYTHING)
        delivered = self.checker.updates

        # Across partitions a replay merges by time; within one, it is the delivery order.
        def by_partition(updates: list[Update]) -> dict[int, list[str]]:
            found: dict[int, list[str]] = {}
            for update in updates:
                found.setdefault(update.id.partition, []).append(update.id.text)
            return found

        if replayed.lost or by_partition(replayed.updates) != by_partition(delivered):
            raise Broken(
                f"the history replays {len(replayed.updates)} updates, lost "
                f"{sorted(replayed.lost)}; {len(delivered)} were delivered"
            )
        # A series point (a derived topic's source's) is in the history, never a latest.
        last = {u.topic: u.id for u in delivered if u.kind is not Kind.POINT}
        deleted = {u.topic for u in delivered if u.id == last.get(u.topic) and u.is_deletion}
        latest = {t: u.id for t, u in self.web.latest(EVERYTHING).items()}
        forgotten = {
            topic
            for journal in self.store.journals
            for e in journal
            if e.forgotten is not None
            for topic in e.forgotten
        }
        for topic, update_id in last.items():
            if topic in deleted:
                if topic in latest:
                    raise Broken(f"{topic}'s latest is {latest[topic]}, after its deletion")
                continue
            if latest.get(topic) not in (update_id, None) or (
                topic not in latest and topic not in forgotten
            ):
                raise Broken(f"{topic}'s latest is {latest.get(topic)}, not {update_id}")
