"""The sessions stage: a session topic's own statistics (`[[session]]`), merged into its
updates.

A session topic's events are whole sessions (`pushsvc.aggregate.sessionize` appends them);
`SessionWindows` (`pushsvc.stats.session_stats`) keeps their statistics over the rule's exact
and long time windows, on the topic's clock. Runs first, so that every later stage (anomaly
rates, alerts) sees the merged statistics. Its state is part of the checkpoint.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pushsvc.stats.session_stats import SessionWindows

from .step import EventStep, Summary, TickStep


class SessionStage:
    __slots__ = ("windows",)

    def __init__(self, windows: SessionWindows) -> None:
        self.windows = windows

    def on_event(self, step: EventStep) -> None:
        sessions, event = self.windows, step.event
        sessions.insert(event.ts_us, event.tags)
        sessions.advance(step.clock_us)
        step.summary = merged(step.summary, sessions.summary())

    def on_tick(self, step: TickStep) -> None:
        self.windows.advance(step.clock_us)

    def with_sessions(self, summary: Summary) -> Summary:
        """The topic's statistics `summary` with the sessions' own."""
        return merged(summary, self.windows.summary())


def merged(summary: Summary, extra: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    return {
        label: {**stats, **extra[label]} if label in extra else stats
        for label, stats in summary.items()
    }
