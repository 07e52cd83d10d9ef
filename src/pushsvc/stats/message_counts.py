"""A topic's messages counted by type over its exact time windows (pure).

Messages are traffic: "errors per minute" is a count of the `error` messages in the last
minute. Each window covers the messages with `ts` in `(T - w, T]` on the topic's clock `T`, as
the value windows do (`pushsvc.stats.windows`), so a topic's statistics and its message counts
always describe the same moment. A window keeps its messages' times and types in time order
(a late one, within the allowed lateness, is put in its place) and a count per type, so an
event or a tick costs O(1) amortised per window and a summary O(types).

Only the exact time windows count messages: a sketch window of hours or days would have to
keep every message's time to slide exactly, which is what sketch windows exist to avoid.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

MessageSummary = dict[str, dict[str, dict[str, float | int]]]
"""`{window: {type: {"count": n, "rate": n per second}}}`."""


class _Window:
    __slots__ = ("counts", "entries", "width_us")

    def __init__(self, width_us: int) -> None:
        self.width_us = width_us
        self.entries: deque[tuple[int, str]] = deque()
        self.counts: dict[str, int] = {}

    def insert(self, ts_us: int, kind: str) -> None:
        entries = self.entries
        if not entries or entries[-1][0] <= ts_us:
            entries.append((ts_us, kind))
        else:
            # Late (within the allowed lateness): after the ones of its time, found from the
            # newest end, where a late message lands.
            at = len(entries)
            while at and entries[at - 1][0] > ts_us:
                at -= 1
            entries.insert(at, (ts_us, kind))
        self.counts[kind] = self.counts.get(kind, 0) + 1

    def evict(self, bound_us: int) -> bool:
        """Drop the messages at or before `bound_us`; whether any left."""
        entries, counts = self.entries, self.counts
        changed = False
        while entries and entries[0][0] <= bound_us:
            _, kind = entries.popleft()
            left = counts[kind] - 1
            if left:
                counts[kind] = left
            else:
                del counts[kind]
            changed = True
        return changed


class MessageCounts:
    """Messages by type in each of a topic's exact time windows (`labels`, `widths_us`)."""

    __slots__ = ("_labels", "_windows", "clock_us")

    def __init__(self, widths_us: Sequence[int], labels: Sequence[str]) -> None:
        self._labels = tuple(labels)
        self._windows = tuple(_Window(width) for width in widths_us)
        self.clock_us: int | None = None

    def __len__(self) -> int:
        """Messages held: those within the widest window."""
        return max((len(w.entries) for w in self._windows), default=0)

    def insert(self, ts_us: int, kind: str, clock_us: int) -> None:
        """Count a message of `kind` at `ts_us`, the topic's clock being `clock_us` after it
        (a message older than a window is in none of it)."""
        self.advance(clock_us)
        for window in self._windows:
            if ts_us > clock_us - window.width_us:
                window.insert(ts_us, kind)

    def advance(self, clock_us: int) -> bool:
        """Move the clock to `clock_us` (never back) and slide every window; whether a count
        changed."""
        if self.clock_us is not None and clock_us <= self.clock_us:
            return False
        self.clock_us = clock_us
        changed = False
        for window in self._windows:
            changed |= window.evict(clock_us - window.width_us)
        return changed

    def summary(self) -> MessageSummary:
        return {
            label: {
                kind: {"count": count, "rate": count * 1_000_000 / window.width_us}
                for kind, count in sorted(window.counts.items())
            }
            for label, window in zip(self._labels, self._windows, strict=True)
        }

    def merged(self, summary: Mapping[str, Any]) -> dict[str, Any]:
        """`summary` (a topic's windows) with `messages` in each window that holds one: a
        window without messages has no member, whatever the topic held before, so that an
        aggregator rebuilt from the log (which may hold none of the topic's old messages)
        drafts what one that ran all along does."""
        counts = self.summary()
        return {
            label: {**stats, "messages": by_type} if (by_type := counts.get(label)) else stats
            for label, stats in summary.items()
        }
