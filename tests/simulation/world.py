"""A deterministic simulation of pushsvc's core: aggregator processes, a producer and a web
process's consumer on the memory twin (`pushsvc.broker.memory`), in one process, under a seeded
scheduler.

Each process is what `pushsvc aggregate` runs (`PartitionPool`, its `ShardRunner`s), stepped
by the scheduler instead of a greenlet, its rebuilds inline. The scheduler draws, from the
seed alone, what happens next: a producer's append (retried with its idempotency key when
the reply is lost), a process's step, time passing, a crash (every object of the process
dropped, nothing released), a restart, a pause past the lease, a member joining or leaving
gracefully, a transient store error (refused, or run with its reply lost) on any one call.
Then the faults stop and the world settles.

After every step the invariants hold (`Checker`): every logged event yields exactly one
update, per topic in log order, with ids increasing per partition; each update's count and
sum over every window equal a model's (`Model`); the publishes a partition accepts never go
back to a tenure after a later one began; once the faults stop, every partition is held
within two lease periods, and then the history replays what was delivered and each topic's
latest is its last update; and in a world where only single transient errors happen, no
partition is ever rebuilt cold after it was first taken. A run that breaks one raises
`Broken`, with the seed and the last steps.
"""

from __future__ import annotations

import bisect
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import orjson
from greenlet import GreenletExit, greenlet

from pushsvc.aggregate.aggregator import Aggregator
from pushsvc.aggregate.partition_pool import PartitionPool
from pushsvc.broker.base import Applied
from pushsvc.broker.memory import Fate, ManualClock, MemoryBroker, Store
from pushsvc.broker.shared_log import Entry
from pushsvc.core.cursor import Cursor
from pushsvc.core.event import Event
from pushsvc.core.idempotency import Idempotency
from pushsvc.core.topics import TopicMatcher
from pushsvc.core.updates import Update, UpdateDraft
from pushsvc.errors import BrokerUnavailable, LateEvent
from pushsvc.rules.analytics import Rule, Rules

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


_OK = Fate.OK  # bound once: a member looked up on its enum class costs a call per store call
DIES = -1.0
"""A stall that never ends: the process is killed right before the call."""


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


