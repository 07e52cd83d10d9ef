"""`[[alert]]` rules of the rules file, checked once at start (pure).

```toml
[[alert]]
name = "slow_grill"                    # [A-Za-z0-9_]+, unique
topics = ["restaurant.latency.*"]
when = "p99[1m] > 900"                 # stat[window] op number; op: > >= < <= == !=
clear = "p99[1m] < 800"                # optional (hysteresis)
for = "30s"                            # pending this long (topic clock) before firing
keep_firing_for = "1m"                 # stays firing this long after it clears
labels = { severity = "page" }
annotations = { summary = "grill p99 over 900 s" }
```

A condition names a window and a statistic the topic keeps, a count of its messages, or a
forecast. `messages(error)[1m] > 5` holds when the topic's last minute holds more than five
messages of type `error`, and `message_rate(error)[1m] > 0.1` when they come at more than one
every ten seconds: a type with no message in the window counts 0, so such an alert resolves
when the messages stop, and `messages(heartbeat)[1m] < 1` fires when they stop. Messages are
counted per topic in its exact time windows (`pushsvc.stats.message_counts`), so a message
condition names one of those and is judged for the topic, never for its groups.

A forecast condition, `forecast(mean, 30m) > 100`, holds when the rule's forecast (`forecast`
in its `[[rule]]`, of that statistic) predicts, for the bucket 30 minutes ahead of the last one
closed, a value over 100: the alert fires before the threshold is crossed. `30m` is a whole
number of the forecast tier's buckets, at most its horizon; while the model learns the value is
null (never matches).

Which rule a topic takes is known only per topic (the first matching `[[rule]]`, else the
server's windows), so an alert is checked against every rule that can be some matching topic's:
for each of the alert's selectors, the rules in file order whose selectors overlap it, up to
the first rule that covers it (its topics never reach a later rule), and the default rule when
no rule covers it.
Selectors overlap when one can match a topic the other matches (`*`; equal names; a name
under a `prefix.*`; two prefixes one of which extends the other).
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Annotated, Any

from msgspec import Meta, Struct

from pushsvc.core.durations import duration_label, parse_duration_us
from pushsvc.core.event import MESSAGE_TYPE, RESERVED_TYPES
from pushsvc.core.topics import TopicMatcher, overlap
from pushsvc.errors import InvalidTopic
from pushsvc.rules.fields import Grace, wrong
from pushsvc.rules.forecast import ForecastRule

__all__ = [
    "FORECAST_WINDOW",
    "AlertRule",
    "AlertTable",
    "AlertsError",
    "Condition",
    "parse_alerts",
    "parse_condition",
]

_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le,
    "==": operator.eq, "!=": operator.ne,
}  # fmt: skip
_CONDITION = re.compile(
    r"\s*([A-Za-z0-9_]+)\s*\[\s*([A-Za-z0-9_.]+)\s*\]\s*(>=|<=|==|!=|>|<)\s*"
    r"([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*"
)
_MESSAGE_CONDITION = re.compile(
    rf"\s*(messages|message_rate)\s*\(\s*({MESSAGE_TYPE.pattern})\s*\)\s*\[\s*([A-Za-z0-9_.]+)\s*\]"
    r"\s*(>=|<=|==|!=|>|<)\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*"
)
"""`messages(type)[window] op number`: the type as an event may carry it."""
_MESSAGE_FIELDS = {"messages": "count", "message_rate": "rate"}
_FORECAST_CONDITION = re.compile(
    r"\s*forecast\s*\(\s*([A-Za-z0-9_]+)\s*,\s*([A-Za-z0-9_.]+)\s*\)\s*(>=|<=|==|!=|>|<)\s*"
    r"([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*"
)
FORECAST_WINDOW = "forecast:"
"""A forecast condition's window: this and how far ahead (`forecast:30m`), never a window's
label (`:` is in none), its value given beside the windows (`pushsvc.aggregate.stages`)."""
_NAME = re.compile(r"[A-Za-z0-9_]+")
_LABEL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # Prometheus's label names
_TOPICS = wrong("give a list of topic names or prefix.* selectors")
_NAMED = wrong("give a table of names to strings")


class AlertsError(ValueError):
    """One line: which alert and field is wrong, and how."""


@dataclass(frozen=True, slots=True)
class Condition:
    """`stat[window] op threshold`; for a message condition, `stat` is `count` or `rate` of the
    messages of `message_type`."""

    stat: str
    window: str
    op: str
    threshold: float
    text: str = field(compare=False)
    message_type: str | None = None
    compare: Callable[[float, float], bool] = field(init=False, compare=False, repr=False)
    """The operator as a function of (value, threshold)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "compare", _OPERATORS[self.op])

    def value(self, windows: Mapping[str, Mapping[str, object]]) -> float | None:
        """The statistic in these windows (`{window: {stat: value}}`), None where it is null
        or absent (an empty window). A message condition's count or rate is 0 in a window
        without such messages."""
        if self.message_type is not None:
            window = windows.get(self.window)
            if not isinstance(window, Mapping):
                return None
            by_type = window.get("messages")
            counted = by_type.get(self.message_type) if isinstance(by_type, Mapping) else None
            return float(counted[self.stat]) if counted else 0.0
        # Run for every pending or firing instance on every event: the engine's float first.
        try:
            value = windows[self.window][self.stat]
        except (KeyError, TypeError):
            return None
        if type(value) is float:
            return value
        return (
            float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
        )

    @property
    def ahead_us(self) -> int | None:
        """A forecast condition's distance ahead; None for a window's."""
        if not self.window.startswith(FORECAST_WINDOW):
            return None
        return parse_duration_us(self.window[len(FORECAST_WINDOW) :])

    def holds(self, value: float | None) -> bool:
        """Whether the condition holds for this value; a null statistic never matches."""
        return value is not None and self.compare(value, self.threshold)


