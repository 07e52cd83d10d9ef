"""Replays from a partition's history: one read, shared by every stream that asked.

A read (`read_partition`) is one MULTI: the partition's epoch, trimmed mark, newest entry and
its entries after a start, plus the names of its topics when a stream with nothing of the
partition needs them. A stream's replay (`replay_of`) is then decided and sliced from that
read alone: its epoch, never-issued and trimmed checks are its own, the entries it gets are
those after its own id that its matcher takes. One stream's replay reads from its own id; a
batch of streams reads once from the oldest id among them (`start_of`) and slices each from
it: each stream gets what a read of its own at that moment would have given it. `replay_many`
reads so every partition a batch can take a topic of and merges each stream's
partitions by the time Redis wrote each update. An entry is
decoded into an `Update` when a stream first takes it, once (the object is shared, read-only,
by every stream that takes it): a read of a partition of many topics decodes only theirs.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from pushsvc.broker.base import Replayed
from pushsvc.broker.redis.keys import Keys, PartitionKeys
from pushsvc.broker.redis.wire import StreamEntry, stream_entries, stream_position
from pushsvc.core.cursor import Cursor
from pushsvc.core.partitions import partitions_matching
from pushsvc.core.topics import TopicMatcher
from pushsvc.core.updates import Kind, Update, UpdateId

Position = tuple[int, int]

BEGINNING = None
"""`start_of`'s answer when some stream needs the partition's whole history."""


@dataclass(frozen=True, slots=True)
class PartitionRead:
    """One atomic read of a partition's history (see the module docstring): its entries after
    `start` (None: all kept), in order, with their `positions` and `entry_topics`;
    `first_kept`: the topics whose first update of the epoch is among them; `topics`: every
    topic of the partition (read only when `start` is None)."""

    epoch: str | None
    trimmed: Position | None
    newest: Position | None
    start: Position | None
    positions: list[Position]
    entry_topics: list[str]
    entries: list[StreamEntry]
    first_kept: frozenset[str]
    topics: list[str]
    decoded: list[Update | None]
    """Entry i's `Update` once a stream has taken it (see `update`)."""

    def update(self, index: int) -> Update:
        """Entry `index` as an `Update`, decoded the first time it is asked for."""
        found = self.decoded[index]
        if found is None:
            assert self.epoch is not None, "a history without an epoch replays nothing"
            stream_id, fields = self.entries[index]
            update_id = UpdateId.of_stream_id(self.epoch, stream_id)
            body = fields[b"b"]
            found = Update.numbered(
                self.entry_topics[index],
                update_id,
                int(fields[b"c"]),
                body,
                Kind.stored(fields.get(b"k"), body),
            )
            self.decoded[index] = found
        return found


def start_of(afters: Iterable[UpdateId | None]) -> Position | None:
    """Where one read serves streams at `afters` (a stream's id of the partition, None when
    it has none): after the oldest id, or the beginning if any has none."""
    oldest: Position | None = None
    for after in afters:
        if after is None:
            return BEGINNING
        if oldest is None or after.position < oldest:
            oldest = after.position
    return oldest


def read_partition(client: Any, part: PartitionKeys, start: Position | None) -> PartitionRead:
    """The partition's history after `start` (exclusive; None: all of it), in one MULTI.
    Redis errors propagate (the caller maps them at the library edge)."""
    return read_partitions(client, [(part, start)])[0]


def read_page(
    client: Any, part: PartitionKeys, start: Position | None, limit: int
) -> PartitionRead:
    """Up to `limit` entries of the partition's history after `start` (exclusive; None: from
    the oldest kept), with its epoch, trimmed mark and newest entry, in one MULTI (a
    partition's keys share a slot, on a Cluster too). No topic names are read: a `replay_of`
    a page from None never finds it lost, it searches what is kept (a Mercure lookup)."""
    with client.pipeline(transaction=True) as pipe:
        pipe.get(part.epoch)
        pipe.get(part.trimmed)
        pipe.xrevrange(part.history, count=1)
        lower = "-" if start is None else f"({start[0]}-{start[1]}"
        pipe.xrange(part.history, min=lower, count=limit)
        replies = iter(pipe.execute())
    return _decoded(start, replies, topics=False)


def read_partitions(
    client: Any, asked: Sequence[tuple[PartitionKeys, Position | None]]
) -> list[PartitionRead]:
    """`read_partition` of each of `asked`, all in one MULTI: one round trip for a batch's
    partitions on one Redis (not on a Redis Cluster, where a MULTI holds one slot's keys)."""
    with client.pipeline(transaction=True) as pipe:
        for part, start in asked:
            pipe.get(part.epoch)
            pipe.get(part.trimmed)
            pipe.xrevrange(part.history, count=1)
            pipe.xrange(part.history, min="-" if start is None else f"({start[0]}-{start[1]}")
            if start is None:
                pipe.hkeys(part.latest)
        replies = iter(pipe.execute())
    return [_decoded(start, replies) for _, start in asked]


