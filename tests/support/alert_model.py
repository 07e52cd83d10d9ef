"""A reference model of alert instances, written from Prometheus's alerting rule and from
pushsvc's Alerts contract (docs/design.md), sharing no code with `pushsvc`: what the alert
tests hold the product's `_alerts` messages and `GET /alerts` to.

Prometheus (`rules/alerting.go`, `AlertingRule.Eval`), per evaluation at time `ts`, for each
label set: when the expression has a sample for it (here: `when` holds), an inactive alert
becomes pending with `ActiveAt = ts`; a pending one becomes firing once
`ts - ActiveAt >= holdDuration` (`for`; with 0 in the same evaluation that made it pending);
a firing one that holds again forgets `KeepFiringSince`. Without a sample, a pending alert
is deleted (it never notified anyone); a firing one keeps firing while
`ts - KeepFiringSince < keepFiringFor` (`KeepFiringSince` set at the first evaluation without
a sample), else turns inactive with `ResolvedAt = ts`. A resolved alert whose sample comes
back starts a new pending period.

pushsvc on top (docs/design.md, Alerts):

* an instance is (alert, topic, group); each group of a grouping topic is one, with windows
  over its own events on the topic clock `T`;
* time is the topic clock; evaluations happen at each event's update (the topic's instances
  and those of the event's group) and at each tick (the topic's and every live group's);
* `when` is `stat[window] op number`; a null statistic (empty window) never matches, and
  counts as cleared;
* `clear`, when given, replaces `when` while an instance fires (hysteresis): it keeps firing
  until `clear` holds, then `keep_firing_for` runs as above;
* every change is a message: `pending`, `firing` (with `for` 0 straight from inactive, one
  message), `resolved`, and `inactive` for a pending instance that cleared; `since` is the
  clock of the evaluation, `value` the statistic it read (`clear`'s while firing with
  `clear`, `when`'s where `clear`'s is null);
* a group idle for the topic TTL (and the widest window) is forgotten — looked for once per
  tenth of the TTL of topic clock, after each batch and tick — and its pending instances turn
  inactive, its firing ones resolve, at that clock with the value of their last evaluation;
* `GET /alerts` lists each pending or firing instance's latest change.

Window statistics are computed here from the events fed in: the set is the events with
`ts` in `(T - w, T]`; quantiles are pandas' (`Series.quantile`, linear, the project's
statistics oracle), sum, mean and variance exact (`fractions`) then rounded once.

`anomaly_rate` (a rule's `anomaly`, docs/series.md) is the share of anomalous buckets among
the scored ones that closed in `(T - w, T]`: the model does not score buckets (that is the
detector's); a test tells it each scored bucket as it closes (`closed`, with the clock that
closed it and its flag, from the product's points), before the event or tick whose update
counts it.

Not modelled: `max_groups` (the overflow group) and count windows.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import pandas as pd

__all__ = ["AlertSpec", "Change", "Condition", "TopicModel", "spec_toml"]

US = 1_000_000
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le,
    "==": operator.eq, "!=": operator.ne,
}  # fmt: skip
_CONDITION = re.compile(r"(\w+)\[(\w+)\] (>=|<=|==|!=|>|<) (\S+)")
_QUANTILES = {"p50": 0.5, "p90": 0.9, "p99": 0.99}

GroupKey = tuple[tuple[str, str | None], ...]
"""A group's key as (tag, value) pairs in `group_by` order; () for the topic itself."""
Row = tuple[int, float, GroupKey]
"""An accepted event: (ts in µs, value, its group's key)."""


@dataclass(frozen=True)
class Condition:
    """`stat[window] op number`."""

    stat: str
    window: str
    op: str
    threshold: float

    @classmethod
    def parse(cls, text: str) -> Condition:
        found = _CONDITION.fullmatch(text)
        if found is None:
            raise ValueError(f"not stat[window] op number: {text!r}")
        return cls(found[1], found[2], found[3], float(found[4]))

    @property
    def text(self) -> str:
        return f"{self.stat}[{self.window}] {self.op} {self.threshold!r}"

    def holds(self, value: float | None) -> bool:
        return value is not None and _OPS[self.op](value, self.threshold)


@dataclass(frozen=True)
class AlertSpec:
    """One `[[alert]]` as the model reads it (durations in µs)."""

    name: str
    when: Condition
    clear: Condition | None = None
    for_us: int = 0
    keep_firing_for_us: int = 0
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)


def _duration(us: int) -> str:
    return f"{us // 1000}ms"