@dataclass(frozen=True, slots=True)
class AlertRule:
    """One alert, valid."""

    name: str
    selectors: tuple[str, ...]
    when: Condition
    clear: Condition | None
    for_us: int
    keep_firing_for_us: int
    labels: Mapping[str, str]
    annotations: Mapping[str, str]

    def describe(self) -> dict[str, Any]:
        """As `GET /rules` answers it (and the rules' digest covers)."""
        described: dict[str, Any] = {
            "name": self.name,
            "topics": list(self.selectors),
            "when": self.when.text,
            "for_seconds": self.for_us / 1_000_000,
            "keep_firing_for_seconds": self.keep_firing_for_us / 1_000_000,
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
        }
        if self.clear is not None:
            described["clear"] = self.clear.text
        return described


def parse_condition(text: str) -> Condition:
    """ValueError unless `text` is `stat[window] op number`, `messages(type)[window] op
    number` (or `message_rate`), or `forecast(stat, ahead) op number` (a finite number)."""
    written = text.strip()
    if (found := _MESSAGE_CONDITION.fullmatch(text)) is not None:
        if found[2] in RESERVED_TYPES:
            raise ValueError(f"{written!r}: no message has the type {found[2]!r}")
        kind, threshold = _MESSAGE_FIELDS[found[1]], _finite(text, found[5])
        return Condition(kind, found[3], found[4], threshold, written, message_type=found[2])
    if (match := _CONDITION.fullmatch(text)) is not None:
        return Condition(match[1], match[2], match[3], _finite(text, match[4]), written)
    if (match := _FORECAST_CONDITION.fullmatch(text)) is None:
        raise ValueError(
            f'{text[:80]!r} is not stat[window] op number, e.g. "p99[1m] > 900", nor '
            'messages(type)[window] op number, e.g. "messages(error)[1m] > 5", nor '
            'forecast(stat, ahead) op number, e.g. "forecast(mean, 30m) > 100" '
            "(op: > >= < <= == !=)"
        )
    try:
        ahead_us = parse_duration_us(match[2])
    except ValueError as exc:
        raise ValueError(f"{written!r}: {exc}") from None
    if ahead_us <= 0:
        raise ValueError(f"{written!r}: how far ahead must be longer than 0")
    window = FORECAST_WINDOW + duration_label(ahead_us)
    return Condition(match[1], window, match[3], _finite(text, match[4]), written)


def _finite(text: str, number: str) -> float:
    threshold = float(number)
    if not math.isfinite(threshold):
        raise ValueError(f"{text!r}: the number must be finite")
    return threshold


