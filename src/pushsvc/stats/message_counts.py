"""A topic's messages counted by type over its exact time windows (pure).

Messages are traffic: "errors per minute" is a count of the `error` messages in the last
minute. Each window covers the messages with `ts` in `(T - w, T]` on the topic's clock `T`, as
the value windows do (`pushsvc.stats.windows`), so a topic's statistics and its message counts
always describe the same moment. A late message (within the allowed lateness) is put in its
place, so an event or a tick costs O(1) amortised per window and a summary O(types).

Shaped for a topic per user, where most topics hold a message or two: one list of the widest
window's messages (time and type, in time order) serves every window, since a narrower window
on the same clock holds a suffix of it; each window keeps only how many of the newest it holds
and a count per type. So a topic's record is bounded by the messages within its widest window,
whatever its age. What a summary names is bounded too: a window holding more than `MAX_TYPES`
types names its `MAX_TYPES` most frequent (ties by name) and counts the rest as `OTHER`, which
no type can be named. The choice is made from the window's messages alone, never from the
order they came in, so an aggregator rebuilt from the log (which replays only the widest
window's messages) summarises what one that ran all along does.

Only the exact time windows count messages: a sketch window of hours or days would have to
keep every message's time to slide exactly, which is what sketch windows exist to avoid.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any

MessageSummary = dict[str, dict[str, dict[str, float | int]]]
"""`{window: {type: {"count": n, "rate": n per second}}}`."""

MAX_TYPES = 32
"""Types a window's summary names on their own (its most frequent); the rest are `OTHER`."""

OTHER = "(other)"
"""What the messages of the types past `MAX_TYPES` are counted as: not a valid type
(`pushsvc.core.event.MESSAGE_TYPE`), so it never merges with one."""

_SPARE = 16
"""Messages that left every window kept in the list before it is compacted (amortised O(1))."""


class MessageCounts:
    """Messages by type in each of a topic's exact time windows (`labels`, `widths_us`)."""

    __slots__ = ("_counts", "_entries", "_held", "_labels", "_wide", "_widths", "clock_us")

    def __init__(self, widths_us: Sequence[int], labels: Sequence[str]) -> None:
        self._widths = tuple(widths_us)
        self._labels = tuple(labels)
        self._wide = max(range(len(self._widths)), key=self._widths.__getitem__, default=-1)
        # The widest window's messages (time, the type counted), oldest first, after the ones
        # that left it and wait for the next compaction.
        self._entries: list[tuple[int, str]] = []
        self._held = [0] * len(self._widths)
        """How many of the newest entries each window holds."""
        self._counts: tuple[dict[str, int], ...] = tuple({} for _ in self._widths)
        self.clock_us: int | None = None

    def __len__(self) -> int:
        """Messages held: those within the widest window."""
        return 0 if self._wide < 0 else self._held[self._wide]

    def insert(self, ts_us: int, kind: str, clock_us: int) -> None:
        """Count a message of `kind` at `ts_us`, the topic's clock being `clock_us` after it
        (a message older than a window is in none of it)."""
        self.advance(clock_us)
        wide = self._wide
        if wide < 0 or ts_us <= clock_us - self._widths[wide]:
            return
        kind = sys.intern(kind)  # one string per type, however many messages hold it
        entries = self._entries
        if not entries or entries[-1][0] <= ts_us:
            entries.append((ts_us, kind))
        else:
            # Late (within the allowed lateness): after the ones of its time, found from the
            # newest end, where a late message lands.
            at = len(entries)
            while at and entries[at - 1][0] > ts_us:
                at -= 1
            entries.insert(at, (ts_us, kind))
        held = self._held
        for index, width in enumerate(self._widths):
            # In the window: among its newest (every entry after it is newer, and in it too).
            if ts_us > clock_us - width:
                held[index] += 1
                counts = self._counts[index]
                counts[kind] = counts.get(kind, 0) + 1

    def advance(self, clock_us: int) -> bool:
        """Move the clock to `clock_us` (never back) and slide every window; whether a count
        changed."""
        if self.clock_us is not None and clock_us <= self.clock_us:
            return False
        self.clock_us = clock_us
        entries, held = self._entries, self._held
        if not entries:
            return False
        total = len(entries)
        changed = False
        for index, width in enumerate(self._widths):
            bound = clock_us - width
            inside = held[index]
            if not inside or entries[total - inside][0] > bound:
                continue
            counts = self._counts[index]
            while inside and entries[total - inside][0] <= bound:
                kind = entries[total - inside][1]
                left = counts[kind] - 1
                if left:
                    counts[kind] = left
                else:
                    del counts[kind]
                inside -= 1
            held[index] = inside
            changed = True
        gone = total - held[self._wide]
        if gone > _SPARE + held[self._wide] or gone == total:
            del entries[:gone]
        return changed

    def summary(self) -> MessageSummary:
        return {
            label: {
                kind: {"count": count, "rate": count * 1_000_000 / width}
                for kind, count in _named(counts)
            }
            for label, width, counts in zip(self._labels, self._widths, self._counts, strict=True)
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


def _named(counts: Mapping[str, int]) -> list[tuple[str, int]]:
    """A window's counts by type as a summary names them, sorted: every type where there are
    at most `MAX_TYPES`, else the `MAX_TYPES` most frequent (ties by name) and `OTHER`."""
    if len(counts) <= MAX_TYPES:
        return sorted(counts.items())
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    named = sorted(ranked[:MAX_TYPES])
    named.append((OTHER, sum(count for _, count in ranked[MAX_TYPES:])))
    return named
