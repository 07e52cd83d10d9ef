"""The alerts stage: the alert instances of a topic and of its groups (`pushsvc.alerts.states`).

Runs last, so that it judges the statistics the update gives (`anomaly_rate` included). An
event is evaluated for its topic and for its group; a tick for the topic where its windows
changed or an instance is live, for each group the tick changed, and for each other group
with a live instance: the clock alone moves a pending instance to firing, or a cleared one to
resolved. Each change is an `_alerts` message (`alert_drafts`).

A forecast condition (`forecast(mean, 30m) > 100`) reads the latest forecast of the series
evaluated (the topic's, or the group's: `pushsvc.series.forecasting`), given beside its
windows under the condition's window (`forecast:30m`): the step that many buckets ahead of the
last one closed, null while the model learns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from pushsvc.alerts.states import AlertChange, TopicAlerts
from pushsvc.core.topics import ALERTS
from pushsvc.core.updates import UpdateDraft, alert_draft
from pushsvc.rules.forecast import ForecastRule
from pushsvc.series.buckets import SeriesBuckets
from pushsvc.stats.groups import Group, TopicGroups

from .series import SeriesStage
from .step import EventStep, TickStep


class AlertStage:
    """The alert instances of one topic (`alerts`: replaced when a checkpoint is restored)."""

    __slots__ = ("_ahead", "_groups", "_series", "alerts")

    def __init__(
        self,
        alerts: TopicAlerts,
        groups: TopicGroups | None,
        series: SeriesStage | None = None,
        forecast: ForecastRule | None = None,
    ) -> None:
        self.alerts = alerts
        self._groups = groups
        self._series = series
        # (window, stat, step) of each forecast condition of the topic's alerts.
        self._ahead: tuple[tuple[str, str, int], ...] = ()
        if series is not None and forecast is not None:
            conditions = [c for a in alerts.rules for c in (a.when, a.clear) if c is not None]
            self._ahead = tuple(
                {
                    (c.window, c.stat, c.ahead_us // forecast.tier_us): None
                    for c in conditions
                    if c.ahead_us is not None
                }
            )

    def _with_forecast(self, windows: Mapping[str, Any], gid: str = "") -> Mapping[str, Any]:
        """`windows`, and the forecast conditions' values of the series (the group's)."""
        stage = self._series
        if not self._ahead or stage is None:
            return windows
        series: SeriesBuckets | None = stage.series
        if gid:
            series = (stage.group_series or {}).get(gid)
        forecaster = None if series is None else series.forecaster
        out = dict(windows)
        for window, stat, step in self._ahead:
            made = None if forecaster is None else forecaster.step(step)
            out.setdefault(window, {})[stat] = None if made is None else made.mean
        return out

    def on_event(self, step: EventStep) -> None:
        alerts, now, part = self.alerts, step.clock_us, step.part
        changes = alerts.evaluate(now, self._with_forecast(step.summary))
        if part is not None:
            windows = self._with_forecast(part.windows, part.id)
            changes += alerts.evaluate(now, windows, part.id, part.key)
        if changes:  # seldom: most evaluations change nothing
            step.follow += alert_drafts(now, changes)

    def on_message(self, clock_us: int, summary: Mapping[str, Any]) -> list[UpdateDraft]:
        """A message without a value, which the stages do not see: the topic's alerts on
        message counts judged on its update (the others judge values, which it leaves as they
        were, and figures of the stages it does not bring)."""
        among = self.alerts.message_rules
        if not among:
            return []
        changes = self.alerts.evaluate(clock_us, summary, among=among)
        return alert_drafts(clock_us, changes) if changes else []

    def on_tick(self, step: TickStep) -> None:
        alerts, clock = self.alerts, step.clock_us
        if step.changed or alerts.live() or (step.points and self._ahead):
            step.changes += alerts.evaluate(clock, self._with_forecast(step.topic_summary()))
        if self._groups is None:
            return
        for part in step.parts:
            windows = self._with_forecast(part.windows, part.id)
            step.changes += alerts.evaluate(clock, windows, part.id, part.key)
        evaluated = {part.id for part in step.parts}
        for group in self._groups:
            if group.id not in evaluated and alerts.live(group.id):
                summary = self._with_forecast(step.group_summary(group), group.id)
                step.changes += alerts.evaluate(clock, summary, group.id, group.key)

    def forget_groups(self, groups: Sequence[Group], clock_us: int) -> list[AlertChange]:
        """The groups are gone (forgotten at `clock_us`): their firing instances resolve and
        their pending ones turn inactive."""
        changes: list[AlertChange] = []
        for group in groups:
            changes += self.alerts.forget_group(group.id, clock_us)
        return changes


def alert_drafts(clock_us: int, changes: list[AlertChange]) -> list[UpdateDraft]:
    """The `_alerts` messages of these changes, published at `clock_us`."""
    return [
        alert_draft(
            ALERTS,
            clock_us,
            change.body(),
            f"{change.alert}\x1f{change.topic}\x1f{orjson.dumps(change.group).decode()}",
            change.state in ("pending", "firing"),
        )
        for change in changes
    ]
