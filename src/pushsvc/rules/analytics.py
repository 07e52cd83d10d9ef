"""Analytics rules: which windows, statistics and groups each family of topics keeps.

A rules file (TOML, `--rules` / `PUSHSVC_RULES`) holds `[[rule]]` tables, and the
`[[alert]]` (`pushsvc.rules.alerts`) and `[[derive]]` (`pushsvc.rules.derive`) tables read
with them. A topic takes the FIRST rule whose `topics` selectors match it; a topic no rule
matches takes the server's `--windows` and every statistic but `rate` (the *default rule*).
Every process of a deployment reads the same file; `Rules.digest` names what they read, so a
process can tell that another one computes different statistics (`/readyz`).

Validation happens once, at start: the file's shape is `pushsvc.rules.file_shape`'s Structs,
what a rule can only check against the server's tiers (`anomaly`, `forecast`) and the other
kinds of table against the rules is checked here; a bad file is one `RulesError` line naming
the file, the rule and the field (`pushsvc.rules.file_errors`). Everything downstream takes a
`Rule` as valid.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any, TypeVar

import msgspec
import orjson

from pushsvc.core.durations import duration_label, parse_duration_us
from pushsvc.core.lists import comma_list
from pushsvc.core.topics import TopicMatcher, overlap
from pushsvc.errors import RulesError
from pushsvc.rules.alerts import AlertRule, AlertTable, RuleOutline, covers, parse_alerts
from pushsvc.rules.anomaly import AnomalyRule, parse_anomaly
from pushsvc.rules.derive import DeriveRule, parse_derives
from pushsvc.rules.file_errors import one_line
from pushsvc.rules.file_shape import (
    DEFAULT_EXACT_UP_TO_US,
    DEFAULT_MAX_GROUPS,
    MAX_GROUPS_CAP,
    RuleTable,
    decode_rules_file,
)
from pushsvc.rules.forecast import ForecastRule, parse_forecast
from pushsvc.rules.names import ALL_STATS, MAX_COUNT_WINDOW, SUB_BUCKETS
from pushsvc.rules.sessions import SESSION_SCALARS, SESSION_STATS, SessionRule, parse_sessions
from pushsvc.rules.tiers import SeriesTier

__all__ = [
    "DEFAULT_EXACT_UP_TO_US",
    "MAX_COUNT_WINDOW",
    "MAX_GROUPS_CAP",
    "Rule",
    "Rules",
    "SeriesTier",
    "load_rules",
    "parse_rules",
]

#: Exact top values while a window holds at most this many different values (and 20 k).
EXACT_TOP_UP_TO = 1000


@dataclass(frozen=True, slots=True)
class Rule:
    """One family of topics' analytics, valid. `number` is its place in the file (1 for the
    first rule), 0 for the default rule."""

    number: int
    selectors: tuple[str, ...]
    windows_us: tuple[int, ...]
    """Time windows, ascending."""
    last: tuple[int, ...]
    """Count windows (sizes), ascending."""
    stats: tuple[str, ...]
    """In `ALL_STATS` order."""
    group_by: tuple[str, ...] = ()
    max_groups: int = DEFAULT_MAX_GROUPS
    exact_up_to_us: int = DEFAULT_EXACT_UP_TO_US
    series: tuple[SeriesTier, ...] | None = None
    """None: the server's tiers."""
    distinct: tuple[str, ...] = ()
    """Tags whose different values every window counts (`distinct_<tag>`)."""
    top: tuple[tuple[str, int], ...] = ()
    """(tag, k): every window lists the tag's k most frequent values (`top_<tag>`)."""
    anomaly: AnomalyRule | None = None
    """Which closed series buckets are scored for anomalies (`pushsvc.rules.anomaly`)."""
    window_names: tuple[str, ...] = ()
    """The time windows' labels, one per `windows_us`, as the rules file writes them (`1d`
    stays `1d`, `120s` stays `120s`); empty: `duration_label`'s (`24h`, `2m`)."""
    forecast: ForecastRule | None = None
    """Which closed series buckets a model learns and forecasts (`pushsvc.rules.forecast`)."""
    grace_us: int | None = None
    """How far behind its topic's clock an event is still applied in place; None: the
    server's `--grace`."""
    late: str = "keep"
    """An event past the grace: `keep` (logged on the topic's late stream) or `refuse`."""

    def window_label(self, width_us: int) -> str:
        """The label of the time window `width_us` wide: as the rules file writes it."""
        if self.window_names:
            return self.window_names[self.windows_us.index(width_us)]
        return duration_label(width_us)

    @property
    def scalars(self) -> tuple[str, ...]:
        """The statistics whose values are numbers: `stats`, then the distinct counts, then
        `anomaly_rate` (time windows only) when the rule scores anomalies."""
        rated = ("anomaly_rate",) if self.anomaly is not None else ()
        return (*self.stats, *(f"distinct_{tag}" for tag in self.distinct), *rated)

    @property
    def reported(self) -> tuple[str, ...]:
        """Every statistic a window of the rule reports, in that order."""
        return (*self.scalars, *(f"top_{tag}" for tag, _ in self.top))

    @property
    def exact_windows_us(self) -> tuple[int, ...]:
        """Time windows whose percentiles are exact (every event held)."""
        return tuple(w for w in self.windows_us if w <= self.exact_up_to_us)

    @property
    def sketch_windows_us(self) -> tuple[int, ...]:
        """Time windows wider than `exact_up_to_us`: percentiles from a sketch, the edge
        rounded to a sub-bucket."""
        return tuple(w for w in self.windows_us if w > self.exact_up_to_us)

    @property
    def labels(self) -> tuple[str, ...]:
        """Every window's label in update order: exact, sketch, then count windows."""
        return (
            *(self.window_label(w) for w in self.exact_windows_us),
            *(self.window_label(w) for w in self.sketch_windows_us),
            *(f"last{n}" for n in self.last),
        )

    @property
    def groups(self) -> bool:
        return bool(self.group_by)

    def describe(self) -> dict[str, Any]:
        """The rule as `GET /rules` answers it (and as its digest covers)."""
        windows: list[dict[str, Any]] = []
        for width in self.windows_us:
            window: dict[str, Any] = {
                "label": self.window_label(width),
                "kind": "time",
                "seconds": width / 1_000_000,
            }
            if width <= self.exact_up_to_us:
                window["percentiles"] = "exact"
            else:
                window["percentiles"] = "sketch"
                window["relative_error"] = 0.01
                window["edge_seconds"] = (width // SUB_BUCKETS) / 1_000_000
            windows.append(window)
        windows += [{"label": f"last{n}", "kind": "count", "events": n} for n in self.last]
        described: dict[str, Any] = {
            "rule": self.number,
            "topics": list(self.selectors),
            "windows": windows,
            "stats": list(self.stats),
            "group_by": list(self.group_by),
        }
        if self.group_by:
            described["max_groups"] = self.max_groups
        if self.series is not None:
            described["series"] = [tier.label for tier in self.series]
        # Windows that hold their events count every value exactly, however many there are;
        # `exact_up_to` is the promise of the others (long windows) and of series buckets.
        exact_in = [w["label"] for w in windows if w.get("percentiles") != "sketch"]
        if self.distinct:
            described["distinct"] = [
                {
                    "tag": tag,
                    "stat": f"distinct_{tag}",
                    "exact_in": exact_in,
                    "exact_up_to": 1000,
                    "relative_error": 0.01,
                }
                for tag in self.distinct
            ]
        if self.top:
            described["top"] = [
                {
                    "tag": tag,
                    "k": k,
                    "stat": f"top_{tag}",
                    "exact_in": exact_in,
                    "exact_up_to": max(EXACT_TOP_UP_TO, 20 * k),
                }
                for tag, k in self.top
            ]
        if self.anomaly is not None:
            described["anomaly"] = self.anomaly.describe()
        if self.forecast is not None:
            described["forecast"] = self.forecast.describe()
        if self.grace_us is not None:
            described["grace_seconds"] = self.grace_us / 1_000_000
        if self.late != "keep":
            described["late"] = self.late
        return described


class Rules:
    """The rules of a deployment, in file order, and the default rule; immutable."""

    def __init__(
        self,
        rules: Sequence[Rule],
        default: Rule,
        *,
        source: str | None = None,
        alerts: Sequence[AlertRule] = (),
        derives: Sequence[DeriveRule] = (),
        sessions: Sequence[SessionRule] = (),
    ):
        self.rules = tuple(rules)
        self.default = default
        self.source = source
        self.alerts = tuple(alerts)
        """The `[[alert]]` rules, in file order (`pushsvc.rules.alerts`)."""
        self.derives = tuple(derives)
        """The `[[derive]]` rules, in file order (`pushsvc.rules.derive`)."""
        self.derived_topics = frozenset(rule.topic for rule in self.derives)
        """Topics pushsvc itself produces: producers may not post to them."""
        self.sessions = tuple(sessions)
        """The `[[session]]` rules, in file order (`pushsvc.rules.sessions`)."""
        self.session_topics = frozenset(rule.topic for rule in self.sessions)
        """Session topics: pushsvc produces them too, producers may not post to them."""
        self._matchers = tuple(TopicMatcher(rule.selectors) for rule in self.rules)
        self._chosen: dict[str, Rule] = {}

    @cached_property
    def never_applied(self) -> tuple[str, ...]:
        """One line per rule that can never apply, an earlier one matching all its topics
        (`pushsvc.rules.shadowed`): said at start."""
        from pushsvc.rules.shadowed import describe_shadowed

        numbered = [(rule.number, rule.selectors) for rule in self.rules]
        return tuple(describe_shadowed(numbered, self.source or "rules"))

    def grace_of(self, topic: str, default_us: int) -> tuple[int, bool]:
        """`topic`'s grace (its rule's, else `default_us`, the server's `--grace`) and
        whether an event past it is refused (`late = "refuse"`) rather than kept."""
        rule = self.for_topic(topic)
        grace = default_us if rule.grace_us is None else rule.grace_us
        return grace, rule.late == "refuse"

    def widest_grace_us(self, default_us: int) -> int:
        """The longest grace of any topic: how long a derived metric waits for its sources'
        buckets to close (a source's rule may give it a longer grace than the server's)."""
        return max([default_us, *(r.grace_us for r in self.rules if r.grace_us is not None)])

    def widest_grace_under(self, selectors: Sequence[str], default_us: int) -> int:
        """The longest grace a topic that `selectors` match may take: of each rule in file
        order whose topics overlap a selector, up to the first that covers it (no topic of it
        goes further), and `default_us` (the server's `--grace`) where none covers it. What a
        session rule's sources may still bring late (`pushsvc.aggregate.sessionize`)."""
        widest = 0
        for selector in selectors:
            for rule in self.rules:
                if any(overlap(selector, theirs) for theirs in rule.selectors):
                    grace = default_us if rule.grace_us is None else rule.grace_us
                    widest = max(widest, grace)
                if any(covers(theirs, selector) for theirs in rule.selectors):
                    break
            else:
                widest = max(widest, default_us)
        return widest

    def for_topic(self, topic: str) -> Rule:
        """The first rule matching `topic`, else the default rule."""
        rule = self._chosen.get(topic)
        if rule is None:
            rule = self.default
            for matcher, candidate in zip(self._matchers, self.rules, strict=True):
                if matcher(topic):
                    rule = candidate
                    break
            if len(self._chosen) >= 65_536:
                self._chosen.clear()  # bounded: topics come and go
            self._chosen[topic] = rule
        return rule

    @cached_property
    def applied(self) -> tuple[Rule, ...]:
        """The rules some topic may take: the default rule, unless a rule takes every topic
        (`*`, how a rules file sets what every other topic keeps), then the file's."""
        takes_all = any("*" in rule.selectors for rule in self.rules)
        return self.rules if takes_all else (self.default, *self.rules)

    @cached_property
    def labels(self) -> tuple[str, ...]:
        """Every window label some topic may have (what a projection may name)."""
        seen: dict[str, None] = {}
        for rule in self.applied:
            seen.update(dict.fromkeys(rule.labels))
        return tuple(seen)

    @cached_property
    def _window_labels(self) -> dict[int, str]:
        """Each time window's width and label, over every rule (one label per width: see
        `_spell_windows`)."""
        return {
            width: rule.window_label(width) for rule in self.applied for width in rule.windows_us
        }

    def window_named(self, name: str) -> str:
        """The label of the time window `name` names by any equal duration (`24h`, `86400s`
        or `1d` for a window the rules file writes `1d`); `name` itself when it names none
        (a count window, a label, or nothing some topic keeps)."""
        if name in self.labels:
            return name
        try:
            width = parse_duration_us(name)
        except ValueError:
            return name
        return self._window_labels.get(width, name)

    def windows_named(self, given: str | None) -> str | None:
        """A `?windows=` list with each window named by its label (`window_named`)."""
        if given is None:
            return None
        return ",".join(self.window_named(name) for name in comma_list(given))

    @cached_property
    def stats(self) -> tuple[str, ...]:
        """Every statistic some topic may have: `ALL_STATS` order, then the tag statistics in
        file order, then a session topic's own."""
        chosen = {s for rule in self.applied for s in rule.stats}
        tagged = {name: None for rule in self.applied for name in rule.reported[len(rule.stats) :]}
        sessions = SESSION_STATS if self.sessions else ()
        return (*(s for s in ALL_STATS if s in chosen), *tagged, *sessions)

    def alerts_for(self, topic: str) -> tuple[AlertRule, ...]:
        """The alerts whose selectors match `topic`, in file order."""
        return tuple(a for a, m in zip(self.alerts, self._alert_matchers, strict=True) if m(topic))

    @cached_property
    def _alert_matchers(self) -> tuple[TopicMatcher, ...]:
        return tuple(TopicMatcher(alert.selectors) for alert in self.alerts)

    def series_of(self, rule: Rule) -> tuple[SeriesTier, ...]:
        """The tiers `rule` keeps: its own, else the server's (the default rule's)."""
        return rule.series if rule.series is not None else self.default.series or ()

    @cached_property
    def series_labels(self) -> tuple[str, ...]:
        """Every tier's resolution some topic may have (what `?series=` may name), finest
        first."""
        tiers = {t for rule in self.applied for t in self.series_of(rule)}
        return tuple(duration_label(t.resolution_us) for t in sorted(tiers, key=_resolution))

    def describe(self) -> dict[str, Any]:
        """`GET /rules`: the digest, the rules in file order, and the default rule."""
        return {"digest": self.digest, **self._described()}

    def _described(self) -> dict[str, Any]:
        described: dict[str, Any] = {
            "rules": [rule.describe() for rule in self.rules],
            "default": self.default.describe(),
        }
        if self.alerts:
            described["alerts"] = [alert.describe() for alert in self.alerts]
        if self.derives:
            described["derive"] = [rule.describe() for rule in self.derives]
        if self.sessions:
            described["session"] = [rule.describe() for rule in self.sessions]
        return described

    @cached_property
    def digest(self) -> str:
        """Equal for deployments that compute the same statistics for every topic."""
        canonical = orjson.dumps(self._described(), option=orjson.OPT_SORT_KEYS)
        return hashlib.sha256(canonical).hexdigest()[:16]


def default_rule(
    windows_us: Sequence[int], stats: Sequence[str], series: Sequence[SeriesTier] = ()
) -> Rule:
    """The server's settings as a rule: every window exact, as without a rules file; its
    `series` are also the tiers of every rule that names none."""
    widths = tuple(sorted(windows_us))
    return Rule(
        0,
        ("*",),
        widths,
        (),
        tuple(s for s in ALL_STATS if s in set(stats)),
        exact_up_to_us=max(widths),
        series=tuple(series),
    )


def load_rules(path: str, default: Rule) -> Rules:
    """Read and check a rules file. RulesError (one line, naming the file) when it cannot
    be read or is not valid."""
    try:
        with open(path, "rb") as handle:
            document = tomllib.load(handle)
    except OSError as exc:
        raise RulesError(f"rules file {path}: cannot read it: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise RulesError(f"rules file {path}: not valid TOML: {exc}") from None
    return parse_rules(document, default, source=path)


def parse_rules(document: dict[str, Any], default: Rule, *, source: str = "rules") -> Rules:
    """The rules of a parsed TOML document; RulesError names the rule and the field."""
    try:
        given = decode_rules_file(document)
    except msgspec.ValidationError as exc:
        raise RulesError(f"rules file {source}: {one_line(exc, document)}") from None
    rules = []
    for number, table in enumerate(given.rule, 1):
        try:
            rules.append(_rule(number, table, default))
        except ValueError as exc:
            named = f"rule {number} ({', '.join(table.topics)})"
            raise RulesError(f"rules file {source}: {named}: {exc}") from None
    rules, default = _spell_windows(given.rule, rules, default, source)
    chosen = Rules(rules, default)
    try:
        derives = parse_derives(
            given.derive, lambda topic: chosen.series_of(chosen.for_topic(topic))
        )
        sessions = parse_sessions(given.session, produced=[rule.topic for rule in derives])
        alerts = _alerts(given.alert, chosen, sessions)
    except ValueError as exc:  # AlertsError too
        raise RulesError(f"rules file {source}: {exc}") from None
    return Rules(rules, default, source=source, alerts=alerts, derives=derives, sessions=sessions)


def _alerts(
    given: Sequence[AlertTable], chosen: Rules, sessions: tuple[SessionRule, ...]
) -> tuple[AlertRule, ...]:
    """The `[[alert]]` tables, against what the rules keep. A session topic's own numbers may
    be alerted on (its funnel, a list, may not), under the rule the session topic takes."""
    taken = {chosen.for_topic(rule.topic).number for rule in sessions}
    rules = chosen.rules
    return parse_alerts(
        given,
        [_outline(rule, taken) for rule in rules],
        _outline(chosen.default, taken),
        known_stats=(
            *ALL_STATS,
            *{name: None for rule in rules for name in rule.scalars[len(rule.stats) :]},
            *(SESSION_SCALARS if sessions else ()),
        ),
        window_named=chosen.window_named,
    )


# A label kept as written: a whole number and a unit. Any other spelling of a duration
# (`1.5h`, a bare `90`) is labelled `duration_label`'s way (`90m`, `90s`).
_WRITTEN_LABEL = re.compile(r"[1-9][0-9]*(?:ms|s|m|h|d)")


def _spell_windows(
    tables: Sequence[RuleTable], rules: list[Rule], default: Rule, source: str
) -> tuple[list[Rule], Rule]:
    """The rules and the default rule with their time windows labelled as the file writes
    them. One label per duration in a deployment: a stream's `?windows=24h` then selects the
    one window that lasts a day whatever its rule (`Rules.window_named`), and an alert's
    `count[24h]` names it too. A duration written two ways (`1d` in one rule, `24h` in
    another) is refused: which of the two a topic's updates carry would depend on its rule."""
    written: dict[int, tuple[str, int]] = {}  # width -> (label, rule number)
    for rule, table in zip(rules, tables, strict=True):
        for window in table.windows or ():
            label = window.text
            if not _WRITTEN_LABEL.fullmatch(label):
                continue
            first = written.setdefault(window.us, (label, rule.number))
            if first[0] != label:
                raise RulesError(
                    f"rules file {source}: rule {rule.number}: windows: {label!r} is the "
                    f"window rule {first[1]} writes {first[0]!r}; write a window one way in "
                    "every rule"
                )

    def spelled(rule: Rule) -> Rule:
        names = tuple(written.get(w, (duration_label(w), 0))[0] for w in rule.windows_us)
        if names == tuple(duration_label(w) for w in rule.windows_us):
            return rule
        return replace(rule, window_names=names)

    return [spelled(rule) for rule in rules], spelled(default)


def _outline(rule: Rule, sessions_taken: Collection[int] = ()) -> RuleOutline:
    """What an alert may name of `rule`'s topics: with a session topic's numbers where the
    rule is one a session topic takes (by number, `sessions_taken`)."""
    scalars = rule.scalars
    if rule.number in sessions_taken:
        scalars = (*scalars, *SESSION_SCALARS)
    exact = tuple(rule.window_label(w) for w in rule.exact_windows_us)
    return RuleOutline(rule.number, rule.selectors, rule.labels, scalars, rule.forecast, exact)


def _rule(number: int, table: RuleTable, default: Rule) -> Rule:
    """Rule `number` of the file, from its table (valid on its own) and the server's rule: a
    field the table leaves out is the server's. ValueError `field: problem` when its
    `anomaly` or `forecast` names a tier it does not keep."""
    windows = default.windows_us if table.windows is None and not table.last else ()
    if table.windows is not None:
        windows = tuple(sorted(w.us for w in table.windows))
    stats = default.stats if table.stats is None else ALL_STATS
    if isinstance(table.stats, list):
        stats = tuple(s for s in ALL_STATS if s in set(table.stats))
    series = table.tiers()
    tiers = series if series is not None else default.series or ()
    return Rule(
        number,
        tuple(table.topics),
        windows,
        tuple(sorted(table.last)),
        stats,
        tuple(table.group_by),
        DEFAULT_MAX_GROUPS if table.max_groups is None else table.max_groups,
        table.exact_up_to_us,
        series,
        tuple(table.distinct),
        tuple((entry.tag, entry.k) for entry in table.top),
        _model("anomaly", parse_anomaly, table.anomaly, tiers),
        forecast=_model("forecast", parse_forecast, table.forecast, tiers),
        grace_us=None if table.grace is None else table.grace.us,
        late=table.late,
    )


M = TypeVar("M")


def _model(
    field: str,
    parse: Callable[[Any, Sequence[SeriesTier]], M],
    given: Any,
    tiers: tuple[SeriesTier, ...],
) -> M | None:
    """A rule's `anomaly` or `forecast` table, over the series tiers the rule keeps."""
    if given is None:
        return None
    try:
        return parse(given, tiers)
    except ValueError as exc:
        raise ValueError(f"{field}: {exc}") from None


def _resolution(tier: SeriesTier) -> int:
    return tier.resolution_us
