"""Group by: one topic's statistics kept again per combination of its `group_by` tags' values.

Each distinct combination is a *group* with the rule's windows over its own events; a tag an
event lacks is `None` (JSON `null`) in the key. A group's time windows run on the topic's
clock `T`, so every group of a topic is seen at the same moment: before an event goes into
its group, the group is advanced to `T`.

Cardinality: at most `max_groups` live groups per topic. An event whose combination would be
one more goes to the *overflow group*, whose every tag is `"(other)"`, and is counted.
Groups are admitted first come, first served, which makes the routing depend on history:
each group records the log position that admitted it (`admitted`), which is what lets a
rebuild route old events as they were routed then (`pushsvc.aggregate.stages.groups`).

A group whose newest event is older than `T - idle_us` (the topic TTL, and never less than
the widest time window, so its time windows are empty) is forgotten; its next event admits
it afresh. Decided on the topic clock alone, so every aggregator forgets the same groups at
the same log entry.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import orjson

from pushsvc.core.positions import EventPosition
from pushsvc.stats.compiled import CompiledRule, RuleStats
from pushsvc.stats.windows import TopicWindows

__all__ = ["OTHER", "Group", "TopicGroups", "group_id"]

OTHER = "(other)"
"""Every tag of the overflow group has this value."""

Position = EventPosition
"""Where a group was admitted: the event's position in the log."""


def group_id(values: Sequence[str | None]) -> str:
    """A group's identity as a string: its key's values as a JSON list, in `group_by` order
    (what the broker files the group's latest statistics under)."""
    return orjson.dumps(list(values)).decode()


@dataclass(slots=True)
class Group:
    """One group's statistics; `newest_us` is the time of its newest event."""

    id: str
    key: dict[str, str | None]
    stats: TopicWindows | RuleStats
    admitted: Position
    newest_us: int

    @property
    def key_json(self) -> bytes:
        return orjson.dumps(self.key)


class TopicGroups:
    """The live groups of one topic and the rule to route its events by."""

    __slots__ = (
        "_by_id", "_by_values", "_compiled", "_idle_us", "_one", "_other", "max_groups",
        "overflowed", "tags",
    )  # fmt: skip

    def __init__(self, compiled: CompiledRule, *, idle_us: int) -> None:
        rule = compiled.rule
        self._compiled = compiled
        self.tags = rule.group_by
        # The one `group_by` tag, if one (the common case): its key is read without a
        # generator per event.
        self._one = self.tags[0] if len(self.tags) == 1 else None
        self.max_groups = rule.max_groups
        widest = max((*rule.windows_us, 0))
        self._idle_us = max(idle_us, widest)
        self._by_id: dict[str, Group] = {}
        self._by_values: dict[tuple[str | None, ...], Group] = {}
        self._other: Group | None = None
        self.overflowed = 0
        """Events routed to the overflow group so far."""

    def __len__(self) -> int:
        return len(self._by_id) + (self._other is not None)

    def __iter__(self) -> Iterator[Group]:
        yield from self._by_id.values()
        if self._other is not None:
            yield self._other

    def get(self, gid: str) -> Group | None:
        if self._other is not None and gid == self._other.id:
            return self._other
        return self._by_id.get(gid)

    def route(self, tags: Mapping[str, str] | None, at: Position) -> Group:
        """The group of an event with these tags, admitting it if there is room (`at`: the
        event's log position)."""
        one = self._one
        if one is not None:
            values: tuple[str | None, ...] = (None if tags is None else tags.get(one),)
        else:
            values = tuple(None if tags is None else tags.get(tag) for tag in self.tags)
        group = self._by_values.get(values)  # a tuple lookup: no id encoded per event
        if group is not None:
            return group
        if len(self._by_id) < self.max_groups:
            group = self._new(group_id(values), values, at)
            self._by_id[group.id] = self._by_values[values] = group
            return group
        self.overflowed += 1
        if self._other is None:
            self._other = self._new(group_id((OTHER,) * len(self.tags)), None, at)
        return self._other

    def route_as_then(self, tags: Mapping[str, str] | None, at: Position) -> Group | None:
        """Rebuilding the entries before a checkpoint, whose groups are those the checkpoint
        holds: the group the event at `at` went to then, if it is still live. A live group
        admitted at or before `at` took it; any other event went to the overflow group, or to
        a group forgotten since, whose events are out of every time window by now (module
        doc) — so the overflow group takes it if it was live then, and None means it is in no
        window. An event from before the overflow group was admitted never went to it: given
        to it, a rebuilt series bucket of the overflow group would hold an event of a group
        forgotten since, and close as a point the running aggregator never made."""
        values = tuple(None if tags is None else tags.get(tag) for tag in self.tags)
        group = self._by_id.get(group_id(values))
        if group is not None and group.admitted <= at:
            return group
        other = self._other
        return other if other is not None and other.admitted <= at else None

    def _new(self, gid: str, values: Sequence[str | None] | None, at: Position) -> Group:
        key = dict(zip(self.tags, values or (OTHER,) * len(self.tags), strict=True))
        return Group(gid, key, self._compiled.new(), at, 0)

    def restore(self, group: Group) -> None:
        """Put back a group a checkpoint held (rebuilding)."""
        if all(value == OTHER for value in group.key.values()):
            self._other = group
        else:
            self._by_id[group.id] = group
            self._by_values[tuple(group.key[tag] for tag in self.tags)] = group

    def idle(self, clock_us: int) -> list[Group]:
        """The groups to forget at topic clock `clock_us`: newest event at or before
        `clock_us - idle_us`."""
        horizon = clock_us - self._idle_us
        return [g for g in self if g.newest_us <= horizon]

    def forget(self, groups: Sequence[Group]) -> None:
        for group in groups:
            if group is self._other:
                self._other = None
            else:
                self._by_id.pop(group.id, None)
                self._by_values.pop(tuple(group.key[tag] for tag in self.tags), None)