def spec_toml(spec: AlertSpec, topics: Sequence[str]) -> str:
    """The `[[alert]]` table of a rules file for `spec`, matching `topics` (selectors)."""
    lines = [
        "[[alert]]",
        f'name = "{spec.name}"',
        "topics = [" + ", ".join(f'"{t}"' for t in topics) + "]",
        f'when = "{spec.when.text}"',
        f'for = "{_duration(spec.for_us)}"',
        f'keep_firing_for = "{_duration(spec.keep_firing_for_us)}"',
    ]
    if spec.clear is not None:
        lines.append(f'clear = "{spec.clear.text}"')
    for table, items in (("labels", spec.labels), ("annotations", spec.annotations)):
        lines.append(f"{table} = {{ " + ", ".join(f'{k} = "{v}"' for k, v in items.items()) + " }")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Change:
    """One `_alerts` message, without its id."""

    alert: str
    topic: str
    group: dict[str, str | None] | None
    state: str
    value: float | None
    since_us: int

    @classmethod
    def of_message(cls, data: Mapping[str, Any]) -> Change:
        """From an `_alerts` message's (or a `GET /alerts` entry's) JSON."""
        return cls(
            data["alert"],
            data["topic"],
            data["group"],
            data["state"],
            data["value"],
            round(data["since"] * US),
        )

    @property
    def instance(self) -> tuple[str, str, str]:
        """Which instance changed, as a sortable key."""
        group = "" if self.group is None else repr(sorted(self.group.items()))
        return (self.alert, self.topic, group)

    def agrees(self, other: Change) -> bool:
        """The same change; values equal to 1e-9 relative (the statistics' contract)."""
        if (self.alert, self.topic, self.group, self.state, self.since_us) != (
            other.alert, other.topic, other.group, other.state, other.since_us,
        ):  # fmt: skip
            return False
        if self.value is None or other.value is None:
            return self.value is other.value
        return math.isclose(self.value, other.value, rel_tol=1e-9, abs_tol=1e-12)


@dataclass
class _Instance:
    """Prometheus's `Alert`, as much of it as decides the state."""

    state: str = "inactive"  # inactive, pending or firing
    active_at_us: int = 0
    keep_firing_since_us: int | None = None
    value: float | None = None
    latest: Change | None = None


@dataclass
class _Group:
    key: GroupKey
    newest_us: int = 0