@dataclass(frozen=True, slots=True)
class RuleOutline:
    """A rule as an alert is checked against it: its selectors, window labels, statistics,
    and its place (0 for the default rule)."""

    number: int
    selectors: tuple[str, ...]
    windows: tuple[str, ...]
    stats: tuple[str, ...]
    forecast: ForecastRule | None = None
    message_windows: tuple[str, ...] = ()
    """The windows that count messages by type: the exact time windows."""


class AlertTable(Struct, forbid_unknown_fields=True, kw_only=True, rename={"for_": "for"}):
    """An `[[alert]]` table as written; its conditions are read by `parse_alerts`."""

    name: Annotated[
        str,
        Meta(pattern=f"^{_NAME.pattern}$"),
        wrong("{value!r} is not ASCII letters, digits and _"),
    ]
    topics: Annotated[list[Annotated[str, _TOPICS]], Meta(min_length=1), _TOPICS] | str
    when: Annotated[str, wrong('{value!r} is not a condition in a string, e.g. "p99[1m] > 900"')]
    clear: (
        Annotated[str, wrong('{value!r} is not a condition in a string, e.g. "p99[1m] < 800"')]
        | None
    ) = None
    for_: Grace | None = None
    keep_firing_for: Grace | None = None
    labels: Annotated[dict[str, str], _NAMED] = {}
    annotations: Annotated[dict[str, str], _NAMED] = {}

    def __post_init__(self) -> None:
        if isinstance(self.topics, str):
            self.topics = [self.topics]
        try:
            TopicMatcher(self.topics)
        except InvalidTopic as exc:
            raise ValueError(f"topics: {exc.message}") from None
        for named, names in (("labels", self.labels), ("annotations", self.annotations)):
            for name in names:
                if not _LABEL.fullmatch(name):
                    raise ValueError(
                        f"{named}: {name!r} is not a label name ([A-Za-z_][A-Za-z0-9_]*)"
                    )


def parse_alerts(
    tables: Sequence[AlertTable],
    rules: Sequence[RuleOutline],
    default: RuleOutline,
    *,
    known_stats: Sequence[str],
    window_named: Callable[[str], str] = str,
) -> tuple[AlertRule, ...]:
    """The `[[alert]]` tables of a rules file, each valid on its own, against the rules some
    of their topics take; AlertsError (one line) on the first problem. `window_named` gives
    the label of the window a condition names (`count[24h]` names the window its rule writes
    `1d`: `Rules.window_named`)."""
    alerts: list[AlertRule] = []
    seen: set[str] = set()
    for index, table in enumerate(tables, 1):
        label = f"alert {index} ({table.name})"
        try:
            alert = _alert(table, rules, default, known_stats, window_named)
        except ValueError as exc:
            raise AlertsError(f"{label}: {exc}") from None
        if alert.name in seen:
            raise AlertsError(f"{label}: name: {alert.name!r} is given twice")
        seen.add(alert.name)
        alerts.append(alert)
    return tuple(alerts)


def _alert(
    table: AlertTable,
    rules: Sequence[RuleOutline],
    default: RuleOutline,
    known: Sequence[str],
    window_named: Callable[[str], str],
) -> AlertRule:
    selectors = tuple(table.topics)
    when = _named(_field("when", lambda: parse_condition(table.when)), window_named)
    clear = None
    if table.clear is not None:
        text = table.clear
        clear = _named(_field("clear", lambda: parse_condition(text)), window_named)
    for field_name, condition in (("when", when), ("clear", clear)):
        if condition is not None:
            _check_window(field_name, condition, selectors, rules, default, known)
    return AlertRule(
        table.name,
        selectors,
        when,
        clear,
        0 if table.for_ is None else table.for_.us,
        0 if table.keep_firing_for is None else table.keep_firing_for.us,
        dict(table.labels),
        dict(table.annotations),
    )


def _named(condition: Condition, window_named: Callable[[str], str]) -> Condition:
    """The condition with its window named by its label (its text stays as written)."""
    if condition.ahead_us is not None:
        return condition
    label = window_named(condition.window)
    return condition if label == condition.window else replace(condition, window=label)


