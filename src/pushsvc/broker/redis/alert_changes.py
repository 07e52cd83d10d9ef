"""Reading `_alerts`' history on Redis: each partition's alert changes, kept apart from the
history every topic shares (`P:alert_changes`, written by `lua/publish_updates.lua` under the
same stream ids as in `P:history`, trimmed to the longest series retention), so that past
periods stay readable however busy the other topics are.

An alert change travels with the topic it watches, so every partition has its own; a page
merges them in `resume.merge_order` (the time Redis wrote each change, then the partition),
and a read after an id continues in that id's partition exactly and in the others from there. Each
partition's read is bounded by its history's head, read first, so a page and its `resume` id
agree even while changes keep arriving. A read after an id older than the newest trimmed
change of that id's partition is a gap: some changes after it are gone.
"""

from __future__ import annotations

from typing import Any

from redis import Redis

from pushsvc.broker.base import HistoryPage
from pushsvc.broker.redis.keys import Keys, PartitionKeys
from pushsvc.broker.redis.resume import merge_order, newest_page, start_after, update_order
from pushsvc.broker.redis.wire import stream_entries
from pushsvc.core.topics import ALERTS
from pushsvc.core.updates import Kind, Update, UpdateId, epoch_partition


def read_alert_changes(
    client: Redis, keys: Keys, *, after: UpdateId | None, since_us: int | None, limit: int
) -> HistoryPage:
    """`Broker.history(ALERTS, ...)` on Redis."""
    if after is not None:
        return _after(client, keys, after, since_us, limit)
    heads: list[UpdateId] = []
    newest_first: list[Update] = []
    for part in keys:
        with client.pipeline(transaction=True) as pipe:
            pipe.get(part.epoch)
            pipe.xrevrange(part.history, count=1)
            # With a time, every change kept (it filters by their clocks); else the newest.
            pipe.xrevrange(part.alert_changes, count=None if since_us is not None else limit + 1)
            raw_epoch, raw_head, raw_changes = pipe.execute()
        newest = stream_entries(raw_head)
        if raw_epoch is None or not newest:
            continue
        epoch = raw_epoch.decode()
        heads.append(UpdateId.of_stream_id(epoch, newest[0][0]))
        newest_first += _changes(epoch, raw_changes, since_us)
    if not heads:
        return HistoryPage([], None, False)
    newest_first.sort(key=update_order, reverse=True)
    return newest_page(newest_first, max(heads, key=merge_order), since_us, limit)


def _after(
    client: Redis, keys: Keys, after: UpdateId, since_us: int | None, limit: int
) -> HistoryPage:
    pages = [_partition_after(client, part, after, since_us, limit) for part in keys]
    merged = sorted((u for p in pages for u in p.updates), key=update_order)
    heads = [p.resume for p in pages if p.resume is not None and not p.more]
    more = any(p.more for p in pages) or len(merged) > limit
    taken = merged[:limit]
    gap = pages[epoch_partition(after.epoch) % len(pages)].gap
    head = max(heads, key=merge_order) if heads else None
    return HistoryPage(taken, taken[-1].id if more and taken else head, more, gap)


def _partition_after(
    client: Redis, part: PartitionKeys, after: UpdateId, since_us: int | None, limit: int
) -> HistoryPage:
    """The changes of partition `part` after `after`; `after` may be of another partition:
    then those after its time."""
    found = start_after(
        client,
        part,
        part.alert_changes_trimmed,
        after,
        by_time=lambda epoch: epoch_partition(after.epoch) != epoch_partition(epoch),
    )
    if found is None:
        return HistoryPage([], None, False, gap=True)
    epoch, head, start, continues = found
    most = None if since_us is not None else limit + 1
    raw: Any = client.xrange(part.alert_changes, min=start, max=f"{head.ms}-{head.seq}", count=most)
    page = _changes(epoch, raw, since_us)[: limit + 1]
    more = len(page) > limit
    updates = page[:limit]
    return HistoryPage(updates, updates[-1].id if more else head, more, not continues)


def _changes(epoch: str, raw: Any, since_us: int | None) -> list[Update]:
    """Stream entries (c=clock_us, b=body) as `_alerts` updates, in the entries' order."""
    found = []
    for stream_id, fields in stream_entries(raw):
        clock = int(fields[b"c"])
        if since_us is not None and clock < since_us:
            continue
        update_id = UpdateId.of_stream_id(epoch, stream_id)
        # Every entry of this stream is an alert change (`publish_updates.lua`).
        found.append(Update.numbered(ALERTS, update_id, clock, fields[b"b"], Kind.ALERT))
    return found
