"""The broker contract: how raw events reach the aggregator and updates reach the hubs.

`Broker` is the core every broker has; what a broker may also keep is a small protocol of its
own: `HistoryKeeper` (the bounded history, read by topic), `SeriesKeeper` (series points),
`AlertKeeper` (the active alert instances), `LagReporter` (the log's backlog and topics) and
`BridgeReporter` (producers on Redis). `ServingBroker` is all of them: what a process serving
the whole API holds. The aggregators are fed through a log (`LogBroker`,
`pushsvc.broker.shared_log`) that every broker has.

Two implementations share this contract and one test suite
(`tests/integration/test_broker_contract.py`): `memory` (one process: the shared log in a store
of its own) and `redis` (any number of processes on any number of hosts). Both are read by
the same aggregators: each shard's reads its event log (`pushsvc.aggregate.shard_runner`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol, runtime_checkable

from pushsvc.core.cursor import Cursor
from pushsvc.core.event import Event
from pushsvc.core.idempotency import Idempotency
from pushsvc.core.topic_pages import TopicRange
from pushsvc.core.topics import TopicMatcher
from pushsvc.core.updates import Update, UpdateDraft, UpdateId
from pushsvc.errors import RequestError

UpdatesHandler = Callable[[list[Update]], None]
"""Called with updates in id order; a list may mix topics."""

HOLD_TTL_MS = 600_000
"""How long a reader's hold on the history (`SessionKeeper.hold_history`) lasts unless it
holds again: far longer than a failover of the reader takes, short enough that a reader no
longer run (its rule removed) keeps nothing for long."""
DEFAULT_HISTORY_BYTES = 32 * 1024 * 1024
"""The most bytes of updates' bodies a partition's history holds (`--history-bytes`), besides
its count (`--history`, which a reader's hold extends to every update it has not read): the
oldest updates are trimmed past either, always keeping the newest. The one bound of a hold:
it trims updates a reader holds too (that reader's replay finds the partition `lost`).
Statistics updates (~1 KB) reach the count first; messages of up to 64 KiB the bytes."""

DEFAULT_ALERT_RETENTION_US = 24 * 3600 * 1_000_000
"""How long a broker keeps alert changes when not told (the default series' longest
retention; `Settings.alert_retention_us` gives the server's)."""


class Appended(NamedTuple):
    """What `Broker.append_events` did: `accepted` events were logged on time by this call
    or, when `replayed`, by an earlier one with the same idempotency key (this call logged
    nothing). `late`: the events of the request past their topic's grace (kept on its late
    stream, a message pushed on the topic all the same: `pushsvc.core.lateness`).
    `evicted`: the idempotency keys of other requests this call's key made the partition
    forget before their window ended (`core.idempotency.MAX_KEYS_PER_PARTITION`)."""

    accepted: int
    replayed: bool = False
    evicted: int = 0
    late: int = 0


class TopicAppend(NamedTuple):
    """One topic's `Broker.append_events`, its arguments named alike."""

    topic: str
    events: Sequence[Event]
    lateness_us: int
    idempotency: Idempotency | None = None
    keep_late: bool = False


@runtime_checkable
class ManyTopicsAppender(Protocol):
    """A broker that sends many topics' appends together (the Redis broker: one pipeline per
    connection), so that a request to a thousand topics (`pushsvc.ingest.cross_topic`) costs a
    few round trips, not a thousand; a broker without it is called once per topic."""

    def append_many(self, appends: Sequence[TopicAppend]) -> list[Appended | RequestError]:
        """What `append_events` of each of `appends` would answer, in order: its Appended,
        or the RequestError it would raise (each append atomic and independent of the
        others, exactly as called one by one)."""
        ...


@dataclass(frozen=True, slots=True)
class Replayed:
    """What `Broker.replay` read after a stream's cursor.

    `updates`: every update after the cursor of every matching topic in the partitions that
    are not `lost`, in publish order within a partition and, across partitions, in the order
    they were published as well as the broker can tell (merged by stream-id time).
    `lost`: the partitions whose history cannot cover the cursor (trimmed past its id, another
    epoch, an id never issued, a partition the broker does not have): none of their updates are
    in `updates`, and the stream sends a `"gap": true` snapshot of their topics instead.
    `heads`: the newest update of each partition read (whatever its topic), where it has one:
    how far the read went, matching or not (what a reader of few topics holds the history
    from, `SessionKeeper.hold_history`)."""

    updates: list[Update]
    lost: frozenset[int] = frozenset()
    heads: Mapping[int, UpdateId] = field(default_factory=dict, compare=False)


class UpdatesFeed(Protocol):
    """A process's subscription to updates (see `Broker.consume_updates`)."""

    def watch(self, selectors: Sequence[str]) -> None:
        """Receive the updates of these selectors (topic names, `prefix.*`, `*`) from now on;
        returns once the broker confirmed it (BrokerUnavailable if it cannot). Reference
        counted: every `watch` is matched by one `unwatch` of the same selectors."""
        ...

    def unwatch(self, selectors: Sequence[str]) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """Updates of one topic read from the bounded history (`Broker.history`), oldest first.

    `resume` is the id a stream resumes from (`Last-Event-ID`) to continue exactly where this
    page ends, with no gap and no duplicate: the newest id of the whole history when the read
    reached it, else the page's last update. None when the history is empty (then a stream
    starts from its snapshot). `more`: further updates of the topic matched beyond `limit`
    (older ones for a read of the newest, newer ones for a read from `after` or `since_us`).
    `gap`: `after` is not an id the history can continue from (another epoch, trimmed, never
    issued), so updates were lost before this page, which starts at the oldest kept.
    """

    updates: list[Update]
    resume: UpdateId | None
    more: bool
    gap: bool = False


@dataclass(frozen=True, slots=True)
class SeriesPage:
    """Points of one series tier (`Broker.series`), oldest first: each bucket's start (µs)
    and its stored form (`pushsvc.rules.point`). `more`: points beyond `limit` matched."""

    points: list[tuple[int, bytes]]
    more: bool


@dataclass(frozen=True, slots=True)
class ShardLag:
    """A shard of the event log: entries logged but not yet applied, the age of the oldest
    of them (None when none), whether an aggregator holds the shard, and the digest of the
    rules its active aggregator computes with (None where unknown or in-process)."""

    shard: tuple[int, int]
    entries: int
    oldest_age_s: float | None
    aggregator: bool
    rules_digest: str | None = None


@dataclass(frozen=True, slots=True)
class BridgeStats:
    """The Redis bridge (producers on Redis): whether one holds its lease, events it appended,
    messages it refused by reason."""

    active: bool
    events: int
    rejected: dict[str, int]


@dataclass(frozen=True, slots=True)
class TopicStats:
    """The topics the deployment keeps (what `--max-topics` counts) and how many idle topics
    were forgotten so far (`--topic-ttl`)."""

    live: int
    forgotten: int


class Applied(NamedTuple):
    """Where a batch of drafts comes from in a shard's event log: the shard, the last log
    entry the drafts cover, how many entries that was, and the entry before them, the last
    the caller saw published (`Broker.publish_updates`)."""

    shard: tuple[int, int]
    entry_id: str
    entries: int
    after: str


class Broker(Protocol):
    """Carries raw events to aggregators and updates to every process's hub.

    Guarantees: events of one topic reach the aggregator in publish order;
    updates get ids that strictly increase in the order they are emitted,
    across all topics of a partition; every update is appended to a bounded history (the
    newest `history` updates) before any subscriber sees it; delivery to
    subscribers is at most once (a subscriber that was disconnected resumes
    from the history). All methods are greenlet-safe.
    """

    def append_events(
        self,
        topic: str,
        events: Sequence[Event],
        *,
        lateness_us: int,
        idempotency: Idempotency | None = None,
        keep_late: bool = False,
    ) -> Appended:
        """Append a batch to the event log of the topic's shard; once this returns, the
        batch will yield one update per event (Redis: it is in the log).

        With `idempotency`, a key remembered for this topic (logged by an earlier call within
        its window) with the same digest appends nothing and answers that call's `Appended`,
        `replayed`; with another digest it raises IdempotencyKeyReused and appends nothing.
        Otherwise the batch is judged and appended as below, and the key remembered for the
        window only if it was appended: the check, the append and the remembering are one
        atomic step, so racing repeats log the batch once. An empty batch logs nothing and
        moves no clock; with `idempotency` it remembers the key (answer 0) after the same
        check.

        The batch is judged against the topic clock (the largest event time, or idle tick
        clock, logged for the topic) by the one lateness rule, and split by it
        (`pushsvc.core.lateness.split_late`), in the same atomic step: its on-time events
        and its messages past `lateness_us` (marked, pushed, in no statistic) are logged on
        the topic; with `keep_late`, its events past `lateness_us` are logged on the topic's
        late stream (`<topic>.late`, in the same partition), counted in `Appended.late`;
        without, a plain event past it raises LateEvent and nothing is appended. A repeat
        answers the same `accepted` and `late`. Raises BrokerUnavailable when the broker
        cannot be reached (nothing was appended).

        A batch for a topic the broker does not keep (new, or forgotten) raises
        TooManyTopics and appends nothing when `max_topics` topics are kept already; a new
        topic's check and append happen under one lock (on Redis the count spans every
        partition), so racing producers cannot overshoot.
        """
        ...

    def delete_topic(self, topic: str) -> bool:
        """Forget `topic` (`DELETE /topics/{topic}`); False when the broker keeps no such
        topic (never posted to, forgotten, or deleted already), and nothing changes.

        In one step with the check, the topic's clock is dropped (its next event is judged
        as a new topic's, whatever the clock was: one event with a wrong clock cannot lock a
        topic for good), and so is its latest update; and the deletion is handed to the
        aggregator in order with the events (Redis: a delete entry in the log, so every
        aggregator of the partition, a standby or a rebuild applies it exactly once, at
        that place). An event appended before this call belongs to the deleted topic, one
        after it to the new one. The aggregator drops the topic's windows, groups and alert
        instances (an `_alerts` change for each live one) and publishes the deletion
        (`pushsvc.core.updates.deletion_draft`), with which the broker drops the topic's
        groups, series and checkpoint, and its history reads start after it. Raises
        BrokerUnavailable when the broker cannot be reached (nothing was deleted)."""
        ...

    def publish_updates(
        self,
        drafts: Sequence[UpdateDraft],
        *,
        applied: Applied,
        fence: str,
    ) -> list[Update]:
        """An aggregator's batch: give each draft an id, append it to the history of the
        shard's partition, remember it as its topic's latest, and deliver it to every
        process watching its topic; atomically per call, so ids are in delivery order even
        with several publishers. A point's draft (`draft.series`) is also kept in its tier's
        series and is never a topic's latest; a correction (`SeriesWrite.revision` above 0)
        replaces the point of its bucket there when it is of a higher revision than the one
        held; one its series holds already (a bucket published before, or that revision of it
        or a later one) is left out of the history, delivery and the result.

        `applied` says where the drafts come from in the shared log
        (`pushsvc.broker.shared_log`) and `fence` is the token of the shard's lease the
        caller holds: the broker records the applied position in the same atomic step as the
        updates, and publishes nothing, raising Fenced, when the lease is no longer under
        that token, or PublishedAlready when the log is recorded as published past
        `applied.after`. There is no other way to publish (a test publishes as an aggregator
        does: `harness.fenced_publish`). The deriver and the sessionizer do not publish: they
        append their values as events (`append_events`), as producers do."""
        ...

    def consume_updates(
        self, handler: UpdatesHandler, *, on_reset: Callable[[], None] = ...
    ) -> UpdatesFeed:
        """Hub side: receive the updates of watched topics (one feed per process).
        `on_reset` runs when updates may have been missed (the connection was lost)."""
        ...

    @property
    def partitions(self) -> int:
        """How many partitions the topics map to (`partition_of`); each has a history and an
        epoch of its own, so an update id names its partition (`UpdateId.partition`)."""
        ...

    def partition_of(self, topic: str) -> int:
        """The partition (0..partitions-1) whose history holds `topic`'s updates."""
        ...

    def replay(self, after: Cursor, match: TopicMatcher) -> Replayed:
        """Every update after `after` of every topic that `match`es, per partition (see
        `Replayed`). A partition absent from `after` replays all its history keeps of the
        matching topics; a partition whose history cannot continue from `after`'s id there
        (another epoch, never issued, older than what the history keeps) is `lost`, as is one
        that `after` names but the broker does not have. A stream has nothing of a partition
        while no topic of it that it reads has an update: it wants every update of them, so
        an absent partition that no longer keeps the first update of a matching topic that
        has one (a new topic, trimmed while the stream was away) is `lost` too."""
        ...

    def latest(self, match: TopicMatcher) -> dict[str, Update]:
        """The newest update of every topic that `match`es (by name when the matcher
        holds names only, without reading the other topics)."""
        ...

    def latest_groups(self, topics: Sequence[str]) -> dict[str, list[bytes]]:
        """The live groups of these grouping topics: each group's JSON (`{"key", "windows"}`)
        as the newest update that carried it, for the topics that have any."""
        ...

    def derived_through(self, topics: Sequence[str]) -> dict[str, int]:
        """Of these derived topics (`[[derive]]`), the newest boundary (µs) each one's deriver
        has evaluated, whether it appended a value or found none; a topic never evaluated
        is left out. Idle ticks move a derived topic's clock no further than the next
        boundary can still be appended (`Aggregator.due_ticks`)."""
        ...

    def note_derived_through(self, topic: str, boundary_us: int) -> None:
        """Record that derived `topic`'s deriver has evaluated every boundary up to
        `boundary_us`; an older boundary than the one recorded changes nothing (a paused
        deriver writing late must not hold the ticks back)."""
        ...

    def ping(self) -> None:
        """Raise BrokerUnavailable unless the broker answers."""
        ...

    def close(self) -> None: ...


def append_alone(broker: Broker, append: TopicAppend) -> Appended | RequestError:
    """`broker.append_events` of one `append`: what it answers, or the RequestError it raises
    (as `ManyTopicsAppender.append_many` answers each of its appends)."""
    try:
        return broker.append_events(
            append.topic,
            append.events,
            lateness_us=append.lateness_us,
            idempotency=append.idempotency,
            keep_late=append.keep_late,
        )
    except RequestError as exc:
        return exc


@runtime_checkable
class HistoryKeeper(Protocol):
    """A broker that reads its bounded history by topic (`GET /topics/<t>/history`)."""

    def history(
        self,
        topic: str,
        *,
        after: UpdateId | None = None,
        since_us: int | None = None,
        limit: int,
    ) -> HistoryPage:
        """Up to `limit` updates of `topic` from the bounded history, oldest first (points
        are not updates: `series` answers them).

        With `after`: the first `limit` updates after that id (exclusive, like Last-Event-ID).
        With `since_us`: the first `limit` whose clock (the update's `ts`) is at or after it;
        a topic's clock never goes back, so these are the tail of its history. With neither:
        the newest `limit`. One topic's updates are interleaved with all others' in the
        history; the read costs at most one pass over it (`history` entries).

        `_alerts` (its changes, at their topics' clocks) is read by id only: its clock goes
        back wherever the changes of two topics interleave. Its changes are not the bounded
        history's: they are kept for the broker's alert retention after they were published,
        however many updates other topics publish meanwhile, so a chart shades every period
        in its range.
        """
        ...


@runtime_checkable
class HistoryStarts(Protocol):
    """A broker that tells where each partition's history starts, so that a stream can replay
    everything it keeps however much was trimmed before (a Mercure `earliest`, or the search
    of the history for a Mercure update's id)."""

    def history_starts(self) -> dict[int, UpdateId]:
        """Of each partition whose history has trimmed updates, the position of the last one
        trimmed, in its epoch: a cursor there replays every update the history keeps. A
        partition that trimmed nothing (or has no history) is left out: a cursor without it
        replays all of it. A resume point, not an id; a trim after this call makes a replay
        from it `lost`, as any."""
        ...


@dataclass(frozen=True, slots=True)
class PartitionPage:
    """A page of one partition's history (`HistoryPages.history_page`).

    `updates`: those of the page's entries whose topic the read's matcher takes, oldest
    first. `last`: the id of the page's last entry, matching or not, where the next page
    starts (None when the page holds none). `more`: entries after `last` were kept when the
    page was read. `head`: the partition's newest update then (None: no history). `lost`:
    the history cannot continue from the page's `after` (another epoch, never issued,
    trimmed past it), so the page holds nothing."""

    updates: list[Update]
    last: UpdateId | None
    more: bool
    head: UpdateId | None
    lost: bool = False


@runtime_checkable
class HistoryPages(Protocol):
    """A broker that reads a partition's history a page at a time, so that a search of all
    of it (a Mercure resume by an update's id) holds its process a page's worth at a time,
    not the whole history's."""

    def history_page(
        self, partition: int, after: UpdateId | None, match: TopicMatcher, limit: int
    ) -> PartitionPage:
        """Up to `limit` entries of `partition`'s history after `after` (exclusive; None:
        from the oldest kept), read at once; see `PartitionPage`. A page from None is never
        `lost`: it starts at whatever the history keeps. Each page is read at its own moment:
        a trim between two pages makes the next one `lost`."""
        ...

    def history_heads(self) -> dict[int, UpdateId]:
        """The newest update of each partition that has a history, as `Replayed.heads`."""
        ...


class SeriesKeeper(Protocol):
    """A broker that keeps series points (`GET /topics/<t>/series`)."""

    def series(
        self,
        topic: str,
        *,
        resolution: str,
        group_id: str = "",
        since_us: int,
        until_us: int,
        retention_us: int,
        limit: int,
    ) -> SeriesPage:
        """Up to `limit` points of one tier (`resolution`) of `topic` (or of its group
        `group_id`) whose bucket starts in `[since_us, until_us)`, oldest first, leaving out
        those the tier no longer keeps (a start at or before the topic clock less
        `retention_us`)."""
        ...


class SessionKeeper(Protocol):
    """A broker that keeps the sessionizers' state (`[[session]]` rules)."""

    def session_state(self, topic: str) -> bytes | None:
        """The state last saved for session topic `topic` (None: never saved)."""
        ...

    def save_session_state(self, topic: str, state: bytes) -> None:
        """Keep `state` for session topic `topic`, replacing what was kept."""
        ...

    def hold_history(self, reader: str, after: Cursor, match: TopicMatcher) -> None:
        """Keep, in each partition `match` can take a topic of, every update after `after`'s
        id there (every update, where it names none) until `reader` holds again: the
        history's trim passes `--history` to keep them, for `HOLD_TTL_MS` after this call (a
        reader that stopped holds nothing for long). Past `--history-bytes` the oldest go
        even so, and the reader's replay finds the partition `lost`."""
        ...


class AlertKeeper(Protocol):
    """A broker that keeps the active alert instances (`GET /alerts`, Alertmanager)."""

    def active_alerts(self) -> list[bytes]:
        """The alert instances pending or firing now: each one's latest change (its JSON as
        published on `_alerts`, without the id)."""
        ...

    def active_alerts_page(
        self, *, after: str | None, limit: int, scan: int, keep: Callable[[str], bool]
    ) -> AlertsPage:
        """Of the active instances whose keys sort after `after`, reading at most `scan` keys
        in key order from a sorted index (`scan_page`), the changes of the first `limit`
        whose key `keep` keeps. An instance resolved while the page is read may be left
        out."""
        ...


@dataclass(frozen=True, slots=True)
class AlertsPage:
    """Active alert instances' latest changes, in key order (`active_alerts_page`); `next`:
    the key the next page reads after, None when no instance follows."""

    changes: list[bytes]
    next: str | None


@dataclass(frozen=True, slots=True)
class TopicHead:
    """What a listing shows of a topic's newest update: its id (`UpdateId.text`) and time.
    Not the update: a page of 1,000 read from Redis parsed each whole (~700 bytes) to show
    these two."""

    id: str
    clock_us: int


@dataclass(frozen=True, slots=True)
class LatestPage:
    """A page of topics and the heads of their newest updates, in name order
    (`TopicLister.latest_page`). `next`: when topics follow in the ranges read, the last name
    read, which the next page reads after (a topic deleted while the page was read is read,
    not listed); else None."""

    latest: dict[str, TopicHead]
    next: str | None


class TopicLister(Protocol):
    """A broker that keeps its topics' names sorted, and reads them a page at a time."""

    def latest_page(
        self, ranges: Sequence[TopicRange], *, after: str | None, limit: int
    ) -> LatestPage:
        """The newest update's head of the first `limit` topics in `ranges` (disjoint, in
        name order: `pushsvc.core.topic_pages`) whose names sort after `after`, reading those
        ranges of a sorted index only: its cost grows with `limit` and the ranges, not with
        the topics. A topic deleted while the page is read may be left out."""
        ...


class LagReporter(Protocol):
    """A broker that reports its event log's backlog and the topics it keeps."""

    def lag(self) -> list[ShardLag]:
        """Every shard's backlog (BrokerUnavailable if the broker cannot be reached)."""
        ...

    def topic_stats(self) -> TopicStats:
        """Topics kept and forgotten (BrokerUnavailable if the broker cannot be reached)."""
        ...

    def keeps_topic(self, topic: str) -> bool:
        """Whether the broker keeps `topic` (it has a clock: an event for it creates nothing);
        BrokerUnavailable if the broker cannot be reached."""
        ...


class BridgeReporter(Protocol):
    """A broker that reports the Redis bridge (producers publishing into Redis)."""

    def bridge_stats(self) -> BridgeStats | None:
        """The Redis bridge's counts; None where there is no bridge (the embedded broker)."""
        ...


class ServingBroker(
    Broker,
    HistoryKeeper,
    SeriesKeeper,
    AlertKeeper,
    LagReporter,
    BridgeReporter,
    TopicLister,
    Protocol,
):
    """A broker with every ability: what a process serving the whole API holds. Both of
    pushsvc's brokers are one."""
