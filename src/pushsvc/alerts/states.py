"""Each alert instance's state on its topic's clock (pure): inactive → pending → firing →
resolved, as Prometheus's alerting rules move (`rules/alerting.go`), on pushsvc's topic clock.

An instance is (alert, topic, group); `TopicAlerts` holds those of one topic and its groups.
Every evaluation takes the windows the aggregator just computed for the topic or a group:

* inactive: when `when` holds, pending (reported) with `since` = this clock — or firing at
  once when `for` is 0;
* pending: firing (reported) at the first evaluation whose clock is at least `for` after it
  became pending; when `when` no longer holds, inactive again, NOT reported (Prometheus drops
  a pending alert silently too);
* firing: it stays while `when` holds — or, with `clear`, until `clear` holds (hysteresis: a
  value between the two keeps it firing). Once it stops holding, `keep_firing_for` keeps it
  firing that much longer on the topic clock; a relapse meanwhile resets that. Then resolved
  (reported), and inactive.

A null statistic (an empty window) never matches `when`, and counts as cleared: as in
Prometheus, where a series that vanishes resolves its alert.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from pushsvc.alerts.rules import AlertRule

__all__ = ["AlertChange", "Instance", "TopicAlerts"]

PENDING, FIRING, RESOLVED = "pending", "firing", "resolved"
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
        rule = self.rule
        value = rule.when.value(windows)
        if self.state == FIRING and rule.clear is not None:
            clear_value = rule.clear.value(windows)
            holds = clear_value is not None and not rule.clear.holds(clear_value)
            value = clear_value if clear_value is not None else value
        else:
            holds = rule.when.holds(value)
        self.value = value
        if holds:
            self.clear_since_us = None
            if not self.state:
                self.active_since_us = clock_us
                self.state = FIRING if rule.for_us == 0 else PENDING
                return self._change(topic, self.state, clock_us)
            if self.state == PENDING and clock_us - self.active_since_us >= rule.for_us:
                self.state = FIRING
                return self._change(topic, FIRING, clock_us)
            return None
        if self.state == PENDING:
            self.state = ""  # a pending alert that clears is dropped without notice
            return None
        if self.state == FIRING:
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

    Every event is evaluated for its topic and its group against every alert, and nearly
    always nothing is pending or firing there and no `when` holds: that case is one loop over
    precomputed `(window, stat, operator, threshold)` with no instance, no method call on the
    condition and no key built (`bench/alerts.py` measures it)."""

    __slots__ = ("_checks", "_live", "rules", "topic")

    def __init__(self, topic: str, rules: Sequence[AlertRule]) -> None:
        self.topic = topic
        self.rules = tuple(rules)
        self._checks = tuple(
            (rule, rule.when.window, rule.when.stat, rule.when.compare, rule.when.threshold)
            for rule in self.rules
        )
        # The pending and firing instances by group id, then by alert name; a group with none
        # has no entry (inactive instances are not kept).
        self._live: dict[str, dict[str, Instance]] = {}

    def evaluate(
        self,
        clock_us: int,
        windows: Mapping[str, Any],
        group_id: str = "",
        group: GroupKey | None = None,
    ) -> list[AlertChange]:
        """The changes of this evaluation (the topic's windows, or a group's with its id and
        key), in rule order."""
        changes = []
        live = self._live.get(group_id)
        for rule, window, stat, test, threshold in self._checks:
            instance = None if live is None else live.get(rule.name)
            if instance is None:
                # A first look, which the instance's own evaluation then confirms: an absent
                # window or statistic, or a null, never matches; inactive stays inactive.
                try:
                    value = windows[window][stat]
                    if value is None or not test(value, threshold):
                        continue
                except (KeyError, TypeError):
                    continue
                instance = Instance(rule, group_id, group)
                if live is None:
                    live = self._live[group_id] = {}
                live[rule.name] = instance
            change = instance.evaluate(self.topic, clock_us, windows)
            if change is not None:
                changes.append(change)
            if not instance.state:
                assert live is not None
                del live[rule.name]
                if not live:
                    del self._live[group_id]
                    live = None
        return changes

    def active(self) -> Iterator[Instance]:
        """The pending and firing instances."""
        return iter([i for live in self._live.values() for i in live.values()])

    def forget_group(self, group_id: str) -> list[AlertChange]:
        """The group is gone (forgotten after the topic TTL): its firing instances resolve
        at its last clock, pending ones go silently."""
        changes = []
        for instance in self._live.pop(group_id, {}).values():
            if instance.state == FIRING:
                changes.append(instance._change(self.topic, RESOLVED, instance.active_since_us))
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
                for i in self.active()
            ]
        )

    @classmethod
    def restored(cls, topic: str, rules: Sequence[AlertRule], data: bytes) -> TopicAlerts:
        """From `durable_state`; instances of alerts no longer in `rules` are dropped."""
        alerts = cls(topic, rules)
        by_name = {rule.name: rule for rule in rules}
        for name, group_id, group, state, since, clear_since, value in orjson.loads(data):
            rule = by_name.get(name)
            if rule is not None:
                alerts._live.setdefault(group_id, {})[name] = Instance(
                    rule, group_id, group, state, since, clear_since, value
                )
        return alerts
