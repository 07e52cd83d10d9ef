"""Each alert instance's state on its topic's clock (pure): inactive → pending → firing →
resolved, as Prometheus's alerting rules move (`rules/alerting.go`), on pushsvc's topic clock.

An instance is (alert, topic, group); `TopicAlerts` holds those of one topic and its groups.
Every evaluation takes the windows the aggregator just computed for the topic or a group:

* inactive: when `when` holds, pending (reported) with `since` = this clock — or firing at
  once when `for` is 0;
* pending: firing (reported) at the first evaluation whose clock is at least `for` after it
  became pending; at the first evaluation where `when` no longer holds, inactive again
  (reported as `inactive`, so that `_alerts` and `GET /alerts` stop listing it; it was never
  notified, so no notification ends: Prometheus drops a pending alert without notice too);
* firing: it stays while `when` holds — or, with `clear`, until `clear` holds (hysteresis: a
  value between the two keeps it firing). Once it stops holding, `keep_firing_for` keeps it
  firing that much longer on the topic clock; a relapse meanwhile resets that. Then resolved
  (reported), and inactive — pending again at its next evaluation (a tick included, windows
  changed or not) where `when` holds then, as `clear` on another statistic allows.

A null statistic (an empty window) never matches `when`, and counts as cleared: as in
Prometheus, where a series that vanishes resolves its alert.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from pushsvc.alerts.first_look import Holding, first_look
from pushsvc.rules.alerts import AlertRule, Condition

__all__ = ["AlertChange", "Instance", "TopicAlerts"]

PENDING, FIRING, RESOLVED, INACTIVE = "pending", "firing", "resolved", "inactive"
GroupKey = Mapping[str, str | None]


@dataclass(frozen=True, slots=True)
class AlertChange:
    """A state change of one instance: what the `_alerts` topic carries."""

    alert: str
    topic: str
    group: GroupKey | None
    state: str
    value: float | None
    since_us: int
    labels: Mapping[str, str]
    annotations: Mapping[str, str]

    def body(self) -> bytes:
        """The message's JSON without its id: `{"alert", "topic", "group", "state", "value",
        "since", "labels", "annotations"}` (`since`: epoch seconds on the topic clock)."""
        return orjson.dumps(
            {
                "alert": self.alert,
                "topic": self.topic,
                "group": self.group,
                "state": self.state,
                "value": self.value,
                "since": self.since_us / 1_000_000,
                "labels": self.labels,
                "annotations": self.annotations,
            }
        )


@dataclass(slots=True)
class Instance:
    """One (alert, topic, group)'s state. `active_since_us`: when it became pending (or
    firing); `clear_since_us`: when it stopped holding while firing (keep_firing_for)."""

    rule: AlertRule
    group_id: str
    group: GroupKey | None
    state: str = ""  # "" inactive, PENDING or FIRING
    active_since_us: int = 0
    clear_since_us: int | None = None
    value: float | None = None

    def evaluate(self, topic: str, clock_us: int, windows: Mapping[str, Any]) -> AlertChange | None:
        # Run for every pending or firing instance on every event: one value read per
        # condition, and the commonest outcome (still firing, or still pending) first.
        rule = self.rule
        state = self.state
        clear = rule.clear
        if state == FIRING and clear is not None:
            value = clear.value(windows)
            holds = value is not None and not clear.compare(value, clear.threshold)
            if value is None:
                value = rule.when.value(windows)
        else:
            when = rule.when
            if when.message_type is not None:
                value = when.value(windows)
            else:
                try:  # `when.value`, inlined for the engine's floats
                    value = windows[when.window][when.stat]
                except (KeyError, TypeError):
                    value = None
                if value is not None and type(value) is not float:
                    value = when.value(windows)
            holds = value is not None and when.compare(value, when.threshold)
        self.value = value
        if holds:
            self.clear_since_us = None
            if state == FIRING:
                return None
            if not state:
                self.active_since_us = clock_us
                self.state = FIRING if rule.for_us == 0 else PENDING
                return self._change(topic, self.state, clock_us)
            if clock_us - self.active_since_us >= rule.for_us:  # pending long enough
                self.state = FIRING
                return self._change(topic, FIRING, clock_us)
            return None
        if state == PENDING:
            self.state = ""
            return self._change(topic, INACTIVE, clock_us)
        if state == FIRING:
            if self.clear_since_us is None:
                self.clear_since_us = clock_us
            if clock_us - self.clear_since_us >= rule.keep_firing_for_us:
                self.state = ""
                self.clear_since_us = None
                return self._change(topic, RESOLVED, clock_us)
        return None

    def _change(self, topic: str, state: str, clock_us: int) -> AlertChange:
        rule = self.rule
        return AlertChange(
            rule.name, topic, self.group, state, self.value, clock_us, rule.labels, rule.annotations
        )


class TopicAlerts:
    """The alert instances of one topic and of its groups. Evaluating a topic that no alert
    matches costs nothing: the aggregator keeps no `TopicAlerts` for it.

    Every event is evaluated for its topic and for its group against every alert, and nearly
    always nothing is pending or firing there and no `when` holds: that case is one generated
    function (`first_look`) that finds nothing, with no instance made and no key built."""

    __slots__ = ("_holding", "_live", "_place", "message_rules", "rules", "topic")

    def __init__(self, topic: str, rules: Sequence[AlertRule]) -> None:
        self.topic = topic
        self.rules = tuple(rules)
        self._holding = _first_look(tuple(rule.when for rule in self.rules))
        # Alerts on message counts, which are kept per topic, not per group: never a group's,
        # and the only ones a message without a value is judged by (`evaluate`'s `among`).
        self.message_rules = frozenset(
            index
            for index, rule in enumerate(self.rules)
            if rule.when.message_type is not None
            or (rule.clear is not None and rule.clear.message_type is not None)
        )
        places = {rule.name: index for index, rule in enumerate(self.rules)}
        self._place: Callable[[AlertChange], int] = lambda change: places[change.alert]
        # The pending and firing instances by group id, then by the alert's place in `rules`;
        # a group with none has no entry. Inactive instances are not kept, but for one that
        # resolved (by `clear`) while its `when` still held: it turns pending at its next
        # evaluation, which a tick must not skip.
        self._live: dict[str, dict[int, Instance]] = {}

    def evaluate(
        self,
        clock_us: int,
        windows: Mapping[str, Any],
        group_id: str = "",
        group: GroupKey | None = None,
        among: frozenset[int] | None = None,
    ) -> list[AlertChange]:
        """The changes of this evaluation (the topic's windows, or a group's with its id and
        key), in rule order; of the alerts at these places in `rules` alone if `among` is
        given."""
        holding = self._chosen(self._holding(windows), group_id, among)
        live = self._live.get(group_id)
        changes: list[AlertChange] = []
        if live is None:
            if not holding:
                return changes  # inactive stays inactive: no instance is kept for it
            live = self._live[group_id] = {}
        else:
            for index in self._moved_on(live, clock_us, windows, holding, among, changes):
                del live[index]
        for index in holding:
            if index not in live:  # not evaluated above: inactive until now
                instance = Instance(self.rules[index], group_id, group)
                change = instance.evaluate(self.topic, clock_us, windows)
                if change is not None:
                    changes.append(change)
                if instance.state:
                    live[index] = instance
        if not live:
            del self._live[group_id]
        if len(changes) > 1:
            changes.sort(key=self._place)  # rule order, whichever were live before
        return changes

    def _chosen(
        self, holding: tuple[int, ...], group_id: str, among: frozenset[int] | None
    ) -> tuple[int, ...]:
        """The alerts (places in `rules`) whose `when` holds that this evaluation is for:
        those `among`, else a group's evaluation leaves out the message alerts (the topic's
        own)."""
        if among is not None:
            return tuple(i for i in holding if i in among)
        if group_id and self.message_rules:
            return tuple(i for i in holding if i not in self.message_rules)
        return holding

    def _moved_on(
        self,
        live: dict[int, Instance],
        clock_us: int,
        windows: Mapping[str, Any],
        holding: tuple[int, ...],
        among: frozenset[int] | None,
        changes: list[AlertChange],
    ) -> list[int]:
        """Evaluate the live instances (of those `among`), adding their changes; the places of
        those now inactive with their `when` no longer holding, to forget."""
        ended: list[int] = []
        for index, instance in live.items():
            if among is not None and index not in among:
                continue
            change = instance.evaluate(self.topic, clock_us, windows)
            if change is not None:
                changes.append(change)
            if not instance.state and index not in holding:
                ended.append(index)
        return ended

    def live(self, group_id: str = "") -> bool:
        """Whether an instance of the topic (or of the group) is pending or firing, or has
        just resolved while its `when` holds: its clock alone can move it on (`for`,
        `keep_firing_for`, pending again), so a tick evaluates it even when no window
        changed."""
        return group_id in self._live

    def any_live(self) -> bool:
        """Whether `live` holds for the topic or any of its groups."""
        return bool(self._live)

    def active(self) -> Iterator[Instance]:
        """The pending and firing instances."""
        return iter([i for live in self._live.values() for i in live.values() if i.state])

    def forget_group(self, group_id: str, clock_us: int) -> list[AlertChange]:
        """The group is gone (forgotten after the topic TTL, at `clock_us`): its firing
        instances resolve and its pending ones turn inactive."""
        return [
            instance._change(
                self.topic, RESOLVED if instance.state == FIRING else INACTIVE, clock_us
            )
            for instance in self._live.pop(group_id, {}).values()
            if instance.state
        ]

    def forget_all(self, clock_us: int) -> list[AlertChange]:
        """The topic is gone (deleted, at `clock_us`): every firing instance of it and of its
        groups resolves and every pending one turns inactive, the topic's first, then each
        group's in the order they became live."""
        changes: list[AlertChange] = []
        for group_id in list(self._live):
            changes += self.forget_group(group_id, clock_us)
        return changes

    def durable_state(self) -> bytes:
        return orjson.dumps(
            [
                [
                    i.rule.name,
                    i.group_id,
                    i.group,
                    i.state,
                    i.active_since_us,
                    i.clear_since_us,
                    i.value,
                ]
                for live in self._live.values()
                for i in live.values()
            ]
        )

    @classmethod
    def restored(cls, topic: str, rules: Sequence[AlertRule], data: bytes) -> TopicAlerts:
        """From `durable_state`; instances of alerts no longer in `rules` are dropped."""
        alerts = cls(topic, rules)
        by_name = {rule.name: rule for rule in rules}
        places = {rule.name: index for index, rule in enumerate(rules)}
        for name, group_id, group, state, since, clear_since, value in orjson.loads(data):
            rule = by_name.get(name)
            if rule is not None:
                alerts._live.setdefault(group_id, {})[places[name]] = Instance(
                    rule, group_id, group, state, since, clear_since, value
                )
        return alerts


@functools.lru_cache(maxsize=256)
def _first_look(whens: tuple[Condition, ...]) -> Holding:
    # One generated function per set of conditions, shared by the topics they match.
    return first_look(whens)
