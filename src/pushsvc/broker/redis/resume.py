"""Where a read of a partition's stream resumes after an update id (pure but for one round
trip): the history's and the alert changes' reads share it, so that both say "gap" alike."""

from __future__ import annotations

from collections.abc import Callable

from redis import Redis

from pushsvc.broker.redis.keys import PartitionKeys
from pushsvc.broker.redis.wire import stream_entries, stream_position
from pushsvc.core.updates import UpdateId

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
    read by its time instead (stream ids are times in ms)."""
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
        return epoch, head, f"({after.ms}-{MAX_SEQ}", True
    return epoch, head, "-", False
