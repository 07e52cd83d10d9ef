"""Reading one topic's updates from the history stream (`Broker.history` on Redis).

Points (closed series buckets) share the stream but are no part of a topic's history: the
chain leaves them out and the scans skip them (`/series` answers them).

Each partition's history is one stream for its topics (`P:history`: t=topic, c=clock_us,
b=body, p=the stream id of the topic's previous update), so a topic's updates are interleaved
with its partition's others. "The newest N" and "since a time" follow the topic's own chain
from its latest update backwards (`lua/topic_history.lua`, a bounded number of entries per
call): they cost the topic's entries, however rare the topic is among the others.
`_alerts` is read from each partition's alert changes, kept apart for their own retention
(`alert_changes.py`).
"After an id" (a resume) reads forwards from that id in chunks, filtering by topic, and stops
when the page is full.
Entries written before `p` existed are scanned backwards the same way, so a history kept
across an upgrade reads whole.

A topic's deletion (`DELETE /topics/{t}`) stays in the stream but starts no chain: a topic's
history ends before it. A read after an id before it starts after it, as a gap.

Every read is bounded by the head read first, so the page and its `resume` id agree even
while updates keep arriving.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from redis import Redis

from pushsvc.broker.base import HistoryPage
from pushsvc.broker.redis.alert_changes import read_alert_changes
from pushsvc.broker.redis.keys import Keys, PartitionKeys
from pushsvc.broker.redis.resume import newest_page, start_after
from pushsvc.broker.redis.script_replies import HistoryEntry, WalkReply, WalkStop
from pushsvc.broker.redis.scripts import Script
from pushsvc.core.topics import ALERTS
from pushsvc.core.updates import Kind, Update, UpdateId

_FIRST_CHUNK = 256
_MAX_CHUNK = 8192
# Entries one call of the walk script returns at most: bounds how long it holds Redis.
_WALK_CHUNK = 512


class HistoryReader:
    def __init__(self, client: Redis, keys: Keys) -> None:
        self._client = client
        self._keys = keys
        self._walk = Script(client, "topic_history")

    def read(
        self, topic: str, *, after: UpdateId | None, since_us: int | None, limit: int
    ) -> HistoryPage:
        if topic == ALERTS:
            return read_alert_changes(
                self._client, self._keys, after=after, since_us=since_us, limit=limit
            )
        part = self._keys.of(topic)
        if after is not None:
            return self._after(part, topic, after, since_us, limit)
        wanted = None if since_us is not None else limit + 1
        walked = self._newest_first(part, topic, since_us, wanted)
        if walked is None:
            return HistoryPage([], None, False)
        head, updates = walked
        return newest_page(updates, head, since_us, limit)

    def _newest_first(
        self, part: PartitionKeys, topic: str, since_us: int | None, wanted: int | None
    ) -> tuple[UpdateId, list[Update]] | None:
        """The topic's updates in partition `part` from its newest back (to `since_us`, or
        `wanted` of them) and the head: None when there is no history."""
        keys = [part.epoch, part.latest, part.history, part.alerts_head]
        alerts = "1" if topic == ALERTS else ""
        oldest = "" if since_us is None else str(since_us)
        entries: list[HistoryEntry] = []
        start = ""
        epoch: str | None = None
        head: bytes | None = None
        while wanted is None or len(entries) < wanted:
            most = _WALK_CHUNK if wanted is None else min(_WALK_CHUNK, wanted - len(entries))
            args: list[str | int] = [topic, most, oldest, start, alerts]
            reply = WalkReply.decode(self._walk(keys=keys, args=args))
            if reply.epoch is None or (epoch is not None and reply.epoch != epoch):
                break  # no history, or it was lost meanwhile: what was read stands
            if epoch is None:
                epoch, head = reply.epoch, reply.head
            entries += reply.entries
            if reply.stop is WalkStop.END:
                break
            assert reply.resume_from is not None  # MORE and SCAN always say where
            if reply.stop is WalkStop.MORE:
                start = reply.resume_from
                continue
            # SCAN: entries written before the chain; scan on from there.
            upper = "(" + reply.resume_from
            entries += self._scan(part, topic, upper, since_us, wanted, entries)
            break
        if epoch is None or head is None:
            return None
        of_epoch = epoch
        # A topic's chain holds its updates only (`publish_updates.lua`), as the scan keeps.
        updates = [
            Update.numbered(topic, UpdateId.of_stream_id(of_epoch, e.stream_id), e.clock_us, e.body)
            for e in entries
        ]
        return UpdateId.of_stream_id(epoch, head), updates

    def _scan(
        self,
        part: PartitionKeys,
        topic: str,
        upper: str,
        since_us: int | None,
        wanted: int | None,
        have: list[HistoryEntry],
    ) -> list[HistoryEntry]:
        found: list[HistoryEntry] = []
        name = topic.encode()
        for stream_id, fields in _backwards(self._client, part.history, upper):
            if fields[b"t"] != name or _is_point(fields):
                continue
            if _is_deletion(fields):
                break  # the topic's history starts after it
            clock = int(fields[b"c"])
            if since_us is not None and clock < since_us:
                break  # a topic's clock never goes back
            found.append(HistoryEntry(stream_id, clock, fields[b"b"]))
            if wanted is not None and len(have) + len(found) >= wanted:
                break
        return found

    def _after(
        self,
        part: PartitionKeys,
        topic: str,
        after: UpdateId,
        since_us: int | None,
        limit: int,
        *,
        by_time: bool = False,
    ) -> HistoryPage:
        """The topic's updates of partition `part` after `after`. With `by_time`, `after` may
        be of another partition: then those after its time (stream ids are times in ms)."""
        found = start_after(
            self._client,
            part,
            part.trimmed,
            after,
            by_time=lambda epoch: by_time and after.epoch != epoch,
        )
        if found is None:
            return HistoryPage([], None, False, gap=True)
        epoch, head, start, continues = found
        name = topic.encode()
        page: list[Update] = []
        for stream_id, fields in _forwards(self._client, part.history, start, head):
            clock = int(fields[b"c"])
            if fields[b"t"] == name and _is_deletion(fields):
                page, continues = [], False  # what came before is gone: a gap
                continue
            if (
                fields[b"t"] == name
                and (since_us is None or clock >= since_us)
                and not _is_point(fields)
            ):
                update_id = UpdateId.of_stream_id(epoch, stream_id)
                page.append(Update.numbered(topic, update_id, clock, fields[b"b"]))
                if len(page) > limit:
                    break
        more = len(page) > limit
        updates = page[:limit]
        return HistoryPage(updates, updates[-1].id if more else head, more, not continues)


def _kind(fields: dict[bytes, bytes]) -> Kind:
    """The entry's kind, as its `k` field says (`Kind.stored`)."""
    return Kind.stored(fields.get(b"k"), fields[b"b"])