def _field(name: str, read: Callable[[], Any]) -> Any:
    try:
        return read()
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None


def _check_window(
    field_name: str,
    condition: Condition,
    selectors: tuple[str, ...],
    rules: Sequence[RuleOutline],
    default: RuleOutline,
    known: Sequence[str],
) -> None:
    if condition.ahead_us is not None:
        _check_forecast(field_name, condition, condition.ahead_us, selectors, rules, default)
        return
    if condition.message_type is not None:
        _check_message_window(field_name, condition, selectors, rules, default)
        return
    if condition.stat.startswith("top_"):
        raise ValueError(
            f"{field_name}: {condition.stat} is a list of values, not a number: top values "
            "cannot be alerted on"
        )
    if condition.stat not in known:
        raise ValueError(
            f"{field_name}: unknown statistic {condition.stat!r}; one of {', '.join(known)}"
        )
    for scope in _scopes(selectors, rules, default):
        where = "the server's windows" if scope.number == 0 else f"rule {scope.number}"
        if condition.window not in scope.windows:
            raise ValueError(
                f"{field_name}: window {condition.window!r} is not kept by {where} "
                f"({', '.join(scope.windows)}), which some of its topics take"
            )
        if condition.stat not in scope.stats:
            raise ValueError(
                f"{field_name}: statistic {condition.stat!r} is not kept by {where}, which "
                "some of its topics take"
            )
        if condition.stat == "anomaly_rate" and condition.window.startswith("last"):
            raise ValueError(
                f"{field_name}: anomaly_rate is kept by time windows only, not by "
                f"{condition.window!r} (it counts events, not closed buckets)"
            )


def _check_message_window(
    field_name: str,
    condition: Condition,
    selectors: tuple[str, ...],
    rules: Sequence[RuleOutline],
    default: RuleOutline,
) -> None:
    for scope in _scopes(selectors, rules, default):
        where = "the server's windows" if scope.number == 0 else f"rule {scope.number}"
        if condition.window not in scope.message_windows:
            counted = ", ".join(scope.message_windows) or "none"
            raise ValueError(
                f"{field_name}: messages are counted in the exact time windows of {where} "
                f"({counted}), not in {condition.window!r}, which some of its topics take"
            )


def _check_forecast(
    field_name: str,
    condition: Condition,
    ahead_us: int,
    selectors: tuple[str, ...],
    rules: Sequence[RuleOutline],
    default: RuleOutline,
) -> None:
    ahead = duration_label(ahead_us)
    for scope in _scopes(selectors, rules, default):
        where = "the server's rule" if scope.number == 0 else f"rule {scope.number}"
        forecast = scope.forecast
        if forecast is None:
            raise ValueError(
                f"{field_name}: {where} has no forecast, and some of the alert's topics take it"
            )
        if condition.stat != forecast.stat:
            raise ValueError(
                f"{field_name}: {where} forecasts {forecast.stat}, not {condition.stat}"
            )
        if ahead_us % forecast.tier_us or not ahead_us // forecast.tier_us <= forecast.horizon:
            horizon = duration_label(forecast.horizon * forecast.tier_us)
            raise ValueError(
                f"{field_name}: {ahead} ahead is not a whole number of {forecast.tier} buckets "
                f"within {where}'s forecast horizon ({horizon})"
            )


def _scopes(
    selectors: tuple[str, ...], rules: Sequence[RuleOutline], default: RuleOutline
) -> list[RuleOutline]:
    """The rules some topic the selectors match can take (see the module doc): per selector,
    the rules in file order that overlap it, up to the first that covers it (no topic of it
    goes further); the default rule when none does."""
    chosen: dict[int, RuleOutline] = {}
    for selector in selectors:
        for rule in rules:
            if any(overlap(selector, theirs) for theirs in rule.selectors):
                chosen[rule.number] = rule
            if any(covers(theirs, selector) for theirs in rule.selectors):
                break
        else:
            chosen[default.number] = default
    return list(chosen.values())


def covers(outer: str, inner: str) -> bool:
    """Whether every topic `inner` matches, `outer` matches too."""
    if outer == "*" or outer == inner:
        return True
    if outer.endswith(".*"):
        return inner != "*" and inner.startswith(outer[:-1])
    return False
