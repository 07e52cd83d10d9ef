"""A session topic's own statistics per time window (pure): over the session events with ts
in `(T - w, T]`, as every other statistic of the topic.

* `bounce_rate`: sessions of one event / sessions;
* `events_per_session`: the mean of the `events` tag;
* `active`: the `open` tag of the newest session event applied (the sessions open when it was
  appended; the same in every window);
* with a funnel, `funnel`: per step `{"step", "sessions"` (sessions that reached it),
  `"conversion"` (of the first step), `"step_conversion"` (of the step before), `"median_s"`
  (the median of the seconds from the first step to it, the `s<n>` tags; 0 for the first
  step)`}`. Undefined values (no session, a step before with none) are null.

The events are the ones `pushsvc.aggregate.sessionize.session_event` makes; an event without
an `events` tag (none should reach a session topic) counts as one event. Each window keeps its
sessions ordered by time and, per funnel step, the sorted seconds to it: an insert or an
expiry costs O(log n) plus a list move; a summary costs O(steps).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sortedcontainers import SortedKeyList, SortedList

from pushsvc.core.durations import duration_label

__all__ = ["SessionRecord", "SessionWindows", "record_of"]

SessionRecord = tuple[int, int, int, tuple[float, ...]]
"""(ts µs, events, steps reached, seconds from the first step to each reached step after it)."""


def record_of(ts_us: int, tags: Mapping[str, str] | None, steps: Sequence[str]) -> SessionRecord:
    """A session event's record: its time, event count, how many funnel steps it reached."""
    tags = tags or {}
    try:
        events = int(tags.get("events", "1"))
    except ValueError:
        events = 1
    reached = tags.get("reached")
    level = steps.index(reached) + 1 if reached in steps else 0
    since: list[float] = []
    for index in range(2, level + 1):
        try:
            since.append(float(tags.get(f"s{index}", "nan")))
        except ValueError:
            since.append(float("nan"))
    return (ts_us, events, level, tuple(since))


class _Window:
    __slots__ = ("bounces", "events", "reached", "records", "seconds", "width")

    def __init__(self, width: int, steps: int) -> None:
        self.width = width
        self.records: SortedKeyList = SortedKeyList(key=lambda r: r[0])
        self.events = 0
        self.bounces = 0
        self.reached = [0] * steps  # sessions that reached step i (index 0: the first)
        self.seconds = [SortedList() for _ in range(max(0, steps - 1))]

    def add(self, record: SessionRecord, sign: int) -> None:
        _, events, level, since = record
        self.events += sign * events
        self.bounces += sign * (events == 1)
        for index in range(level):
            self.reached[index] += sign
        for index, seconds in enumerate(since):
            if seconds == seconds:  # NaN: a tag missing
                if sign > 0:
                    self.seconds[index].add(seconds)
                else:
                    self.seconds[index].remove(seconds)


class SessionWindows:
    """The session statistics of one session topic's time windows. Not greenlet-safe."""

    def __init__(
        self,
        windows_us: Sequence[int],
        steps: Sequence[str] = (),
        labels: Sequence[str] | None = None,
    ) -> None:
        """`labels`: one per window of `windows_us`, in that order (the rule's, as its file
        writes them); by default `duration_label`'s."""
        self._steps = tuple(steps)
        named = dict(zip(windows_us, labels, strict=True)) if labels is not None else {}
        self._windows = [_Window(w, len(self._steps)) for w in sorted(windows_us)]
        self._labels = [named.get(w.width) or duration_label(w.width) for w in self._windows]
        self.clock_us: int | None = None
        self.active: int | None = None

    def insert(self, ts_us: int, tags: Mapping[str, str] | None) -> None:
        """One session event, then the clock moved to the newest event time seen."""
        record = record_of(ts_us, tags, self._steps)
        open_now = (tags or {}).get("open")
        if open_now is not None and open_now.isdigit():
            self.active = int(open_now)
        if self.clock_us is None or ts_us > self.clock_us:
            self.advance(ts_us)
        clock = self.clock_us
        assert clock is not None
        for window in self._windows:
            if ts_us > clock - window.width:
                window.records.add(record)
                window.add(record, 1)

    def advance(self, clock_us: int) -> None:
        """Move the clock forward: sessions at or before `clock - w` leave window `w`."""
        if self.clock_us is not None and clock_us <= self.clock_us:
            return
        self.clock_us = clock_us
        for window in self._windows:
            records = window.records
            edge = clock_us - window.width
            while records and records[0][0] <= edge:
                window.add(records.pop(0), -1)

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per window label, its session statistics."""
        return {
            label: self._of(window)
            for label, window in zip(self._labels, self._windows, strict=True)
        }

    def _of(self, window: _Window) -> dict[str, Any]:
        sessions = len(window.records)
        out: dict[str, Any] = {
            "bounce_rate": window.bounces / sessions if sessions else None,
            "events_per_session": window.events / sessions if sessions else None,
            "active": self.active,
        }
        if self._steps:
            funnel = []
            first = window.reached[0] if window.reached else 0
            for index, step in enumerate(self._steps):
                count = window.reached[index]
                before = window.reached[index - 1] if index else None
                funnel.append(
                    {
                        "step": step,
                        "sessions": count,
                        "conversion": count / first if first else None,
                        "step_conversion": (
                            (count / before if before else None) if index else None
                        ),
                        "median_s": _median(window.seconds[index - 1])
                        if index
                        else (0.0 if count else None),
                    }
                )
            out["funnel"] = funnel
        return out


def _median(values: SortedList) -> float | None:
    """pandas' median (the mean of the two middle values of an even count)."""
    n = len(values)
    if not n:
        return None
    middle = n // 2
    if n % 2:
        return float(values[middle])
    return float(values[middle - 1] + values[middle]) / 2