class TopicModel:
    """One topic's events, clock, groups and alert instances. Feed it what the product is fed
    (`events`, `tick`); each returns the changes the product must publish. Changes of one
    call come topic first, then groups in the order they were admitted, alerts in rule
    order (the product's order across instances is not part of the contract: compare per
    instance)."""

    def __init__(
        self,
        topic: str,
        alerts: Sequence[AlertSpec],
        windows_us: Mapping[str, int],
        *,
        group_by: Sequence[str] = (),
        topic_ttl_us: int = 0,
    ) -> None:
        self.topic = topic
        self.alerts = tuple(alerts)
        self.windows_us = dict(windows_us)
        self.group_by = tuple(group_by)
        self.topic_ttl_us = topic_ttl_us
        self.clock_us: int | None = None
        self.rows: list[Row] = []
        self.groups: dict[GroupKey, _Group] = {}
        self.instances: dict[tuple[str, GroupKey], _Instance] = {}
        self._sweep_slot = 0
        self.scored: list[tuple[int, bool, GroupKey]] = []
        """(clock that closed it, anomalous, group key) of each scored bucket (`closed`)."""
        self.seen: set[str] = set()
        """What happened that changed nothing on its own (for a test's statistics): an
        instance held firing by `clear` or by `keep_firing_for`, a group forgotten with a
        pending or a firing instance."""

    # What the product is fed.

    def events(self, batch: Sequence[tuple[int, float, Mapping[str, str] | None]]) -> list[Change]:
        """One accepted batch of (ts µs, value, tags), evaluated event by event; idle groups
        are looked for once, after the batch."""
        changes: list[Change] = []
        for ts_us, value, tags in batch:
            self.clock_us = ts_us if self.clock_us is None else max(self.clock_us, ts_us)
            key: GroupKey = ()
            if self.group_by:
                key = tuple((tag, None if tags is None else tags.get(tag)) for tag in self.group_by)
                group = self.groups.setdefault(key, _Group(key))
                group.newest_us = max(group.newest_us, ts_us)
            self.rows.append((ts_us, value, key))
            changes += self._evaluate(())
            if self.group_by:
                changes += self._evaluate(key)
        return changes + self._sweep()

    def tick(self, clock_us: int) -> list[Change]:
        """An idle tick moving the topic clock to `clock_us` (nothing when it is not ahead):
        the topic and every group not forgotten are evaluated, then idle groups looked for."""
        if self.clock_us is None or clock_us <= self.clock_us:
            return []
        self.clock_us = clock_us
        changes = self._evaluate(())
        for key in list(self.groups):
            changes += self._evaluate(key)
        return changes + self._sweep()

    def closed(self, clock_us: int, anomalous: bool, key: GroupKey = ()) -> None:
        """A scored series bucket of the topic (or of the group `key`) closed at `clock_us`:
        what `anomaly_rate` counts."""
        self.scored.append((clock_us, anomalous, key))

    # What the product shows.

    def active(self) -> list[Change]:
        """`GET /alerts` of this topic: the latest change of each pending or firing instance,
        sorted by instance."""
        shown = [i.latest for i in self.instances.values() if i.state != "inactive" and i.latest]
        return sorted(shown, key=lambda change: change.instance)

    def stat(self, condition: Condition, key: GroupKey = ()) -> float | None:
        """The condition's statistic now, over the topic's events or a group's."""
        assert self.clock_us is not None
        width = self.windows_us[condition.window]
        if condition.stat == "anomaly_rate":
            flags = [
                flag
                for at, flag, k in self.scored
                if self.clock_us - width < at <= self.clock_us and k == key
            ]
            return sum(flags) / len(flags) if flags else None
        inside = [
            v
            for ts, v, k in self.rows
            if self.clock_us - width < ts <= self.clock_us and (not key or k == key)
        ]
        return window_stat(condition.stat, inside, width)

    # The state machine.

    def _evaluate(self, key: GroupKey) -> list[Change]:
        changes = []
        for spec in self.alerts:
            instance = self.instances.setdefault((spec.name, key), _Instance())
            change = self._step(spec, key, instance)
            if change is not None:
                instance.latest = change
                changes.append(change)
        return changes

    def _step(self, spec: AlertSpec, key: GroupKey, instance: _Instance) -> Change | None:
        clock = self.clock_us
        assert clock is not None
        if instance.state == "firing" and spec.clear is not None:
            value = self.stat(spec.clear, key)
            holding = value is not None and not spec.clear.holds(value)  # null: cleared
            if value is None:
                value = self.stat(spec.when, key)
        else:
            value = self.stat(spec.when, key)
            holding = spec.when.holds(value)
        instance.value = value
        if holding:
            if (
                instance.state == "firing"
                and spec.clear is not None
                and not spec.when.holds(self.stat(spec.when, key))
            ):
                self.seen.add("held firing by clear")
            instance.keep_firing_since_us = None
            if instance.state == "inactive":
                instance.state, instance.active_at_us = "pending", clock
                if clock - instance.active_at_us >= spec.for_us:
                    instance.state = "firing"
                return self._change(spec, key, instance.state, value)
            if instance.state == "pending" and clock - instance.active_at_us >= spec.for_us:
                instance.state = "firing"
                return self._change(spec, key, "firing", value)
            return None
        if instance.state == "pending":
            instance.state = "inactive"
            return self._change(spec, key, "inactive", value)
        if instance.state == "firing":
            if instance.keep_firing_since_us is None:
                instance.keep_firing_since_us = clock
            if clock - instance.keep_firing_since_us >= spec.keep_firing_for_us:
                instance.state, instance.keep_firing_since_us = "inactive", None
                return self._change(spec, key, "resolved", value)
            self.seen.add("held firing by keep_firing_for")
        return None

    def _sweep(self) -> list[Change]:
        """Forget the idle groups, if this clock is in a new tenth of the TTL."""
        if not self.group_by or not self.topic_ttl_us or self.clock_us is None:
            return []
        slot = self.clock_us // max(1, self.topic_ttl_us // 10)
        if slot == self._sweep_slot:
            return []
        self._sweep_slot = slot
        horizon = self.clock_us - max(self.topic_ttl_us, *self.windows_us.values())
        changes = []
        for key in [k for k, g in self.groups.items() if g.newest_us <= horizon]:
            del self.groups[key]
            for spec in self.alerts:
                instance = self.instances.pop((spec.name, key), None)
                if instance is None or instance.state == "inactive":
                    continue
                state = "resolved" if instance.state == "firing" else "inactive"
                self.seen.add(f"a group forgotten: {instance.state} to {state}")
                changes.append(self._change(spec, key, state, instance.value))
        return changes

    def _change(self, spec: AlertSpec, key: GroupKey, state: str, value: float | None) -> Change:
        assert self.clock_us is not None
        group = dict(key) if self.group_by and key else None
        return Change(spec.name, self.topic, group, state, value, self.clock_us)


def window_stat(stat: str, values: Sequence[float], width_us: int) -> float | None:
    """One statistic of a window holding `values` (in time order): null where the window is
    empty (count and sum: 0) or the statistic undefined (var and stddev of one value)."""
    n = len(values)
    if stat == "count":
        return float(n)
    if stat == "rate":
        return n / (width_us / US)
    if stat == "sum":
        return float(sum(map(Fraction, values), Fraction(0)))
    if n == 0:
        return None
    if stat == "min":
        return min(values)
    if stat == "max":
        return max(values)
    if stat == "mean":
        return float(sum(map(Fraction, values), Fraction(0)) / n)
    if stat in _QUANTILES:
        return float(pd.Series(sorted(values)).quantile(_QUANTILES[stat], interpolation="linear"))
    if stat in ("var", "stddev"):
        if n < 2:
            return None
        exact = [Fraction(v) for v in values]
        mean = sum(exact, Fraction(0)) / n
        var = sum(((x - mean) ** 2 for x in exact), Fraction(0)) / (n - 1)
        return float(var) if stat == "var" else math.sqrt(float(var))
    raise ValueError(f"the model has no statistic {stat!r}")
