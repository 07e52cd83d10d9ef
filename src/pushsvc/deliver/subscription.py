"""A new stream's subscription, primed with what it must send before live updates.

Like Mercure's `AddSubscriber` then `Ready`: the client is registered with the hub FIRST,
the process's broker feed watches its topics (confirmed), then the replay (for a
`Last-Event-ID`) or the snapshot is read, and the client's floor is set to its cursor once
that is sent (`pushsvc.core.cursor`: the last update it has of each partition). Whatever the
hub queued in between is either admitted by the cursor (sent live) or dropped when the stream
takes it (already in the replay or snapshot): nothing is lost or sent twice.

A `Last-Event-ID` is a cursor. Where a partition's history cannot replay everything after
the cursor's id there — another epoch (the history was lost), never issued, or older than
what is kept — the stream gets a snapshot marked `"gap": true` of that partition's matching
topics only, first, then the exact replay of the other partitions: never a silent gap, never
a partial replay of one partition. The snapshot's `id:` is the cursor with the lost
partitions at the snapshot's newest updates and the others where the client was, so a client
that resumes from it gets the rest of the replay.

A messages stream whose id is of another epoch (a restart that lost the history) replays,
after its gap, everything the partition's new epoch keeps from its start, as if the client
had come with no id there (its gap's `id:` knows nothing of that partition): each message is
its own, and one published since the restart must not be lost to a client that comes back a
moment later. A statistics stream's gap snapshot is its topics' state already. A malformed
or foreign `Last-Event-ID` (not a cursor we could have issued) is a gap snapshot of
everything.

A stream whose topics all live in one partition (one topic, or one partition in all) writes
each update's own id as `id:`; a stream over several writes its cursor
(`Primed.cursor_ids`, `pushsvc.deliver.rendering.CursorRendering`).

Priming (the feed watch and the history read) waits for one of the process's priming slots,
and a replay is read together with the others being primed (`pushsvc.deliver.priming`): a
reconnect storm neither holds thousands of replays at once nor reads each on its own. The
rules above hold for each stream exactly: its replay is what its own read would have given.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from pushsvc.broker.base import Broker, Replayed, UpdatesFeed
from pushsvc.core.cursor import Cursor
from pushsvc.core.partitions import partitions_matching
from pushsvc.core.topics import TopicMatcher
from pushsvc.core.updates import Update
from pushsvc.deliver import priming
from pushsvc.deliver.hub import Hub, StreamExit, Subscriber
from pushsvc.deliver.message_replay import cursor_before_last
from pushsvc.deliver.projection import Projection
from pushsvc.deliver.rendering import rendering_for_stream


@dataclass(slots=True)
class Snapshot:
    """A `snapshot` message to send: these topics' latest updates (`latest`) and the live
    groups of the grouping ones (each group's JSON), `gap` when the client asked to resume and
    could not be, and `cursor`, its `id:` (the stream's cursor once it is sent)."""

    latest: dict[str, Update]
    gap: bool
    cursor: Cursor
    groups: dict[str, list[bytes]] = field(default_factory=dict)
    named: tuple[str, ...] = ()
    """A gap's: what else it names as maybe lost, besides the topics of `latest` (which has
    only those that published since, none after a restart): the stream's topics of the lost
    partitions, by name, and its patterns."""


@dataclass(slots=True)
class Primed:
    """A subscribed client and what its stream sends first: `snapshot` (if any), then
    `replay` (updates after the client's Last-Event-ID, of the partitions that could be
    replayed). `cursor` is where the stream is once both are sent; `cursor_ids`: the stream
    reads several partitions and writes its cursor as `id:`."""

    client: Subscriber
    snapshot: Snapshot | None
    replay: list[Update]
    replay_from: Cursor
    """Where the stream is when its replay starts (after the snapshot, if any)."""
    cursor: Cursor
    cursor_ids: bool
    _close: Callable[[], None]

    @property
    def gap(self) -> bool:
        return self.snapshot is not None and self.snapshot.gap

    def close(self) -> None:
        """End the subscription (the stream is over): local and in the broker."""
        self._close()

    @property
    def live_cursor(self) -> Cursor | None:
        """What a stream that writes its cursor as `id:` starts its live updates from (None
        for a stream that writes each update's own id)."""
        return self.cursor if self.cursor_ids else None

    def pages(self, projection: Projection | None, page_size: int) -> Iterator[bytes]:
        """The SSE bytes to send before live updates, rendered for the stream's projection
        (`pushsvc.deliver.rendering`): the snapshot, then the replay, a page of about
        `page_size` bytes at a time, each rendered only when the one before was taken: a
        replay of the whole history, or a snapshot of every topic, is never whole in
        memory."""
        snapshot = self.snapshot
        rendering = rendering_for_stream(
            projection, chunked=False, cursor=self.replay_from if self.cursor_ids else None
        )
        if snapshot is not None:
            yield from rendering.snapshot_pages(
                snapshot.latest,
                snapshot.groups,
                gap=snapshot.gap,
                cursor=snapshot.cursor,
                page_size=page_size,
                named=snapshot.named,
            )
        if self.replay:
            yield from rendering.replay_pages(self.replay, page_size)


def subscribe(
    broker: Broker,
    hub: Hub,
    feed: UpdatesFeed,
    matcher: TopicMatcher,
    last_event_id: str | None,
    grouping: Callable[[str], bool] | None = None,
    *,
    messages: bool = False,
    replay_last: int = 0,
    resume: Cursor | None = None,
    address: str = "",
) -> Primed:
    """Subscribe `matcher` to the hub and prime it (see the module docstring). `grouping`
    tells the topics whose snapshot carries their live groups. `messages`: a messages stream
    (its queue never conflates); `replay_last`: without a `Last-Event-ID`, it starts with the
    last that many messages of its topics (`pushsvc.deliver.message_replay`); `resume`: the
    cursor its view found for its `Last-Event-ID` (`pushsvc.deliver.mercure_resume`), read in
    place of it; `address`: the client's, whose turn its priming waits for.

    Raises BrokerUnavailable (after unsubscribing) when the history cannot be read. Call it
    once the response has started (from the stream's generator): a browser's EventSource
    retries a stream that breaks, but gives up for good on an error status.
    """
    client = hub.subscribe(matcher, lossless=messages)
    selectors = matcher.selectors
    watching = False

    def close() -> None:
        hub.unsubscribe(client)
        if watching:
            feed.unwatch(selectors)

    primer = priming.of(broker)
    try:
        # Its turn: the client is in the hub already, its updates queue meanwhile.
        with primer.turn(address):
            # The process receives the topics' updates from here on (the feed confirmed it);
            # only then is the history read, so nothing falls between the two.
            feed.watch(selectors)
            watching = True
            cursor_ids = reads_several_partitions(broker, matcher)
            after = resume
            if after is None and last_event_id:
                after = Cursor.parse(last_event_id)
            if last_event_id is None and replay_last:
                after = cursor_before_last(broker, matcher, replay_last)
            if after is None:
                gap = last_event_id is not None
                snapshot = _snapshot(broker, matcher, grouping, Cursor(), None, gap=gap)
                client.queue.floor = snapshot.cursor or None
                cursor = snapshot.cursor
                return Primed(client, snapshot, [], cursor, cursor, cursor_ids, close)
            replayed = primer.replays.replay(after, matcher)
            lost: Snapshot | None = None
            replay_from = after
            if replayed.lost:
                gone = replayed.lost
                afresh = _restarted(after, replayed) if messages else frozenset()
                if afresh:
                    # Its new epoch from the start: as for a client with no id there.
                    replayed = primer.replays.replay(after.without(afresh), matcher)
                    afresh -= replayed.lost  # trimmed meanwhile: a gap alone, as any
                kept = after.without(gone)
                lost = _snapshot(broker, matcher, grouping, kept, gone, gap=True)
                lost.cursor = lost.cursor.without(afresh)  # its replay starts at the start
                replay_from = lost.cursor
            # Each partition's updates are in order in the replay: its last is its newest (a
            # stream of one partition's topics needs no walk of a replay of thousands).
            updates = replayed.updates
            if cursor_ids:
                newest = {u.id.partition: u.id for u in updates}
            else:
                newest = {updates[-1].id.partition: updates[-1].id} if updates else {}
            cursor = Cursor(
                [*(i for i in replay_from.ids if i.partition not in newest), *newest.values()]
            )
            client.queue.floor = cursor or None
            return Primed(client, lost, replayed.updates, replay_from, cursor, cursor_ids, close)
    except BaseException as exc:
        client.close(StreamExit.ERROR if isinstance(exc, Exception) else StreamExit.GONE)
        close()
        raise


def _restarted(after: Cursor, replayed: Replayed) -> frozenset[int]:
    """The lost partitions where the cursor's id is of another epoch than the history's now
    (a restart that lost the history; not a trim, not an id never issued)."""
    return frozenset(
        index
        for index in replayed.lost
        if index in after
        and (head := replayed.heads.get(index)) is not None
        and head.epoch != after[index].epoch
    )


def reads_several_partitions(broker: Broker, matcher: TopicMatcher) -> bool:
    """Whether a stream of `matcher` may get updates of more than one partition (then it
    writes its cursor as `id:`, not each update's own)."""
    if broker.partitions == 1:
        return False
    if not matcher.exact:
        # A pattern reads every partition, but the Mercure hub's topics (placed together).
        return len(partitions_matching(matcher, broker.partitions)) > 1
    return len({broker.partition_of(topic) for topic in matcher.names}) > 1


def _snapshot(
    broker: Broker,
    matcher: TopicMatcher,
    grouping: Callable[[str], bool] | None,
    cursor: Cursor,
    partitions: frozenset[int] | None,
    *,
    gap: bool,
) -> Snapshot:
    """A snapshot of the matching topics of `partitions` (None: of every partition), its
    cursor `cursor` advanced to its updates (`cursor` knows nothing of those partitions)."""
    latest = broker.latest(matcher)
    if partitions is not None:
        latest = {t: u for t, u in latest.items() if broker.partition_of(t) in partitions}
    for update_id in Cursor.newest(u.id for u in latest.values()).ids:
        cursor = cursor.advanced(update_id)
    named: tuple[str, ...] = ()
    if gap:
        names = (
            name
            for name in sorted(matcher.names)
            if matcher(name) and (partitions is None or broker.partition_of(name) in partitions)
        )
        patterns = (s for s in matcher.selectors if s not in matcher.names)
        named = (*names, *patterns)
    groups = (
        broker.latest_groups([topic for topic in latest if grouping(topic)])
        if grouping is not None
        else {}
    )
    return Snapshot(latest, gap, cursor, groups, named)
