"""A stream's cursor: where it is in each partition's history (pure).

Each partition of the topics has a history and an epoch of its own (`pushsvc.core.updates`:
an id names its partition). A stream over several partitions cannot say where it is with one
update id, so it says it with a cursor: partition → the last update id the stream has of that
partition. A partition absent from a cursor is one the stream has nothing of yet.

Text form (the SSE `id:` of a stream over several partitions, and what comes back as its
`Last-Event-ID`): the ids joined by `,`, in partition order. A one-partition cursor's text is
exactly its id's, so a single update id is a cursor, and `Last-Event-ID`s issued before
partitions stay valid. Clients treat the text as opaque. It is bounded by the partition count,
never by the topic count.

A stream that has nothing yet (its topics have published nothing) still gives an id: its
cursor is empty, and its text as an id is `EARLIEST`. A browser's `EventSource` sends
`Last-Event-ID` only once it has read an `id:`, so without one a client dropped before its
first update would come back as a new subscriber, and what was published meanwhile would be
lost with no gap. Resumed from `EARLIEST`, a stream knows nothing of any partition, so it
replays all that the history keeps of its topics (or says where that is not all: a gap), as
Mercure's `earliest` asks for.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from pushsvc.core.partitions import MAX_PARTITIONS
from pushsvc.core.updates import UpdateId

_SEPARATOR = ","
_MAX_ID_LEN = 16 + 1 + 20 + 1 + 20
EARLIEST = "earliest"
"""The id of the empty cursor, the reserved `Last-Event-ID` that asks for every update the
history keeps of a stream's topics (never an update's id: a Mercure publication with it is
refused)."""
MAX_CURSOR_LEN = MAX_PARTITIONS * (_MAX_ID_LEN + 1) - 1
"""The longest text a cursor can have (one longest id per partition); longer is refused
unread."""


class Cursor(Mapping[int, UpdateId]):
    """An immutable map partition → the last `UpdateId` a stream has of that partition.

    Make one with `Cursor(ids)` (at most one id per partition, ValueError otherwise),
    `Cursor.parse` (a client's text, None for anything we could not have issued) or
    `Cursor.newest` (the newest id per partition of some updates' ids). Equal cursors have
    equal text."""

    __slots__ = ("_by_partition", "_ids", "text")

    _by_partition: dict[int, UpdateId]
    _ids: tuple[UpdateId, ...]
    text: str
    """The ids' text joined by `,` in partition order ('' for an empty cursor)."""

    def __init__(self, ids: Iterable[UpdateId] = ()) -> None:
        by_partition: dict[int, UpdateId] = {}
        for update_id in ids:
            partition = update_id.partition
            if partition in by_partition:
                raise ValueError(f"two ids of partition {partition} in one cursor")
            by_partition[partition] = update_id
        self._set(by_partition)

    def _set(self, by_partition: dict[int, UpdateId]) -> None:
        ordered = tuple(by_partition[p] for p in sorted(by_partition))
        self._by_partition = dict(zip((i.partition for i in ordered), ordered, strict=True))
        self._ids = ordered
        self.text = _SEPARATOR.join(i.text for i in ordered)

    @classmethod
    def parse(cls, text: object) -> Cursor | None:
        """The cursor (the empty one for `EARLIEST`), or None when `text` is not one we could
        have issued (clients send these): empty, too long, more parts than partitions, a part
        that is not an update id or whose epoch names no partition (past the last, or spelt
        with leading zeros), or two ids of one partition."""
        if not isinstance(text, str) or not text or len(text) > MAX_CURSOR_LEN:
            return None
        if text == EARLIEST:
            return cls()
        parts = text.split(_SEPARATOR)
        if len(parts) > MAX_PARTITIONS:
            return None
        by_partition: dict[int, UpdateId] = {}
        for part in parts:
            update_id = UpdateId.parse(part)
            if update_id is None or not _names_a_partition(update_id):
                return None
            if update_id.partition in by_partition:
                return None
            by_partition[update_id.partition] = update_id
        cursor = cls.__new__(cls)
        cursor._set(by_partition)
        return cursor

    @classmethod
    def newest(cls, ids: Iterable[UpdateId]) -> Cursor:
        """The cursor of the newest of these ids in each partition (a snapshot's updates':
        a stream that has them has everything up to there)."""
        by_partition: dict[int, UpdateId] = {}
        for update_id in ids:
            kept = by_partition.get(update_id.partition)
            if kept is None or update_id.is_after(kept):
                by_partition[update_id.partition] = update_id
        cursor = cls.__new__(cls)
        cursor._set(by_partition)
        return cursor

    def admits(self, update_id: UpdateId) -> bool:
        """Whether a stream at this cursor still lacks `update_id`: it has nothing of its
        partition, or the id comes after the cursor's there (`UpdateId.is_after`: an id of
        another epoch of the partition counts as newer)."""
        mine = self._by_partition.get(update_id.partition)
        return mine is None or update_id.is_after(mine)

    def advanced(self, update_id: UpdateId) -> Cursor:
        """This cursor with `update_id` as its position in `update_id`'s partition."""
        by_partition = dict(self._by_partition)
        by_partition[update_id.partition] = update_id
        cursor = Cursor.__new__(Cursor)
        cursor._set(by_partition)
        return cursor

    def without(self, partitions: Iterable[int]) -> Cursor:
        """This cursor knowing nothing of `partitions`."""
        drop = set(partitions)
        cursor = Cursor.__new__(Cursor)
        cursor._set({p: i for p, i in self._by_partition.items() if p not in drop})
        return cursor

    @property
    def id_text(self) -> str:
        """The cursor as a stream's `id:`: its text, `EARLIEST` when it is empty."""
        return self.text or EARLIEST

    @property
    def ids(self) -> tuple[UpdateId, ...]:
        """The ids, in partition order."""
        return self._ids

    def __getitem__(self, partition: int) -> UpdateId:
        return self._by_partition[partition]

    def __iter__(self) -> Iterator[int]:
        return iter(self._by_partition)

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, partition: object) -> bool:
        return partition in self._by_partition

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Cursor):
            return self.text == other.text
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.text)

    def __repr__(self) -> str:
        return f"Cursor({self.text!r})"

    def __str__(self) -> str:
        return self.text


def _names_a_partition(update_id: UpdateId) -> bool:
    """An epoch we could have made: its partition prefix (if any) below the partition limit,
    without leading zeros."""
    return update_id.partition < MAX_PARTITIONS and not (
        len(update_id.epoch) > 8 and update_id.epoch[0] == "0"
    )
