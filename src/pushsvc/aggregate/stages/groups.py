"""The groups stage: a grouping rule's (`group_by`) statistics per group of a topic.

Routes each event to its group (`pushsvc.stats.groups`), on the topic's clock, and gives the
update the group's statistics after it; a tick brings every group to the topic's clock and
names the groups whose windows changed. Idle groups are forgotten by the aggregator after a
batch or a tick (`sweep`), once every stage has seen it: a group's bucket that the same
clock closes is still published.
"""

from __future__ import annotations

from collections.abc import Iterator

from pushsvc.core.event import value_of
from pushsvc.core.updates import GroupPart
from pushsvc.ingest import Event
from pushsvc.stats.compiled import RuleStats
from pushsvc.stats.groups import Group, Position, TopicGroups

from .step import EventStep, TickStep


class GroupStage:
    """The live groups of one topic, and when they were last looked at for forgetting."""

    __slots__ = ("_ttl_us", "groups", "sweep_slot")

    def __init__(self, groups: TopicGroups, topic_ttl_us: int) -> None:
        self.groups = groups
        self._ttl_us = topic_ttl_us
        self.sweep_slot = 0
        """Groups are looked at for forgetting once per slot of topic clock (a tenth of the
        TTL): part of the checkpoint, so that every aggregator looks at the same entries."""

    def __iter__(self) -> Iterator[Group]:
        return iter(self.groups)

    def __len__(self) -> int:
        return len(self.groups)

    def on_event(self, step: EventStep) -> None:
        group = self.groups.route(step.event.tags, (*step.at, step.index))
        step.group = group
        step.part = GroupPart(group.id, group.key, _insert_and_summary(group, step))

    def on_tick(self, step: TickStep) -> None:
        # The plain statistics: the anomaly stage, after the series closed this tick's
        # buckets, rates them.
        step.parts = [
            GroupPart(g.id, g.key, g.stats.summary())
            for g in self.groups
            if g.stats.advance(step.clock_us)
        ]

    def take_overflow(self) -> int:
        """Events routed to the overflow group since last asked."""
        overflowed, self.groups.overflowed = self.groups.overflowed, 0
        return overflowed

    def sweep(self, clock_us: int) -> list[Group]:
        """Forget the topic's idle groups, looking once per slot of a tenth of the TTL of
        topic clock (deterministic: every aggregator looks at the same entries)."""
        if not self._ttl_us:
            return []
        slot = clock_us // max(1, self._ttl_us // 10)
        if slot == self.sweep_slot:
            return []
        self.sweep_slot = slot
        idle = self.groups.idle(clock_us)
        self.groups.forget(idle)
        return idle

    def replayed(self, event: Event, at: Position) -> Group | None:
        """Rebuilding: an entry a checkpoint covers into the exact windows of the group it
        went to then (`TopicGroups.route_as_then`), if that group is still live. Not advanced:
        the group's clock then is in the checkpoint, and `end_replay` brings its exact windows
        there (an event older than it is in the same windows either way)."""
        group = self.groups.route_as_then(event.tags, at)
        if group is None:
            return None
        stats = group.stats
        if isinstance(stats, RuleStats):
            stats.insert_exact(event.ts_us, value_of(event), event.tags)
        else:
            stats.insert(event.ts_us, value_of(event))
        return group

    def end_replay(self) -> None:
        """The rebuild's replay is over: each group's exact windows join its durable parts'
        clock."""
        for group in self.groups:
            if isinstance(group.stats, RuleStats):
                group.stats.catch_up()

    def oldest_clock(self, clock_us: int) -> int:
        """The topic's clock `clock_us`, or an older one a group lags at (a group lags its
        topic until a tick brings it along)."""
        for group in self.groups:
            lagging = group.stats.clock_us
            if lagging is not None and lagging < clock_us:
                clock_us = lagging
        return clock_us

    def lagging(self, clock_us: int) -> bool:
        """Whether a group holding an event is not at the topic's clock `clock_us`."""
        return any(g.stats.clock_us != clock_us and len(g.stats) for g in self.groups)


def _insert_and_summary(group: Group, step: EventStep) -> dict[str, dict[str, object]]:
    """An event into its group, on the topic's clock, and the group's statistics after it:
    the group is seen at the topic's clock first, so an event older than the topic clock is a
    late one for the group too. One call, so that the generated code loads the group's state
    once for both (`insert_and_summary`)."""
    stats = group.stats
    event = step.event
    ts_us = event.ts_us
    clock_us = step.clock_us
    if ts_us < clock_us:
        if stats.clock_us is None:
            stats.start_at(clock_us)  # a new group's first event is late for it too
        else:
            stats.advance(clock_us)
    if isinstance(stats, RuleStats):
        summary = stats.insert_and_summary(ts_us, value_of(event), event.tags)
    else:
        summary = stats.insert_and_summary(ts_us, value_of(event))
    if ts_us > group.newest_us:
        group.newest_us = ts_us
    return summary
