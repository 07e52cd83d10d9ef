"""References for the session assembler: a brute-force funnel, a pandas session table and a
simple model that keeps every event and scans every session (slow, obviously right); and a
session topic's statistics over a window, by pandas (`session_statistics`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd

from pushsvc.stats.sessions import SessionSettings


def brute_force_funnel(
    steps: int, within_us: int, events: Sequence[tuple[int, int]]
) -> tuple[int, tuple[int, ...]]:
    """The deepest funnel step reached, and the µs from the first step to each step of the
    chain that reached it first: try every first-step event as the start, take the next
    steps in order, each the earliest within `within_us` of that start; among the deepest
    chains, the one whose last step came first (of those, the latest start)."""
    ordered = sorted(events)
    chains: list[list[int]] = []
    for i, (start, step) in enumerate(ordered):
        if step != 0:
            continue
        chain = [start]
        for ts, later in ordered[i + 1 :]:
            if len(chain) == steps:
                break
            if later == len(chain) and ts <= start + within_us:
                chain.append(ts)
        chains.append(chain)
    if not chains:
        return 0, ()
    best = max(chains, key=lambda c: (len(c), -c[-1], c[0]))
    return len(best), tuple(t - best[0] for t in best)


def brute_force_level(steps: int, within_us: int, events: Sequence[tuple[int, int]]) -> int:
    """The deepest funnel step reached (`brute_force_funnel`)."""
    return brute_force_funnel(steps, within_us, events)[0]


def pandas_sessions(
    frame: pd.DataFrame, gap_us: int, max_duration_us: int | None
) -> list[tuple[str, int, int, int, list[tuple[int, int]]]]:
    """Sessions of `frame` (columns key, ts, step; key may be None): sort by key and time, a
    new session where the time since the key's previous event exceeds the gap or the session
    would outgrow max_duration. Each as (key, first, last, events, [(ts, step)])."""
    keyed = frame.dropna(subset=["key"]).sort_values(["key", "ts"], kind="stable")
    out: list[tuple[str, int, int, int, list[tuple[int, int]]]] = []
    for key, rows in keyed.groupby("key", sort=True):
        gaps = rows["ts"].diff().gt(gap_us)
        for _, chain in rows.groupby(gaps.cumsum()):
            start: int | None = None
            current: list[tuple[int, object]] = []
            for ts, step in zip(chain["ts"].tolist(), chain["step"].tolist(), strict=True):
                if (
                    start is not None
                    and max_duration_us is not None
                    and ts - start > max_duration_us
                ):
                    out.append(_row(str(key), current))
                    current, start = [], None
                if start is None:
                    start = ts
                current.append((ts, step))
            out.append(_row(str(key), current))
    return out


def _row(
    key: str, events: list[tuple[int, object]]
) -> tuple[str, int, int, int, list[tuple[int, int]]]:
    times = [ts for ts, _ in events]
    # A missing step is None or NaN (pandas' float column); NaN is the value unequal to itself.
    steps = [
        (ts, int(step)) for ts, step in events if isinstance(step, int | float) and step == step
    ]
    return (key, min(times), max(times), len(events), steps)


@dataclass
class ModelSessions:
    """The assembler's contract, kept the slow way: every event of every open session."""

    settings: SessionSettings
    clock: int | None = None
    open: dict[str, list[list[tuple[int, int | None]]]] = field(default_factory=dict)
    idle_order: list[str] = field(default_factory=list)

    def _span_ok(self, sessions: list[list[tuple[int, int | None]]], ts: int) -> bool:
        limit = self.settings.max_duration_us
        times = [t for s in sessions for t, _ in s] + [ts]
        return limit is None or max(times) - min(times) <= limit

    def add(self, key: str, ts: int, step: int | None) -> list[tuple[object, ...]] | None:
        s = self.settings
        if self.clock is not None and ts < self.clock - s.lateness_us:
            return None
        self.clock = ts if self.clock is None else max(self.clock, ts)
        sessions = self.open.setdefault(key, [])
        near = sorted(
            (
                x
                for x in sessions
                if min(t for t, _ in x) - s.gap_us <= ts <= max(t for t, _ in x) + s.gap_us
            ),
            key=lambda x: min(t for t, _ in x),
        )
        event = (ts, step if s.funnel is not None else None)
        if near and self._span_ok(near, ts):
            merged = [e for x in near for e in x] + [event]
            for x in near:
                sessions.remove(x)
            sessions.append(merged)
        else:
            fit = next((x for x in near if self._span_ok([x], ts)), None)
            if fit is None:
                sessions.append([event])
            else:
                fit.append(event)
        if key in self.idle_order:
            self.idle_order.remove(key)
        self.idle_order.append(key)
        ended = self.expire()
        while sum(len(v) for v in self.open.values()) > s.max_open:
            victim_key = self.idle_order[0]
            victim = min(self.open[victim_key], key=lambda x: min(t for t, _ in x))
            ended.append(self._end(victim_key, victim, evicted=True))
        return ended

    def advance(self, clock: int) -> list[tuple[object, ...]]:
        self.clock = clock if self.clock is None else max(self.clock, clock)
        return self.expire()

    def deadline(self, session: list[tuple[int, int | None]]) -> int:
        s = self.settings
        times = [t for t, _ in session]
        deadline = max(times) + s.gap_us + s.lateness_us
        if s.max_duration_us is not None:
            deadline = min(deadline, min(times) + s.max_duration_us + s.lateness_us)
        return deadline

    def expire(self) -> list[tuple[object, ...]]:
        assert self.clock is not None
        res = self.settings.resolution_us
        due = [
            (max(t for t, _ in x), key, min(t for t, _ in x), key, x)
            for key, sessions in self.open.items()
            for x in sessions
            if (self.deadline(x) // res + 1) * res <= self.clock
        ]
        due.sort(key=lambda d: d[:3])
        return [self._end(key, x, evicted=False) for *_, key, x in due]

    def _end(
        self, key: str, session: list[tuple[int, int | None]], *, evicted: bool
    ) -> tuple[object, ...]:
        self.open[key].remove(session)
        if not self.open[key]:
            del self.open[key]
            self.idle_order.remove(key)
        times = [t for t, _ in session]
        funnel = self.settings.funnel
        steps = [(t, st) for t, st in session if st is not None]
        level = 0 if funnel is None else brute_force_level(funnel.steps, funnel.within_us, steps)
        return (key, min(times), max(times), len(session), level, evicted)


def session_statistics(
    steps: Sequence[str], rows: list[tuple[int, dict[str, str]]], edge: int, clock: int
) -> dict[str, object]:
    """What a session topic's window over `(edge, clock]` holds, by pandas, from its session
    events (`ts`, and tags `events`, `reached` (one of `steps` or `none`) and `s2`, `s3`, …:
    the seconds from the first step to each later one): bounce rate, events per session and
    the funnel."""
    frame = pd.DataFrame(
        {
            "ts": [ts for ts, _ in rows],
            "events": [int(tags["events"]) for _, tags in rows],
            "level": [
                steps.index(t["reached"]) + 1 if t["reached"] in steps else 0 for _, t in rows
            ],
            "s2": [float(t.get("s2", "nan")) for _, t in rows],
            "s3": [float(t.get("s3", "nan")) for _, t in rows],
        }
    )
    inside = frame[(frame["ts"] > edge) & (frame["ts"] <= clock)]
    n = len(inside)
    first = int((inside["level"] >= 1).sum())
    funnel = []
    for index, step in enumerate(steps):
        count = int((inside["level"] > index).sum())
        before = int((inside["level"] > index - 1).sum())
        median = inside[f"s{index + 1}"].median() if index else (0.0 if count else None)
        funnel.append(
            {
                "step": step,
                "sessions": count,
                "conversion": count / first if first else None,
                "step_conversion": (count / before if before else None) if index else None,
                "median_s": None if median is None or math.isnan(median) else float(median),
            }
        )
    return {
        "bounce_rate": float((inside["events"] == 1).mean()) if n else None,
        "events_per_session": float(inside["events"].mean()) if n else None,
        "funnel": funnel,
    }
