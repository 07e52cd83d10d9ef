"""What one partition of the memory store keeps of what its aggregator published, as the
partition's keys on Redis keep it: the bounded history, each topic's latest update, groups
and active alert instances (each sorted by name, so that a listing reads a page of them), and
the alert changes kept for their own retention. `publish_updates.lua` writes the Redis keys;
`Published.publish` is the same operation here, and the reads below answer as the Redis reads
do (`pushsvc.broker.redis.history`, `replay`).

The history keeps the newest `history` updates (more while a reader holds them: `hold`) and,
of those, no more than `history_bytes` of their bodies (`UpdateDraft.body`, what Redis stores
as `b`), always the newest one at least: a hard bound, held updates included.

Ids are `<epoch>:<ms>-<seq>` as a Redis stream numbers its entries, on the store's clock.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from itertools import islice, takewhile
from typing import NamedTuple

from sortedcontainers import SortedDict

from pushsvc.broker.base import (
    DEFAULT_HISTORY_BYTES,
    HOLD_TTL_MS,
    HistoryPage,
)
from pushsvc.core.topics import TopicMatcher
from pushsvc.core.updates import Kind, Update, UpdateDraft, UpdateId, new_epoch

Position = tuple[int, int]


def next_id(last: Position, now_ms: int) -> Position:
    """The id XADD `*` gives after `last` at `now_ms`."""
    return (now_ms, 0) if now_ms > last[0] else (last[0], last[1] + 1)


def _position(update: Update) -> Position:
    return update.id.ms, update.id.seq


class Hold(NamedTuple):
    """A reader's hold on the history: every update after `after` of `epoch` (None: any),
    until `until_ms` on the store's clock."""

    epoch: str | None
    after: Position
    until_ms: int


