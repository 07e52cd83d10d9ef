"""`?replay=N` on a messages stream: where it resumes so that its first messages are the
topics' last N.

A stream that resumes from a cursor gets every update after it, exactly, and goes live with
no gap and no duplicate (`pushsvc.deliver.subscription`). So the last N messages are found in
the history (each named topic's newest updates, or a pattern's partitions), and the stream
resumes from a cursor just before the oldest of them in its partition, or at the partition's
newest update where none of them is: the replay, then live, comes from the one path that
keeps the delivery promise. The ids before a kept message are positions the history covers
(each is at or after what was trimmed), so the resume is exact.
"""

from __future__ import annotations

from pushsvc.broker.base import Broker, HistoryKeeper
from pushsvc.core.cursor import Cursor
from pushsvc.core.topics import TopicMatcher
from pushsvc.core.updates import Update, UpdateId
from pushsvc.deliver.projection import Projection

MAX_REPLAY = 1000
"""The most messages `?replay=` takes."""

SCAN_UPDATES = 10_000
"""How many of a topic's newest updates are looked through for its messages (the default
history of a partition)."""

_U64 = 2**64 - 1


def cursor_before_last(broker: Broker, matcher: TopicMatcher, count: int) -> Cursor | None:
    """The cursor from which a stream of `matcher`'s topics replays their last `count` messages
    (then the rest of each partition's history after them); where they have none, the
    partitions' newest updates as read; None where nothing is kept (the stream starts live).

    Named topics are read from their own history (`HistoryKeeper.history`, newest first); a
    pattern from every partition's whole history (`Broker.replay` from nothing: what a resume
    from an old cursor reads, bounded by the history)."""
    found: list[Update] = []
    heads: dict[int, UpdateId] = {}
    messages = Projection(None, None, messages=True)
    if matcher.exact:
        if not isinstance(broker, HistoryKeeper):
            return None
        for topic in sorted(matcher.names):
            page = broker.history(topic, limit=SCAN_UPDATES)
            if page.resume is not None:
                heads[page.resume.partition] = page.resume
            found += [u for u in page.updates if messages.holds_message(u)]
    else:
        replayed = broker.replay(Cursor(), matcher)
        heads.update(replayed.heads)
        for update in replayed.updates:
            heads.setdefault(update.id.partition, update.id)
            if update.id.is_after(heads[update.id.partition]):
                heads[update.id.partition] = update.id
        found = [u for u in replayed.updates if messages.holds_message(u)]
    if not found:
        # None yet: resume from each partition's newest update as read, so that a message
        # published while this was read is replayed, not passed by the stream's start.
        return Cursor(heads.values()) if heads else None
    found.sort(key=lambda u: (u.id.ms, u.id.partition, u.id.seq))
    oldest: dict[int, UpdateId] = {}
    for update in found[-count:]:
        oldest.setdefault(update.id.partition, update.id)
    ids = [_before(oldest[p]) if p in oldest else head for p, head in heads.items()]
    return Cursor(ids)


def _before(update_id: UpdateId) -> UpdateId:
    """The position just before `update_id` in its history (a resume point, never an id)."""
    if update_id.seq:
        return UpdateId(update_id.epoch, update_id.ms, update_id.seq - 1)
    return UpdateId(update_id.epoch, update_id.ms - 1, _U64)
