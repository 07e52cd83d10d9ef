"""The anomaly stage: each time window's `anomaly_rate` in a scoring topic's updates.

A rule's `anomaly` scores the closing points of its `every` tier (`pushsvc.series.scoring`,
in the series stage). This stage runs right after the series stage, so that the rate an
update gives counts the buckets its own event's or tick's clock closed; the points still
follow the update. The scorers' state is part of the checkpoint (with the series'), so a
topic that scores is durable.
"""

from __future__ import annotations

from typing import Any, TypeVar, cast

from pushsvc.core.updates import GroupPart
from pushsvc.series.scoring import BucketScorer
from pushsvc.stats.groups import Group

from .series import SeriesStage
from .step import EventStep, Summary, TickStep

Rated = TypeVar("Rated", bound=Summary)


class AnomalyStage:
    """Rates the summaries of one topic and its groups by their series' scorers."""

    __slots__ = ("_grouping", "_series", "_windows")

    def __init__(
        self, series: SeriesStage, windows: tuple[tuple[str, int], ...], *, grouping: bool
    ) -> None:
        self._series = series
        self._windows = windows  # (label, width) of the rule's time windows
        self._grouping = grouping

    def on_event(self, step: EventStep) -> None:
        step.summary = self.topic_rated(step.summary, step.clock_us)
        part = step.part
        if part is not None:
            step.part = GroupPart(
                part.id, part.key, self.group_rated(part.id, part.windows, step.clock_us)
            )

    def on_tick(self, step: TickStep) -> None:
        if not self._grouping:
            # A scored bucket closed: the windows' `anomaly_rate` moved. (Not so for a
            # grouping topic, whose tick is drafted for its windows and its groups only.)
            step.changed = step.changed or bool(step.points)
            return
        step.parts = [
            GroupPart(p.id, p.key, self.group_rated(p.id, p.windows, step.clock_us))
            for p in step.parts
        ]

    def topic_rated(self, summary: Summary, clock_us: int) -> Summary:
        scorer = self._series.series.scorer
        return summary if scorer is None else self._rated(summary, scorer, clock_us)

    def group_rated(self, gid: str, summary: Rated, clock_us: int) -> Rated:
        """A group's statistics with `anomaly_rate`, once the group has a series."""
        kept = self._series.group_series
        series = None if kept is None else kept.get(gid)
        if series is None or series.scorer is None:
            return summary
        return self._rated(summary, series.scorer, clock_us)

    def group_summary(self, group: Group, clock_us: int) -> Summary:
        return self.group_rated(group.id, group.stats.summary(), clock_us)

    def _rated(self, summary: Rated, scorer: BucketScorer, clock_us: int) -> Rated:
        """`summary` with each time window's `anomaly_rate` (`pushsvc.series.anomaly_rate`):
        new dicts, never the windows' own."""
        out: dict[str, Any] = dict(summary)
        for label, width in self._windows:
            stats = out.get(label)
            if stats is not None:
                out[label] = {**stats, "anomaly_rate": scorer.flags.rate(clock_us, width)}
        return cast(Rated, out)
