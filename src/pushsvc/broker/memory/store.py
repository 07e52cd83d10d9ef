"""The memory store: what Redis holds for a deployment, in one process.

`pushsvc serve` keeps its event log, leases and published state here (one process is the
whole deployment), and a simulation plays a deployment of many processes on one store
(`tests/simulation/`). Each method is one of the Redis broker's scripts or round trips (named
beside it), applied atomically as Redis applies a script: nothing in it yields to another
greenlet. Stream ids, lease expiry and the members' scores come from `clock`, as Redis's own
clock gives them (the wall clock when serving; a test's own). Every process
of a deployment (its `MemoryBroker`s, leases, logs and waiters) shares one store, as processes
share one Redis; dropping a process drops its objects, never the store.

The log is bounded in bytes as Redis is by `maxmemory`: a partition's log holds at most
`history_bytes` of messages (their types and data) not yet published, the bytes its history
keeps once they are; past it an append is refused (BrokerFull: a `503 broker_full`, nothing
logged). Once an entry is published its messages' data is dropped from the log (their types
stay, which the windows count): a rebuild replays the events before the published position
into windows, which never read a message's data, and every message after it still has its
data. So the log keeps events for the widest window, and message data only until published.

Every round trip of the classes on the store (`MemoryBroker`, its logs, leases and waiter)
goes through `run`, whole: the one seam where a test's subclass injects transient errors
(`tests/support/memory_core.py`).
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import chain
from typing import TypeVar

import gevent.event

from pushsvc.broker.base import (
    DEFAULT_ALERT_RETENTION_US,
    DEFAULT_HISTORY_BYTES,
    Appended,
    Applied,
    UpdatesHandler,
)
from pushsvc.broker.memory.clock import Clock
from pushsvc.broker.memory.keys import RememberedKeys
from pushsvc.broker.memory.published import Position, Published, next_id
from pushsvc.broker.memory.series import KeptSeries
from pushsvc.broker.publish_payload import PublishPayload, build_payload
from pushsvc.broker.shared_log import (
    ENTRY_EVENTS,
    FIRST,
    Entry,
    entry_slices,
    position,
)
from pushsvc.broker.tenure import LeaseCode
from pushsvc.core.checkpoint import Checkpoint
from pushsvc.core.event import Event, Message
from pushsvc.core.idempotency import MAX_KEYS_PER_PARTITION, Idempotency
from pushsvc.core.lateness import late_topic, past_grace, split_late
from pushsvc.core.partitions import Partition, check_partitions, partition_of
from pushsvc.core.updates import Update, UpdateDraft
from pushsvc.errors import (
    BrokerFull,
    Fenced,
    PublishedAlready,
    TooManyTopics,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
_SERIES_EXPIRY_S = 60.0
"""How often expired series tiers are looked for, as publishes come."""

# Bound once: looking a member up on its enum class costs a call of its own, and a simulation
# makes hundreds of thousands of store calls.
_HELD, _RENEWED, _TAKEN, _RESUMED = (
    LeaseCode.HELD,
    LeaseCode.RENEWED,
    LeaseCode.TAKEN,
    LeaseCode.RESUMED,
)


def _holder(lease: tuple[str, int] | None, now_ms: int) -> str | None:
    """Who holds a lease (token, expiry in ms) at `now_ms`: nobody once it expired."""
    if lease is None or lease[1] <= now_ms:
        return None
    return lease[0]


PackedEvent = (
    tuple[float | None, int, tuple[str, ...] | None]
    | tuple[float | None, int, tuple[str, ...] | None, Message]
    | tuple[float | None, int, tuple[str, ...] | None, Message, int]
)
"""An event as the log keeps it: value, time, flat tags, and its message where it has one,
then its mark where it has one (`Event.mark`)."""
"""An event as the log keeps it: plain tuples of immutable values (its tags flat, key then
value: a tuple holding a dict, or `tuple(tags.items())`, stays tracked), which the garbage
collector stops tracking after its first pass. As `Event` objects, the
events of the widest window (millions, at tens of thousands a second) were all tracked, and
each full pass of the collector walked them: 100-200 ms of a held loop, several a second
under 10,000-event batches (2026-11-27)."""


@dataclass(slots=True, eq=False)
class LoggedEvents:
    """A batch's entry as the log keeps it (`Entry` with its events packed); read back as an
    `Entry` (`entry`).

    The events as they were appended are kept too until the entry is first read: the
    aggregator reads each entry once, as soon as it can, and it then takes them as they are
    instead of made anew from the packed ones (~0.8 µs an event, a few hundredths of the
    embedded server's CPU per event). Later reads (a rebuild) unpack."""

    id: str
    topic: str
    packed: list[PackedEvent]
    n: int
    fresh: list[Event] | None = None

    def entry(self) -> Entry:
        events = self.fresh
        if events is None:
            events = [_unpacked_event(packed) for packed in self.packed]
        else:
            self.fresh = None  # from now on only packed (`PackedEvent`)
        return Entry(self.id, self.topic, events, n=self.n)


def _events_entry(topic: str, events: list[Event]) -> Callable[[str, int], LoggedEvents]:
    """How `Store.add_entry` makes the entry of `events` (one of a batch's: `ENTRY_EVENTS`)."""
    packed: list[PackedEvent] = [
        (e.value, e.ts_us, _packed_tags(e.tags))
        if e.message is None
        else (e.value, e.ts_us, _packed_tags(e.tags), e.message)
        if not e.mark
        else (e.value, e.ts_us, _packed_tags(e.tags), e.message, e.mark)
        for e in events
    ]
    return lambda id, n: LoggedEvents(id, topic, packed, n, events)


def message_bytes(events: Sequence[Event]) -> int:
    """The bytes of the messages among `events` (each one's type and data): what the log's
    byte bound counts."""
    return sum(len(m.type) + len(m.data) for e in events if (m := e.message) is not None)


def _without_data(logged: LoggedEvents) -> None:
    """Drop the data of `logged`'s messages (published: see `Store` on the log's bytes); each
    keeps its type, which the windows count, and `null` as its data."""
    logged.fresh = None
    logged.packed = [packed if len(packed) == 3 else _no_data(packed) for packed in logged.packed]


_NO_DATA = b"null"


def _no_data(
    packed: tuple[float | None, int, tuple[str, ...] | None, Message]
    | tuple[float | None, int, tuple[str, ...] | None, Message, int],
) -> PackedEvent:
    """A packed message without its data (its type and mark kept)."""
    return (*packed[:3], Message(packed[3].type, _NO_DATA), *packed[4:])


def _packed_tags(tags: dict[str, str] | None) -> tuple[str, ...] | None:
    return None if tags is None else tuple(chain.from_iterable(tags.items()))


def _unpacked_event(packed: PackedEvent) -> Event:
    if len(packed) == 3:
        return Event(packed[0], packed[1], _unpacked_tags(packed[2]))
    if len(packed) == 4:
        return Event(packed[0], packed[1], _unpacked_tags(packed[2]), packed[3])
    return Event(packed[0], packed[1], _unpacked_tags(packed[2]), packed[3], packed[4])


def _unpacked_tags(flat: tuple[str, ...] | None) -> dict[str, str] | None:
    return None if flat is None else dict(zip(flat[::2], flat[1::2], strict=True))


@dataclass(eq=False)
class PartitionData:
    """One partition's keys: its event log and lease (the shard's), and what its aggregator
    published (`published`)."""

    index: int
    published: Published
    entries: list[Entry | LoggedEvents] = field(default_factory=list)
    ids: list[Position] = field(default_factory=list)
    """Each entry's position, for bisecting."""
    last_entry: Position = (0, 0)
    """The stream's last id: it outlives a trim, as a Redis stream's does."""
    last_id: str = FIRST
    """`last_entry` as text."""
    clocks: dict[str, int] = field(default_factory=dict)
    logged: int = 0
    lease: tuple[str, int] | None = None
    """The holder's token and when the key expires (ms)."""
    taken: str | None = None
    """The token the lease was last taken under (`{lease}:taken`)."""
    applied: tuple[str, int] | None = None
    unfinished: int = 0
    """Entries counted in `applied` whose updates are still going out (`Store.finishing`)."""
    checkpoints: dict[str, Checkpoint] = field(default_factory=dict)
    rules: str | None = None
    forgotten: int = 0
    deleted: dict[str, Position] = field(default_factory=dict)
    """Each deleted topic's delete entry (`append_ticks` refuses a round proposed before it)."""
    keys: RememberedKeys = field(default_factory=RememberedKeys)
    """The idempotency keys of the partition's topics."""
    unpublished: deque[tuple[Position, LoggedEvents, int]] = field(default_factory=deque)
    """The entries holding message data not yet published, oldest first, each with its bytes
    (`message_bytes`)."""
    message_bytes: int = 0
    """The sum of `unpublished`'s bytes: what `Store.log_bytes` bounds."""


def entry_id(pos: Position) -> str:
    return f"{pos[0]}-{pos[1]}"


class Store:
    """A deployment's Redis, in memory (see the module's doc). Greenlets share it, each call
    whole between two switches (`run`)."""

    def __init__(
        self,
        partitions: int,
        *,
        clock: Clock,
        history: int = 10_000,
        history_bytes: int = DEFAULT_HISTORY_BYTES,
        max_topics: int = 100_000,
        max_keys: int = MAX_KEYS_PER_PARTITION,
        alert_retention_us: int = DEFAULT_ALERT_RETENTION_US,
    ) -> None:
        check_partitions(partitions)
        if history < 1:
            raise ValueError(f"history must be at least 1, got {history}")
        if history_bytes < 1:
            raise ValueError(f"history_bytes must be at least 1, got {history_bytes}")
        if max_topics < 1:
            raise ValueError(f"max_topics must be at least 1, got {max_topics}")
        if alert_retention_us < 1:
            raise ValueError(f"alert_retention_us must be positive, got {alert_retention_us}")
        self.partitions = partitions
        self.clock = clock
        self.max_topics = max_topics
        self.entry_events = ENTRY_EVENTS
        """A batch's events per log entry at most (`shared_log.ENTRY_EVENTS`)."""
        self.log_bytes = history_bytes
        """The bytes of messages a partition's log may hold unpublished (see the module's
        doc): as many as its history keeps of them once published, so that a stream that
        falls behind a burst can still resume exactly."""
        self.parts = [
            PartitionData(
                index,
                Published(
                    index,
                    history=history,
                    alert_retention_ms=alert_retention_us // 1000,
                    history_bytes=history_bytes,
                ),
                keys=RememberedKeys(max_keys),
            )
            for index in range(partitions)
        ]
        self.members: dict[str, int] = {}
        """The aggregator processes: member id -> when it expires (ms)."""
        self.series = KeptSeries()
        self._series_expiry = 0.0
        self.handlers: list[UpdatesHandler] = []
        self.derived: dict[str, int] = {}
        self.sessions: dict[str, bytes] = {}
        """Each session topic's sessionizer state."""
        self._tokens = itertools.count(1)
        # Reentrant: an updates handler may publish from inside a delivery.
        self._lock = threading.RLock()
        self.logged = gevent.event.Event()
        """Set when an entry is logged: what waiters wait on."""

    # -- plumbing ------------------------------------------------------------------------

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def token(self) -> str:
        """A fresh lease token; numbered, not random, so that a seeded run repeats exactly."""
        return f"{next(self._tokens):016x}"

    def run(self, operation: str, shard: Partition | None, call: Callable[[], T]) -> T:
        """One round trip, `operation` on `shard` (None: several), whole, as Redis runs a
        script (threads too: a test's producers and publishers may be threads)."""
        with self._lock:
            return call()

    def part(self, topic: str) -> PartitionData:
        return self.parts[partition_of(topic, self.partitions)]

    def topics(self) -> int:
        """The topics kept (those with a clock): what `max_topics` bounds."""
        return sum(len(part.clocks) for part in self.parts)

    # -- leases (lease_acquire.lua, lease_release.lua) -----------------------------------

    def holder(self, index: int) -> str | None:
        return _holder(self.parts[index].lease, self.now_ms())

    def free(self, shards: Sequence[Partition]) -> frozenset[Partition]:
        """The shards whose lease nobody holds."""
        now = self.now_ms()
        parts = self.parts
        return frozenset(shard for shard in shards if _holder(parts[shard[0]].lease, now) is None)

    def acquire(self, index: int, token: str, fresh: str, ttl_ms: int) -> LeaseCode:
        part = self.parts[index]
        now = self.now_ms()
        holder = _holder(part.lease, now)
        expires = now + ttl_ms
        if holder == token:
            part.lease = (token, expires)
            return _RENEWED
        if holder is not None:
            return _HELD
        if part.taken == token:
            part.lease = (token, expires)
            return _RESUMED
        part.lease = (fresh, expires)
        part.taken = fresh
        return _TAKEN

    def release(self, index: int, token: str) -> None:
        if self.holder(index) == token:
            self.parts[index].lease = None

    def fence(self, index: int, token: str) -> None:
        if self.holder(index) != token:
            raise Fenced("FENCED the lease is held by another aggregator")

    # -- membership (lease_group.py's round) ---------------------------------------------

    def join(self, member: str, ttl_ms: int) -> bool:
        """ZADD the member's expiry, ZREMRANGEBYSCORE the expired; whether it was added (it
        was not a member)."""
        now = self.now_ms()
        added = member not in self.members
        self.members[member] = now + ttl_ms
        for other, expires in list(self.members.items()):
            if expires <= now:
                del self.members[other]
        return added

    # -- the log (append_events.lua, append_ticks.lua, forget_topics.lua, ...) -----------

    def add_entry(
        self, part: PartitionData, entry: Callable[[str, int], Entry | LoggedEvents]
    ) -> str:
        """XADD: `entry` made with its id and number, appended to the partition's log."""
        part.last_entry = next_id(part.last_entry, self.now_ms())
        part.last_id = entry_id(part.last_entry)
        made = entry(part.last_id, part.logged + 1)
        part.entries.append(made)
        part.ids.append(part.last_entry)
        part.logged += 1
        self.logged.set()
        return made.id

    def append(
        self,
        topic: str,
        events: Sequence[Event],
        lateness_us: int,
        idempotency: Idempotency | None,
        keep_late: bool = False,
    ) -> Appended:
        """append_events.lua: the key checked, the batch judged and split by the one lateness
        rule (`pushsvc.core.lateness`), its entries on the topic and on its late stream (the
        same partition) logged and the key remembered, in one step."""
        part = self.part(topic)
        now = self.clock()
        if idempotency is not None:
            part.keys.expire(now)
            earlier = part.keys.get(topic, idempotency, now)
            if earlier is not None:
                return earlier._replace(late=len(events) - earlier.accepted)
        batch = list(events)
        if not batch:  # a key only (`Broker.append_events`): no entry, no clock
            evicted = 0 if idempotency is None else part.keys.remember(topic, idempotency, 0, now)
            return Appended(0, evicted=evicted)
        clock = part.clocks.get(topic)
        past = past_grace(clock, batch, lateness_us)
        split = split_late(clock, batch, past, lateness_us=lateness_us, keep_late=keep_late)
        aside = late_topic(topic)
        new = (clock is None) + (bool(split.late) and aside not in part.clocks)
        if new and self.topics() + new > self.max_topics:
            raise TooManyTopics.at(self.max_topics)
        logs = [(topic, split.topic), (aside, split.late)]
        sizes = [
            [message_bytes(logged[cut]) for cut in entry_slices(len(logged), self.entry_events)]
            for _, logged in logs
        ]
        self._check_room(part, sum(map(sum, sizes)))
        for (name, logged), logged_sizes in zip(logs, sizes, strict=True):
            if not logged:
                continue
            newest = max(e.ts_us for e in logged)
            held = part.clocks.get(name)
            part.clocks[name] = newest if held is None else max(held, newest)
            cuts = entry_slices(len(logged), self.entry_events)
            for cut, size in zip(cuts, logged_sizes, strict=True):
                self.add_entry(part, _events_entry(name, logged[cut]))
                if size:
                    entry = part.entries[-1]
                    assert isinstance(entry, LoggedEvents)
                    part.unpublished.append((part.last_entry, entry, size))
                    part.message_bytes += size
        accepted = len(batch) - split.past
        evicted = 0
        if idempotency is not None:
            evicted = part.keys.remember(topic, idempotency, accepted, now)
        return Appended(accepted, evicted=evicted, late=split.past)

    def _check_room(self, part: PartitionData, size: int) -> None:
        """Refuse (BrokerFull) a batch of `size` bytes of messages that would take the
        partition's log past `log_bytes`; a log holding none takes any batch (the request's
        own bound, `--max-body`, bounds it)."""
        held = part.message_bytes
        if size and held and held + size > self.log_bytes:
            raise BrokerFull(
                f"the event log holds {held} bytes of messages not yet published, its bound "
                f"(--history-bytes a partition); nothing was logged: retry later"
            )

    def _published_through(self, part: PartitionData, applied: Position) -> None:
        """The entries up to `applied` are published: their messages' data leaves the log."""
        unpublished = part.unpublished
        while unpublished and unpublished[0][0] <= applied:
            _, logged, size = unpublished.popleft()
            part.message_bytes -= size
            _without_data(logged)

    def delete(self, topic: str) -> bool:
        """delete_topic.lua: drop the topic's clock and latest update and log a delete entry;
        False (nothing changed) when the partition keeps no such topic."""
        part = self.part(topic)
        if part.clocks.pop(topic, None) is None:
            return False
        part.published.latest.pop(topic, None)
        self.add_entry(part, lambda id, n: Entry(id, deleted=topic, n=n))
        part.deleted[topic] = part.last_entry
        return True

    # -- publishing (publish_updates.lua) -------------------------------------------------

    def publish(
        self,
        index: int,
        drafts: Sequence[UpdateDraft],
        applied: Applied,
        fence: str,
    ) -> list[Update]:
        """publish_updates.lua, from the same payload (`pushsvc.broker.publish_payload`)."""
        payload = build_payload(drafts, applied=applied, fence=fence)
        self._check_and_record(index, payload)
        return self._deliver(self._keep(index, payload.drafts))

    @contextmanager
    def finishing(self, index: int, entries: int) -> Iterator[None]:
        """A paced publish's parts after the first (`MemoryBroker.publish_updates`): its
        `entries` stay unpublished in the partition's lag until the last part is out, so that
        whoever waits for the log to be published (a test's settling, `/metrics`' lag, a
        readiness check) waits for the whole batch, as for one script."""
        part = self.parts[index]
        part.unfinished += entries
        try:
            yield
        finally:
            part.unfinished -= entries

    def continue_publish(self, index: int, drafts: Sequence[UpdateDraft]) -> list[Update]:
        """The rest of a publish whose first part `publish` checked and recorded
        (`MemoryBroker`'s paced publish): kept and delivered unchecked, as the rest of one
        script is; its fate was the first part's."""
        with self._lock:
            return self._deliver(self._keep(index, drafts))

    def _deliver(self, updates: list[Update]) -> list[Update]:
        """The updates kept, handed to every process's feed (`MemoryBroker.consume_updates`)."""
        if updates:
            for handler in list(self.handlers):
                try:
                    handler(list(updates))
                except Exception:
                    log.exception("updates handler %r failed", handler)
        return updates

    def _check_and_record(self, index: int, payload: PublishPayload) -> None:
        """The script's start: the fence, then the position (PublishedAlready past it), then
        "applied up to" moved over the batch."""
        part = self.parts[index]
        self.fence(index, payload.lease_token)
        recorded = FIRST if part.applied is None else part.applied[0]
        if position(recorded) > position(payload.applied_after):
            raise PublishedAlready(
                f"PUBLISHED the log is applied up to {recorded}, past "
                f"{payload.applied_after} where this batch continues from"
            )
        count = 0 if part.applied is None else part.applied[1]
        part.applied = (payload.applied_id, count + payload.applied_entries)
        if part.unpublished:
            self._published_through(part, position(payload.applied_id))

    def _keep(self, index: int, drafts: Sequence[UpdateDraft]) -> list[Update]:
        """The drafts numbered and kept (history, latest, series), as the script's body
        does."""
        part = self.parts[index]
        now = self.clock()
        series = self.series

        def keep_point(draft: UpdateDraft) -> bool:
            return series.keep(draft, now)

        def drop_topic(topic: str) -> None:
            series.drop_topic(topic)
            part.checkpoints.pop(topic, None)

        updates = part.published.publish(drafts, int(now * 1000), keep_point, drop_topic)
        if now >= self._series_expiry:
            self._series_expiry = now + _SERIES_EXPIRY_S
            series.expire(now)
        return updates
