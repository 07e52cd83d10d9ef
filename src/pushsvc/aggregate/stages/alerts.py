"""The alerts stage: the alert instances of a topic and of its groups (`pushsvc.alerts.states`).

Runs last, so that it judges the statistics the update gives (`anomaly_rate` included). An
event is evaluated for its topic and for its group; a tick for the topic where its windows
changed or an instance is live, for each group the tick changed, and for each other group
with a live instance: the clock alone moves a pending instance to firing, or a cleared one to
resolved. Each change is an `_alerts` message (`alert_drafts`).
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from pushsvc.alerts.states import AlertChange, TopicAlerts
from pushsvc.core.topics import ALERTS
from pushsvc.core.updates import UpdateDraft, alert_draft
from pushsvc.stats.groups import Group, TopicGroups

from .step import EventStep, TickStep


class AlertStage:
    """The alert instances of one topic (`alerts`: replaced when a checkpoint is restored)."""

    __slots__ = ("_groups", "alerts")

    def __init__(self, alerts: TopicAlerts, groups: TopicGroups | None) -> None:
        self.alerts = alerts
        self._groups = groups

    def on_event(self, step: EventStep) -> None:
        alerts, now, part = self.alerts, step.clock_us, step.part
        changes = alerts.evaluate(now, step.summary)
        if part is not None:
            changes += alerts.evaluate(now, part.windows, part.id, part.key)
        if changes:  # seldom: most evaluations change nothing
            step.follow += alert_drafts(now, changes)

    def on_tick(self, step: TickStep) -> None:
        alerts, clock = self.alerts, step.clock_us
        if step.changed or alerts.live():
            step.changes += alerts.evaluate(clock, step.topic_summary())
        if self._groups is None:
            return
        for part in step.parts:
            step.changes += alerts.evaluate(clock, part.windows, part.id, part.key)
        evaluated = {part.id for part in step.parts}
        for group in self._groups:
            if group.id not in evaluated and alerts.live(group.id):
                summary = step.group_summary(group)
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