class Published:
    """One partition's published state (see the module's doc)."""

    def __init__(
        self,
        index: int,
        *,
        history: int,
        alert_retention_ms: int,
        history_bytes: int = DEFAULT_HISTORY_BYTES,
    ) -> None:
        self.index = index
        self._history_len = history
        self.holds: dict[str, Hold] = {}
        """Each reader's hold on the history (`hold`)."""
        self._history_bytes = history_bytes
        self._sizes: deque[int] = deque()
        """The body size of each update of `history`, in its order."""
        self.history_held = 0
        """The bytes of bodies `history` holds (the sum of `_sizes`)."""
        self._alert_retention_ms = alert_retention_ms
        self.epoch: str | None = None
        self.history: deque[Update] = deque()
        self.last_update: Position = (0, 0)
        self.trimmed: Position | None = None
        """The newest update the history dropped (this epoch)."""
        self.latest: SortedDict[str, Update] = SortedDict()
        self.first: dict[str, Position] = {}
        """Each topic's first update of the epoch (a deletion starts it afresh)."""
        self.deletions: dict[str, Position] = {}
        """Each topic's newest deletion while the history may hold it: reads start after it."""
        self.groups: dict[str, dict[str, bytes]] = {}
        self.alerts: SortedDict[str, bytes] = SortedDict()
        self.alert_changes: deque[Update] = deque()
        self.alert_changes_trimmed: Position = (0, 0)

    # -- the publish operation (publish_updates.lua) ---------------------------------------

    def publish(
        self,
        drafts: Sequence[UpdateDraft],
        now_ms: int,
        keep_point: Callable[[UpdateDraft], bool],
        drop_topic: Callable[[str], None],
    ) -> list[Update]:
        """Number the drafts, keep them, and return the updates to deliver. `keep_point`
        keeps a point in its tier (False: it is there already, and the draft is left out);
        `drop_topic` drops what the store keeps of a deleted topic outside this partition's
        published state (its series, its checkpoint)."""
        if self.epoch is None:
            self.epoch = new_epoch(self.index)
        epoch = self.epoch
        updates: list[Update] = []
        for draft in drafts:
            kind = draft.kind
            if kind is Kind.POINT and not keep_point(draft):
                continue
            self.last_update = at = next_id(self.last_update, now_ms)
            update = Update.of(draft, UpdateId(epoch, at[0], at[1]))
            self._append(update, len(draft.body))
            updates.append(update)
            topic = draft.topic
            if kind is Kind.ALERT and draft.instance is not None:
                self._keep_alert(update, *draft.instance)
            elif kind is Kind.DELETION:
                self.latest.pop(topic, None)
                self.groups.pop(topic, None)
                self.first[topic] = at  # a stream with nothing of it wants the deletion
                self.deletions[topic] = at
                drop_topic(topic)
            elif kind is Kind.UPDATE:
                self.first.setdefault(topic, at)
                self.latest[topic] = update
            if draft.groups or draft.forgotten:
                kept = self.groups.setdefault(topic, {})
                kept.update(draft.groups)
                for gid in draft.forgotten:
                    kept.pop(gid, None)
        self._trim(now_ms)
        return updates

    def _append(self, update: Update, size: int) -> None:
        self.history.append(update)
        self._sizes.append(size)
        self.history_held += size

    def hold(self, reader: str, epoch: str | None, after: Position, now_ms: int) -> None:
        """Keep every update after `after` of `epoch` (None: of whichever epoch the history
        has) for `reader`, until it holds again or `HOLD_TTL_MS` passed
        (`SessionKeeper.hold_history`)."""
        self.holds[reader] = Hold(epoch, after, now_ms + HOLD_TTL_MS)

    def _held_after(self, now_ms: int) -> Position | None:
        """The oldest position a live hold of this epoch keeps the history after."""
        oldest: Position | None = None
        for reader, hold in list(self.holds.items()):
            if hold.until_ms < now_ms:
                del self.holds[reader]  # a reader that stopped holding
            elif hold.epoch in (None, self.epoch) and (oldest is None or hold.after < oldest):
                oldest = hold.after
        return oldest

    def _trim(self, now_ms: int) -> None:
        """Down to `history` updates, or to those a reader still holds, and then to
        `history_bytes` of bodies whatever holds them (the newest update always kept), as
        `publish_updates.lua` trims."""
        history, sizes = self.history, self._sizes
        keep = self._history_len
        if len(history) > keep and self.holds:
            held = self._held_after(now_ms)
            if held is not None:
                unread = len(history) - bisect.bisect_right(history, held, key=_position)
                keep = max(keep, unread)
        while len(history) > keep or (self.history_held > self._history_bytes and len(history) > 1):
            gone = history.popleft()
            self.history_held -= sizes.popleft()
            self.trimmed = trimmed = _position(gone)
            deletions = self.deletions
            if deletions and deletions.get(gone.topic) == trimmed:
                # The history holds nothing from before it now: reads need it no more (a
                # deleted topic never read again would keep it for ever otherwise).
                del deletions[gone.topic]

    def _keep_alert(self, update: Update, key: str, body: bytes) -> None:
        if body:
            self.alerts[key] = body
        else:
            self.alerts.pop(key, None)
        changes = self.alert_changes
        changes.append(update)
        oldest_kept = update.id.ms - self._alert_retention_ms
        while changes and changes[0].id.ms < oldest_kept:
            self.alert_changes_trimmed = _position(changes.popleft())

    def forget(self, topic: str) -> None:
        """An idle topic is forgotten: its next update starts it afresh."""
        self.latest.pop(topic, None)
        self.first.pop(topic, None)
        self.groups.pop(topic, None)

    # -- reads ---------------------------------------------------------------------------

    def head(self) -> UpdateId | None:
        """The newest update's id; None while the history is empty."""
        if not self.history or self.epoch is None:
            return None
        return UpdateId(self.epoch, *self.last_update)

    def continues(self, after: UpdateId) -> bool:
        """Whether the history holds every update after `after` of this epoch."""
        if self.epoch != after.epoch or not self.history:
            return False  # another history, or a stranger's id
        if after.position > self.last_update:
            return False  # never issued
        return self.trimmed is None or after.position >= self.trimmed

    def _after(self, start: Position) -> Iterator[Update]:
        """The history after `start`, oldest first (found from the newest end: a stream that
        resumes is mostly near it)."""
        history = self.history
        at = bisect.bisect_right(history, start, key=_position)
        return islice(history, at, None)

    def replay(self, after: UpdateId | None, match: TopicMatcher) -> list[Update] | None:
        """The partition's updates after `after` (everything kept for None) of the topics
        `match` takes; None when its history cannot cover `after`."""
        if after is not None:
            if not self.continues(after):
                return None
            return [u for u in self._after(after.position) if match(u.topic)]
        if self.epoch is None:
            return []
        trimmed = self.trimmed
        if trimmed is not None and any(
            first <= trimmed and match(t) for t, first in self.first.items()
        ):
            return None  # a matching topic's first update was trimmed
        return [u for u in self.history if match(u.topic)]

    def page(
        self, after: UpdateId | None, match: TopicMatcher, limit: int
    ) -> tuple[list[Update], Position | None, bool] | None:
        """Up to `limit` updates of the history after `after` (None: from the oldest kept):
        those `match` takes, the position of the last one read (matching or not; None when
        none was) and whether more were kept after it; None when the history cannot
        continue from `after` (`HistoryPages.history_page`)."""
        if after is not None and not self.continues(after):
            return None
        start = (0, 0) if after is None else after.position
        read = list(islice(self._after(start), limit))
        if not read:
            return [], None, False
        last = _position(read[-1])
        return [u for u in read if match(u.topic)], last, last < self.last_update

    def topic_history(
        self, topic: str, *, after: UpdateId | None, since_us: int | None, limit: int
    ) -> HistoryPage:
        """See `HistoryKeeper.history` (points left out; reads start after a deletion)."""
        head = self.head()
        if after is None and since_us is None:
            newest = takewhile(
                lambda u: not u.is_deletion,
                (u for u in reversed(self.history) if u.topic == topic and not u.is_point),
            )
            page = list(islice(newest, limit + 1))
            return HistoryPage(page[:limit][::-1], head, len(page) > limit)
        gap = False
        start: Position = (0, 0)
        if after is not None:
            gap = not self.continues(after)
            if not gap:
                start = after.position
        deleted = self.deletions.get(topic)
        if deleted is not None and self.trimmed is not None and deleted <= self.trimmed:
            del self.deletions[topic]  # trimmed: the history holds nothing from before it
            deleted = None
        if deleted is not None and deleted > start:
            gap, start = gap or after is not None, deleted
        matched = (
            u
            for u in self._after(start)
            if u.topic == topic and not u.is_point and (since_us is None or u.clock_us >= since_us)
        )
        page = list(islice(matched, limit + 1))
        more = len(page) > limit
        page = page[:limit]
        return HistoryPage(page, page[-1].id if more else head, more, gap)

    def alert_history(
        self, *, after: UpdateId | None, since_us: int | None, limit: int
    ) -> HistoryPage:
        """`_alerts`' page from the alert changes kept (not the shared history)."""
        head = None if self.epoch is None else UpdateId(self.epoch, *self.last_update)
        changes: list[Update] = list(self.alert_changes)
        gap = False
        if after is not None:
            # Another history, an id never issued, or changes after it dropped: a gap.
            gap = (
                after.epoch != self.epoch
                or after.position > self.last_update
                or after.position < self.alert_changes_trimmed
            )
            if not gap:
                changes = [u for u in changes if _position(u) > after.position]
        if since_us is not None:
            changes = [u for u in changes if u.clock_us >= since_us]
        if after is None and since_us is None:
            page = changes[-(limit + 1) :]
            more = len(page) > limit
            return HistoryPage(page[-limit:] if limit else [], head, more)
        more = len(changes) > limit
        page = changes[:limit]
        return HistoryPage(page, page[-1].id if more else head, more, gap)
