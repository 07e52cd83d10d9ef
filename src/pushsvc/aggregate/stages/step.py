"""What a topic's stages share: the event or tick being drafted, and the `Stage` protocol.

An event's update is composed in one pass over the topic's stages, in a fixed order
(`pushsvc.aggregate.topic_state`): each stage reads what the stages before it left in
the `EventStep` and adds its own part: the summary the update carries (a session topic's
statistics merged in, then `anomaly_rate`), the event's group, and the drafts that follow the
update (closed series buckets, then alert changes). A tick's step is the same for a clock
moved without an event (`TickStep`). The aggregator then writes the update's draft from the
step and appends what follows it; no stage writes the update itself, so the update format
keeps its one owner (`pushsvc.core.updates`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from pushsvc.alerts.states import AlertChange
from pushsvc.core.positions import LogPosition
from pushsvc.core.updates import GroupPart, UpdateDraft
from pushsvc.ingest import Event
from pushsvc.stats.groups import Group

Summary = Mapping[str, Any]
"""Window label -> statistics, as an update gives them."""


@dataclass(slots=True)
class EventStep:
    """One event of a batch on its way through the stages. One object per batch, its fields
    set again for each event (an allocation per event costs the busy topics)."""

    at: LogPosition
    """The batch's place in the event log (with `index`, what admits a group)."""
    index: int = 0
    event: Event = field(default_factory=lambda: Event(0.0, 0))
    clock_us: int = 0
    """The topic's clock right after the event."""
    summary: Summary = field(default_factory=dict)
    """The topic's statistics right after the event, as its update gives them."""
    group: Group | None = None
    part: GroupPart | None = None
    """The event's group and its statistics, for a grouping topic."""
    follow: list[UpdateDraft] = field(default_factory=list)
    """The drafts published right after the update: points, then alert changes."""


@dataclass(slots=True)
class TickStep:
    """One topic's clock moved to `clock_us` by a tick."""

    clock_us: int
    changed: bool
    """Whether the topic's own windows changed (a scored bucket closing counts too, for a
    topic without groups: see `AnomalyStage`)."""
    topic_summary: Callable[[], Summary]
    """The topic's statistics at `clock_us`, as its updates give them (made once, when first
    asked, after every bucket this tick closes has been scored)."""
    group_summary: Callable[[Group], Summary]
    """A group's statistics at `clock_us`, as its updates give them."""
    parts: list[GroupPart] = field(default_factory=list)
    """The groups whose windows the tick changed."""
    points: list[UpdateDraft] = field(default_factory=list)
    changes: list[AlertChange] = field(default_factory=list)


class Stage(Protocol):
    """One feature of a rule (groups, series, anomaly scores, alerts, session statistics),
    with the state it keeps for one topic. Stages are called in the topic's order; each may
    read what the ones before it set. Not greenlet-safe: the aggregator's one driver."""

    def on_event(self, step: EventStep) -> None:
        """The event in `step` was inserted into the topic's windows."""

    def on_tick(self, step: TickStep) -> None:
        """The topic's windows were moved to `step.clock_us`."""


def cached(make: Callable[[], Summary]) -> Callable[[], Summary]:
    """`make`, called once at most: a tick's topic summary is asked for by the alerts and by
    the update, and the statistics do not move in between."""
    made: list[Summary] = []

    def once() -> Summary:
        if not made:
            made.append(make())
        return made[0]

    return once
