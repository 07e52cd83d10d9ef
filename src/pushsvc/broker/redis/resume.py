"""Where a read of a partition's stream resumes after an update id (pure but for one round
trip): the history's and the alert changes' reads share it, so that both say "gap" alike.

Reads that merge several partitions order their entries by `merge_order`: the time Redis wrote
each (a stream id is `<ms>-<seq>`), then the partition, then the sequence. Within a partition
that is the stream's own order; across partitions the partition breaks the ties of one
millisecond, so that a page and a read after any id of it agree on what comes after."""

from __future__ import annotations

from collections.abc import Callable

from redis import Redis

from pushsvc.broker.base import HistoryPage
from pushsvc.broker.redis.keys import PartitionKeys
from pushsvc.broker.redis.wire import stream_entries, stream_position
from pushsvc.core.updates import Update, UpdateId, epoch_partition

MAX_SEQ = 2**64 - 1
"""The largest sequence of a stream id: `(ms-MAX_SEQ` starts after every entry of that ms."""


def start_after(
    client: Redis,
    part: PartitionKeys,
    trimmed_key: str,
    after: UpdateId,
    *,
    by_time: Callable[[str], bool],
) -> tuple[str, UpdateId, str, bool] | None:
    """Where a read of partition `part`'s stream (trimmed up to what `trimmed_key` holds)
    resumes after `after`: its epoch, its newest id, the XRANGE start, and whether that
    continues `after` exactly (else the read is a gap from the oldest kept). None when the
    partition has no history yet. `by_time(epoch)`: whether an `after` of another history is
    read by its time instead, in `merge_order`."""
    with client.pipeline(transaction=True) as pipe:
        pipe.get(part.epoch)
        pipe.get(trimmed_key)
        pipe.xrevrange(part.history, count=1)
        raw_epoch, trimmed, raw_newest = pipe.execute()
    newest = stream_entries(raw_newest)
    if raw_epoch is None or not newest:
        return None
    epoch = raw_epoch.decode()
    head = UpdateId.of_stream_id(epoch, newest[0][0])
    continues = (
        after.epoch == epoch
        and after.position <= head.position
        and (trimmed is None or after.position >= stream_position(trimmed))
    )
    if continues:
        return epoch, head, f"({after.ms}-{after.seq}", True
    if by_time(epoch):
        # Of `after`'s millisecond, this history's entries come after it when its partition
        # does (`merge_order`).
        later = epoch_partition(epoch) > after.partition
        return epoch, head, f"{after.ms}-0" if later else f"({after.ms}-{MAX_SEQ}", True
    return epoch, head, "-", False


def merge_order(update_id: UpdateId) -> tuple[int, int, int]:
    """Where an id of any partition's stream sorts among those of the others (see above)."""
    return update_id.ms, update_id.partition, update_id.seq


def update_order(update: Update) -> tuple[int, int, int]:
    """`merge_order` of an update's id."""
    return merge_order(update.id)


def newest_page(
    newest_first: list[Update], head: UpdateId, since_us: int | None, limit: int
) -> HistoryPage:
    """A page read without `after`, from the updates newest first: the newest `limit` (and
    whether there are more), or those since `since_us`, oldest first, up to `limit`."""
    if since_us is None:
        page = newest_first[: limit + 1]
        return HistoryPage(page[:limit][::-1], head, len(page) > limit)
    oldest_first = newest_first[::-1]
    more = len(oldest_first) > limit
    taken = oldest_first[:limit]
    return HistoryPage(taken, taken[-1].id if more else head, more, False)