def _is_deletion(fields: dict[bytes, bytes]) -> bool:
    """A topic's deletion: its history starts after it."""
    return _kind(fields) is Kind.DELETION


def _is_point(fields: dict[bytes, bytes]) -> bool:
    """A series point among the updates: the history answers updates only (points: /series)."""
    return _kind(fields) is Kind.POINT


_Raw = tuple[bytes, dict[bytes, bytes]]


def _backwards(client: Redis, key: str, upper: str) -> Iterator[_Raw]:
    """Entries from `upper` (`(id` for exclusive) back to the oldest, in growing chunks."""
    count = _FIRST_CHUNK
    while True:
        chunk: Any = client.xrevrange(key, max=upper, min="-", count=count)
        yield from chunk
        if len(chunk) < count:
            return
        upper, count = "(" + chunk[-1][0].decode(), min(count * 2, _MAX_CHUNK)


def _forwards(client: Redis, key: str, start: str, head: UpdateId) -> Iterator[_Raw]:
    """Entries from `start` up to `head` (inclusive), read in growing chunks."""
    lower, count = start, _FIRST_CHUNK
    while True:
        chunk: Any = client.xrange(key, min=lower, max=f"{head.ms}-{head.seq}", count=count)
        yield from chunk
        if len(chunk) < count:
            return
        lower, count = "(" + chunk[-1][0].decode(), min(count * 2, _MAX_CHUNK)
