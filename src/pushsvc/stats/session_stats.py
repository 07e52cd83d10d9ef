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
an `events` tag (none should reach a session topic) counts as one event. Each exact window
keeps its sessions ordered by time and, per funnel step, the sorted seconds to it: an insert
or an expiry costs O(log n) plus a list move; a summary costs O(steps).

Long windows (wider than the rule's `exact_percentiles_up_to`) keep no sessions: they hold the
same statistics over the sub-buckets of `pushsvc.stats.long_windows` (the window's old edge
rounded out by less than 1/60 of it, as for the topic's other statistics there). Each count
or sum is one `LongWindows` of its own, fed one value per session: the session's events (its
`count` is the sessions, its `sum` their events), 1 or 0 for a bounce, 1 or 0 per funnel step
reached. Those are exact (integer sums per sub-bucket), so `bounce_rate`,
`events_per_session`, `sessions`, `conversion` and `step_conversion` equal the exact
windows' formulas over the rounded window. Each step's seconds go to one more, whose `p50`
is `median_s`: pandas' median within the sketch's relative error (1 %, `sketch.py`), clamped
into the exact min and max (one value, or equal values, give it exactly). Memory grows with
the sub-buckets and the funnel's steps (2 * steps + 1 window sets), never with the sessions.
Reusing `LongWindows` whole gives these windows its bucketing, its eviction and its state.

Durable state (`durable_state`, `restore`): the clock, `active` and the long windows' state,
for a checkpoint (`pushsvc.core.checkpoint`): the log keeps nothing as old as a long window.
Rebuilding, the log's entries up to the checkpoint go to the exact windows only
(`insert_exact`), as for the topic's other durable statistics.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from sortedcontainers import SortedKeyList, SortedList

from pushsvc.core.durations import duration_label
from pushsvc.stats.long_windows import LongWindows
from pushsvc.stats.state_codec import StateReader, StateWriter

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
        *,
        long_us: Sequence[int] = (),
        long_labels: Sequence[str] | None = None,
    ) -> None:
        """`windows_us`: the exact windows; `labels`: one per window of `windows_us`, in that
        order (the rule's, as its file writes them); by default `duration_label`'s.
        `long_us` and `long_labels`: the long windows, likewise."""
        self._steps = tuple(steps)
        named = dict(zip(windows_us, labels, strict=True)) if labels is not None else {}
        self._windows = [_Window(w, len(self._steps)) for w in sorted(windows_us)]
        self._labels = [named.get(w.width) or duration_label(w.width) for w in self._windows]
        self._long = (
            _LongSessions(
                long_us,
                [duration_label(w) for w in long_us] if long_labels is None else long_labels,
                len(self._steps),
            )
            if long_us
            else None
        )
        self.clock_us: int | None = None
        self.active: int | None = None

    def insert(self, ts_us: int, tags: Mapping[str, str] | None) -> None:
        """One session event, then the clock moved to the newest event time seen."""
        record = self._exact_insert(ts_us, tags)
        if self._long is not None:
            assert self.clock_us is not None
            self._long.insert(record, self.clock_us)

    def insert_exact(self, ts_us: int, tags: Mapping[str, str] | None) -> None:
        """Rebuilding from a checkpoint: a session event the long windows' state holds
        already goes to the exact windows (and `active`) only."""
        self._exact_insert(ts_us, tags)

    def _exact_insert(self, ts_us: int, tags: Mapping[str, str] | None) -> SessionRecord:
        record = record_of(ts_us, tags, self._steps)
        open_now = (tags or {}).get("open")
        if open_now is not None and open_now.isdigit():
            self.active = int(open_now)
        if self.clock_us is None or ts_us > self.clock_us:
            self._advance_exact(ts_us)
        clock = self.clock_us
        assert clock is not None
        for window in self._windows:
            if ts_us > clock - window.width:
                window.records.add(record)
                window.add(record, 1)
        return record

    def advance(self, clock_us: int) -> None:
        """Move the clock forward: sessions at or before `clock - w` leave window `w` (before
        the long windows' rounded edge, a long window)."""
        if self.clock_us is not None and clock_us <= self.clock_us:
            return
        self._advance_exact(clock_us)
        if self._long is not None:
            self._long.advance(clock_us)

    def _advance_exact(self, clock_us: int) -> None:
        self.clock_us = clock_us
        for window in self._windows:
            records = window.records
            edge = clock_us - window.width
            while records and records[0][0] <= edge:
                window.add(records.pop(0), -1)

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per window label, its session statistics (the exact windows', then the long)."""
        out = {
            label: self._of(window)
            for label, window in zip(self._labels, self._windows, strict=True)
        }
        if self._long is not None:
            for label, (sessions, events, bounces, reached, medians) in self._long.tallies():
                out[label] = self._stats(sessions, events, bounces, reached, medians)
        return out

    def _of(self, window: _Window) -> dict[str, Any]:
        return self._stats(
            len(window.records),
            window.events,
            window.bounces,
            window.reached,
            [_median(seconds) for seconds in window.seconds],
        )

    def _stats(
        self,
        sessions: int,
        events: float,
        bounces: float,
        reached: Sequence[int],
        medians: Sequence[float | None],
    ) -> dict[str, Any]:
        """A window's statistics from its tallies: sessions, their events, bounces, sessions
        per step reached, and the median seconds to each step after the first."""
        out: dict[str, Any] = {
            "bounce_rate": bounces / sessions if sessions else None,
            "events_per_session": events / sessions if sessions else None,
            "active": self.active,
        }
        if self._steps:
            funnel = []
            first = reached[0] if reached else 0
            for index, step in enumerate(self._steps):
                count = reached[index]
                before = reached[index - 1] if index else None
                funnel.append(
                    {
                        "step": step,
                        "sessions": count,
                        "conversion": count / first if first else None,
                        "step_conversion": (
                            (count / before if before else None) if index else None
                        ),
                        "median_s": medians[index - 1] if index else (0.0 if count else None),
                    }
                )
            out["funnel"] = funnel
        return out

    # -- durable state --------------------------------------------------------------------

    def durable_state(self) -> bytes:
        """The clock, `active` and the long windows' state (`restore` takes it back)."""
        out = StateWriter()
        out.uint(_STATE_VERSION)
        _optional(out, self.clock_us)
        _optional(out, self.active)
        out.blob(b"" if self._long is None else self._long.to_state())
        return bytes(out)

    def restore(self, state: bytes) -> None:
        """Before any event (a rebuild): continue from `durable_state()`'s bytes, the exact
        windows empty (the log's entries fill them). ValueError, nothing changed, if the
        state is malformed or was written for other long windows or another funnel."""
        source = StateReader(state)
        version = source.uint()
        if version != _STATE_VERSION:
            raise ValueError(f"session state of version {version}, expected {_STATE_VERSION}")
        clock = _read_optional(source, signed=True)
        active = _read_optional(source, signed=False)
        saved = source.blob()
        source.done()
        if saved:
            if self._long is None:
                raise ValueError("session state holds long windows the rule does not have")
            self._long = _LongSessions.from_state(self._long, saved)
        # No long windows saved (written without any): they start empty, as they did then.
        self.clock_us = clock
        self.active = active


_STATE_VERSION = 1


def _optional(out: StateWriter, value: int | None) -> None:
    if value is None:
        out.uint(0)
    else:
        out.uint(1)
        out.sint(value)


def _read_optional(source: StateReader, *, signed: bool) -> int | None:
    if not source.uint():
        return None
    value = source.sint()
    if not signed and value < 0:
        raise ValueError("session state holds a negative count")
    return value


class _LongSessions:
    """The long windows' session statistics: each a `LongWindows` (see the module doc)."""

    __slots__ = ("_bounces", "_labels", "_reached", "_seconds", "_sessions", "_widths")

    def __init__(self, widths_us: Sequence[int], labels: Sequence[str], steps: int) -> None:
        self._widths = tuple(widths_us)
        self._labels = tuple(labels)
        # Each session once: value its events (count: sessions, sum: their events).
        self._sessions = self._new(("count", "sum"))
        # 1 for a session of one event, 0 for the others (sum: the bounces).
        self._bounces = self._new(("sum",))
        # Per step, 1 for a session that reached it, 0 for the others.
        self._reached = tuple(self._new(("sum",)) for _ in range(steps))
        # Per step after the first, the seconds from the first step (sessions that have them).
        self._seconds = tuple(self._new(("p50",)) for _ in range(max(0, steps - 1)))

    def _new(self, stats: Sequence[str]) -> LongWindows:
        return LongWindows(self._widths, self._labels, stats)

    def _parts(self) -> tuple[LongWindows, ...]:
        return (self._sessions, self._bounces, *self._reached, *self._seconds)

    def insert(self, record: SessionRecord, clock_us: int) -> None:
        ts, events, level, since = record
        self._sessions.insert(ts, events, clock_us)
        self._bounces.insert(ts, 1.0 if events == 1 else 0.0, clock_us)
        for index, part in enumerate(self._reached):
            part.insert(ts, 1.0 if level > index else 0.0, clock_us)
        for index, part in enumerate(self._seconds):
            seconds = since[index] if index < len(since) else math.nan
            if math.isfinite(seconds):
                part.insert(ts, seconds, clock_us)
            else:
                part.advance(clock_us)  # a tag missing: only the clock moves

    def advance(self, clock_us: int) -> None:
        for part in self._parts():
            part.advance(clock_us)

    def tallies(
        self,
    ) -> list[tuple[str, tuple[int, float, float, list[int], list[float | None]]]]:
        """Per label: sessions, their events, bounces, sessions per step, median seconds."""
        sessions = self._sessions.summary()
        bounces = self._bounces.summary()
        reached = [part.summary() for part in self._reached]
        seconds = [part.summary() for part in self._seconds]
        out = []
        for label in self._labels:
            count = sessions[label]["count"]
            assert isinstance(count, int)
            row = (
                count,
                _number(sessions[label]["sum"]),
                _number(bounces[label]["sum"]),
                [int(_number(part[label]["sum"])) for part in reached],
                [part[label]["p50"] for part in seconds],
            )
            out.append((label, row))
        return out

    def to_state(self) -> bytes:
        out = StateWriter()
        parts = self._parts()
        out.uint(len(parts))
        for part in parts:
            out.blob(part.to_state())
        return bytes(out)

    @classmethod
    def from_state(cls, like: _LongSessions, state: bytes) -> _LongSessions:
        """Windows as `like`'s holding what `to_state()` wrote; ValueError if it does not
        fit (other widths, another number of funnel steps, malformed)."""
        source = StateReader(state)
        parts = like._parts()
        if source.uint() != len(parts):
            raise ValueError("session state was written for another funnel")
        blobs = [source.blob() for _ in parts]
        source.done()
        restored = [
            LongWindows.from_state(like._widths, like._labels, part.stats, blob)
            for part, blob in zip(parts, blobs, strict=True)
        ]
        steps = len(like._reached)
        self = cls.__new__(cls)
        self._widths, self._labels = like._widths, like._labels
        self._sessions, self._bounces = restored[0], restored[1]
        self._reached = tuple(restored[2 : 2 + steps])
        self._seconds = tuple(restored[2 + steps :])
        return self


def _number(value: float | int | None) -> float:
    assert value is not None
    return float(value)


def _median(values: SortedList) -> float | None:
    """pandas' median (the mean of the two middle values of an even count)."""
    n = len(values)
    if not n:
        return None
    middle = n // 2
    if n % 2:
        return float(values[middle])
    return float(values[middle - 1] + values[middle]) / 2
