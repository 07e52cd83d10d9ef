"""Reading one topic's updates from the history stream (`Broker.history` on Redis).

The history is one stream for all topics (`{prefix}history`: t=topic, c=clock_us, b=body),
so a topic's updates are interleaved with everyone's. Reads walk it in chunks from the end
that matters — XREVRANGE from the newest for "the newest N" and "since a time", XRANGE from
an id for "after an id" — filter by topic, and stop as soon as the page is full: a busy
topic costs a chunk or two; a rare one at most one pass over the `history` entries kept.
Every read is bounded by the head read first, so the page and its `resume` id agree even
while updates keep arriving.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from redis import Redis

from pushsvc.broker.base import HistoryPage
from pushsvc.broker.redis.keys import Keys
from pushsvc.updates import Update, UpdateId

_FIRST_CHUNK = 256
_MAX_CHUNK = 8192

Entry = tuple[bytes, dict[bytes, bytes]]


def read_history(
    client: Redis,
    keys: Keys,
    topic: str,
    *,
    after: UpdateId | None,
    since_us: int | None,
    limit: int,
) -> HistoryPage:
    with client.pipeline(transaction=True) as pipe:
        pipe.get(keys.epoch)
        pipe.get(keys.trimmed)
        pipe.xrevrange(keys.history, count=1)
        raw_epoch, trimmed, newest = pipe.execute()
    if raw_epoch is None or not newest:
        return HistoryPage([], None, False, gap=after is not None)
    epoch = raw_epoch.decode()
    head = UpdateId.of_stream_id(epoch, newest[0][0])
    wanted = topic.encode()

    def update(entry: Entry) -> Update:
        stream_id, fields = entry
        update_id = UpdateId.of_stream_id(epoch, stream_id)
        return Update.numbered(topic, update_id, int(fields[b"c"]), fields[b"b"])

    if after is None and since_us is None:
        page: list[Entry] = []
        for entry in _backwards(client, keys.history, head):
            if entry[1][b"t"] == wanted:
                page.append(entry)
                if len(page) > limit:
                    break
        return HistoryPage([update(e) for e in page[:limit][::-1]], head, len(page) > limit)

    if after is not None:
        continues = (
            after.epoch == epoch
            and after.position <= head.position
            and (trimmed is None or after.position >= _position(trimmed))
        )
        start = f"({after.ms}-{after.seq}" if continues else "-"
        page = []
        for entry in _forwards(client, keys.history, start, head):
            fields = entry[1]
            if fields[b"t"] == wanted and (since_us is None or int(fields[b"c"]) >= since_us):
                page.append(entry)
                if len(page) > limit:
                    break
        gap = not continues
    else:
        assert since_us is not None
        # A topic's clock never goes back: walking back from the newest, its first update
        # older than `since_us` ends the read.
        page = []
        for entry in _backwards(client, keys.history, head):
            fields = entry[1]
            if fields[b"t"] == wanted:
                if int(fields[b"c"]) < since_us:
                    break
                page.append(entry)
        page.reverse()
        gap = False
    more = len(page) > limit
    updates = [update(e) for e in page[:limit]]
    return HistoryPage(updates, updates[-1].id if more else head, more, gap)


def _backwards(client: Redis, key: str, head: UpdateId) -> Iterator[Entry]:
    """Entries from `head` back to the oldest, read in growing chunks."""
    upper, count = f"{head.ms}-{head.seq}", _FIRST_CHUNK
    while True:
        chunk: Any = client.xrevrange(key, max=upper, min="-", count=count)
        yield from chunk
        if len(chunk) < count:
            return
        upper, count = "(" + chunk[-1][0].decode(), min(count * 2, _MAX_CHUNK)


def _forwards(client: Redis, key: str, start: str, head: UpdateId) -> Iterator[Entry]:
    """Entries from `start` up to `head` (inclusive), read in growing chunks."""
    lower, count = start, _FIRST_CHUNK
    while True:
        chunk: Any = client.xrange(key, min=lower, max=f"{head.ms}-{head.seq}", count=count)
        yield from chunk
        if len(chunk) < count:
            return
        lower, count = "(" + chunk[-1][0].decode(), min(count * 2, _MAX_CHUNK)


def _position(stream_id: bytes) -> tuple[int, int]:
    ms, _, seq = stream_id.partition(b"-")
    return int(ms), int(seq)