class WatchedStore(Store):
    """The store, telling the checker which tenure each accepted publish was made under."""

    def __init__(self, checker: Checker, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.checker = checker

    def publish(
        self,
        index: int,
        drafts: Sequence[UpdateDraft],
        applied: Applied | None,
        fence: str | None,
    ) -> list[Update]:
        published = super().publish(index, drafts, applied, fence)
        self.checker.accepted(index, fence or "")
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
        self.clock: int | None = None

    def add(self, ts: int, value: float) -> None:
        at = bisect.bisect_right(self.times, ts)  # after the equal ones: log order
        self.times.insert(at, ts)
        self.values.insert(at, value)

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
                    model = self.topics[topic] = TopicModel(topic.startswith("c."))
                model.clock = clock if model.clock is None else max(model.clock, clock)

    def event(self, topic: str, value: float) -> TopicModel:
        """Walk to the event `value` of `topic`: it must be the partition's next event not
        yet published."""
        while self.at < len(self.journal):
            entry = self.journal[self.at]
            if entry.events is not None:
                assert entry.topic is not None
                first = entry.events[0]
                if entry.topic != topic or first.value != value:
                    raise Broken(
                        f"an update for {topic} event {value} came before the update of "
                        f"{entry.topic} event {first.value}, logged before it"
                    )
                model = self.topics.get(topic)
                if model is None:
                    model = self.topics[topic] = TopicModel(topic.startswith("c."))
                model.add(first.ts_us, first.value)
                model.clock = first.ts_us if model.clock is None else max(model.clock, first.ts_us)
                # One event per entry: the next is the next entry.
                self.at += 1
                self.tick_entry = None
                return model
            self._apply(entry)
            self.at += 1
            self.tick_entry = None
        raise Broken(f"an update for {topic} event {value}, which is not in the log (twice?)")

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
            if entry.events is not None:
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
        self.delivered: set[float] = set()
        self.failure: Broken | None = None
        self.updates: list[Update] = []
        """Every update delivered, in delivery order."""
        self.tenures: list[list[str]] = [[] for _ in range(store_parts)]
        """Per partition, the tokens its accepted publishes were made under, in turn."""

    def attach(self, store: Store) -> None:
        self.models = [Model(part.journal) for part in store.parts]

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
            body = orjson.loads(update.data)
            model = self.models[partition]
            if body["reason"] == "event":
                value = body["event"]["value"]
                if value in self.delivered:
                    raise Broken(f"event {value} of {update.topic} yielded two updates")
                self.delivered.add(value)
                topic_model = model.event(update.topic, value)
            else:
                topic_model = model.tick(update.topic, update.clock_us)
            want = topic_model.windows()
            got = {k: (w["count"], float(w["sum"])) for k, w in body["windows"].items()}
            if got != want:
                raise Broken(f"{update.topic} at {update.id}: windows {got}, the model {want}")


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

    def __init__(self, seed: int) -> None:
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
            self.checker, self.partitions, clock=self.clock, faults=self.faults, journal=True
        )
        self.checker.attach(self.store)
        self.tick_us = rng.choice((0, S))
        self.topic_ttl_us = rng.choice((0, 2 * S))
        self.topics = [f"t{i}" for i in range(rng.randint(1, 4))]
        self.topics += [f"c.{i}" for i in range(rng.randint(0, 2))]
        self.processes: list[Process] = []
        self.started = 0
        self.web = MemoryBroker(self.store, name="web")
        self.web.consume_updates(self.checker.on_updates)
        self.value = 0
        self.acknowledged: set[float] = set()
        self.trace: list[tuple[float, str, tuple[object, ...]]] = []
        """(seconds into the run, what happened, its arguments): see `note`."""
        self._logged_values: set[float] = set()
        self._scanned = [0] * self.partitions
        self.taken: dict[int, int] = {}
        """Per partition, how many times a process took it (each time: a cold rebuild)."""
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

    def _aggregator(self) -> Aggregator:
        return Aggregator(
            rules=RULES,
            wall_clock=self._wall_us,
            topic_ttl_us=self.topic_ttl_us,
            lateness_us=LATENESS_US,
        )

    def start(self) -> None:
        self.started += 1
        name = f"p{self.started}"
        broker = MemoryBroker(self.store, name=name)
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
        event = Event(value, ts, None)
        key = Idempotency(f"k{self.value}", bytes(32), 60_000) if rng.random() < 0.5 else None
        for _ in range(2):
            try:
                self.web.append_events(topic, [event], lateness_us=LATENESS_US, idempotency=key)
            except LateEvent:
                self.note("append %s %s late", topic, value)
                return
            except BrokerUnavailable:
                self.note("append %s %s failed", topic, value)
                if key is None:
                    return  # not acknowledged; it may be in the log all the same
                continue  # a retry with its key cannot log it twice
            self.acknowledged.add(value)
            self.note("append %s %s", topic, value)
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
        if roll < 0.25:
            self.append(share)
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
        self._check_end()

    def _owners(self) -> dict[int, list[str]]:
        owners: dict[int, list[str]] = {i: [] for i in range(self.partitions)}
        for process in self.processes:
            for shard in process.owned:
                owners[shard[0]].append(process.name)
        return owners

    def _all_held(self) -> bool:
        return all(len(names) == 1 for names in self._owners().values())

    def _logged(self) -> set[float]:
        """Every event logged so far (what the journals gained since the last call, added:
        they only grow)."""
        for part in self.store.parts:
            journal = part.journal
            for entry in journal[self._scanned[part.index] :]:
                if entry.events is not None:
                    self._logged_values.add(entry.events[0].value)
            self._scanned[part.index] = len(journal)
        return self._logged_values

    def _all_published(self) -> bool:
        logged = self._logged()
        return self._all_held() and logged <= self.checker.delivered

    def _check_end(self) -> None:
        for process in self.processes:
            # `Process.owned` stands in for the pool's own answer between steps: were a lease
            # to change outside a step, the checks above would have read a stale one.
            if process.owned != frozenset(process.pool.owned):
                raise AssertionError(
                    f"the world's record of what {process.name} owns, {sorted(process.owned)}, "
                    f"is not its pool's, {process.pool.owned}"
                )
        logged = set(self._logged())
        if not self.acknowledged <= logged:
            raise Broken(f"acknowledged events not logged: {sorted(self.acknowledged - logged)}")
        if logged != self.checker.delivered:
            missing = sorted(logged - self.checker.delivered)
            raise Broken(f"logged events without an update: {missing}")
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
        last = {u.topic: u.id for u in delivered}
        latest = {t: u.id for t, u in self.web.latest(EVERYTHING).items()}
        forgotten = {
            topic
            for part in self.store.parts
            for e in part.journal
            if e.forgotten is not None
            for topic in e.forgotten
        }
        for topic, update_id in last.items():
            if latest.get(topic) not in (update_id, None) or (
                topic not in latest and topic not in forgotten
            ):
                raise Broken(f"{topic}'s latest is {latest.get(topic)}, not {update_id}")