def _decoded(
    start: Position | None, replies: Iterator[Any], *, topics: bool = True
) -> PartitionRead:
    """One partition's read from its replies (four; five when reading from the beginning and
    `topics`: the names of its topics)."""
    current, trimmed, raw_newest, raw_entries = (next(replies) for _ in range(4))
    names = next(replies) if start is None and topics else []
    newest, entries = stream_entries(raw_newest), stream_entries(raw_entries)
    epoch = None if current is None else current.decode()
    positions: list[Position] = []
    entry_topics: list[str] = []
    first_kept: set[str] = set()
    for stream_id, fields in entries:
        topic = fields[b"t"].decode()
        if not fields.get(b"p"):
            # An entry that names no previous update (`p`) is its topic's first of the epoch.
            first_kept.add(topic)
        positions.append(stream_position(stream_id))
        entry_topics.append(topic)
    return PartitionRead(
        epoch,
        None if trimmed is None else stream_position(trimmed),
        stream_position(newest[0][0]) if newest else None,
        start,
        positions,
        entry_topics,
        entries,
        frozenset(first_kept),
        [t.decode() for t in names],
        [None] * len(entries),
    )


def replay_of(
    read: PartitionRead, after: UpdateId | None, match: TopicMatcher
) -> list[Update] | None:
    """The updates after `after` (everything kept for None) of the topics `match` takes;
    None when the history cannot cover `after` (for None: when a matching topic's first
    update is trimmed, see `Broker.replay`). `read` must start at or before `after`."""
    if after is not None:
        assert read.start is None or read.start <= after.position, "the read starts after it"
        if read.epoch is None or read.epoch != after.epoch or read.newest is None:
            return None  # another history (Redis restarted empty, or a stranger's id)
        if after.position > read.newest:
            return None  # never issued
        if read.trimmed is not None and after.position < read.trimmed:
            return None  # an update after `after` was trimmed
    if read.epoch is None:
        return []
    if after is None and read.trimmed is not None:
        assert read.start is None, "a stream with nothing of the partition reads all of it"
        if any(t not in read.first_kept and match(t) for t in read.topics):
            return None  # a matching topic's first update was trimmed
    first = 0 if after is None else bisect_right(read.positions, after.position)
    topics = read.entry_topics
    return [read.update(i) for i in range(first, len(topics)) if match(topics[i])]


def replay_many(
    client: Any,
    keys: Keys,
    on_cluster: bool,
    asked: Sequence[tuple[Cursor, TopicMatcher]],
) -> list[Replayed]:
    """`Broker.replay_many` over `keys`' partitions: each partition any of `asked` can take a
    topic of, read once from the oldest of their ids there (`start_of`), one MULTI each on a
    Redis Cluster (a MULTI holds one slot's keys: a partition's), else one for them all."""
    by_partition: dict[int, list[int]] = {}
    for n, (_, match) in enumerate(asked):
        for index in partitions_matching(match, keys.partitions):
            by_partition.setdefault(index, []).append(n)
    order = sorted(by_partition)
    starts = [(keys.partition(i), start_of(asked[n][0].get(i) for n in by_partition[i]))
              for i in order]  # fmt: skip
    if on_cluster:
        reads = [read_partition(client, part, start) for part, start in starts]
    else:  # one round trip for them all
        reads = read_partitions(client, starts)
    return _sliced(asked, keys.partitions, zip(order, reads, strict=True), by_partition)


def _sliced(
    asked: Sequence[tuple[Cursor, TopicMatcher]],
    partitions: int,
    reads: Iterable[tuple[int, PartitionRead]],
    by_partition: dict[int, list[int]],
) -> list[Replayed]:
    """Each of `asked`'s replay from the reads of its partitions (`by_partition`: which of
    `asked` each read serves), merged across partitions by the time Redis wrote each update."""
    lost: list[set[int]] = [{i for i in after if i >= partitions} for after, _ in asked]
    heads: list[dict[int, UpdateId]] = [{} for _ in asked]
    updates: list[list[Update]] = [[] for _ in asked]
    for index, read in reads:
        for n in by_partition[index]:
            after, match = asked[n]
            if read.epoch is not None and read.newest is not None:
                heads[n][index] = UpdateId(read.epoch, *read.newest)
            replayed = replay_of(read, after.get(index), match)
            if replayed is None:
                lost[n].add(index)
            else:
                updates[n] += replayed
    for of_one in updates:
        if len({u.id.partition for u in of_one}) > 1:
            of_one.sort(key=lambda u: (u.id.ms, u.id.seq))  # stable: a partition's order
    return [
        Replayed(u, frozenset(gone), h) for u, gone, h in zip(updates, lost, heads, strict=True)
    ]
