"""Analytics rules: which windows, statistics and groups each family of topics keeps.

A rules file (TOML, `--rules` / `PUSHSVC_RULES`) holds `[[rule]]` tables, and the
`[[alert]]` (`pushsvc.rules.alerts`) and `[[derive]]` (`pushsvc.rules.derive`) tables read
with them. A topic takes the FIRST rule whose `topics` selectors match it; a topic no rule
matches takes the server's `--windows` and every statistic but `rate` (the *default rule*).
Every process of a deployment reads the same file; `Rules.digest` names what they read, so a
process can tell that another one computes different statistics (`/readyz`).

Validation happens here, once, at start: a bad file is one `RulesError` line naming the
file, the rule and the field. Everything downstream takes a `Rule` as valid.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any, TypeVar

import orjson

from pushsvc.core.durations import duration_label, parse_duration_us
from pushsvc.core.lists import comma_list
from pushsvc.core.topics import TopicMatcher, overlap
from pushsvc.errors import InvalidTopic, RulesError
from pushsvc.rules.alerts import AlertRule, RuleOutline, covers, parse_alerts
from pushsvc.rules.anomaly import AnomalyRule, parse_anomaly
from pushsvc.rules.derive import DeriveRule, parse_derives
from pushsvc.rules.forecast import ForecastRule, parse_forecast
from pushsvc.rules.names import ALL_STATS, MAX_COUNT_WINDOW, SUB_BUCKETS
from pushsvc.rules.sessions import SESSION_SCALARS, SESSION_STATS, SessionRule, parse_sessions
from pushsvc.rules.tiers import SeriesTier, check_tiers, parse_tier

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

#: `exact_percentiles_up_to` when a rule does not say: wider windows use a sketch.
DEFAULT_EXACT_UP_TO_US = 5 * 60_000_000
#: `max_groups` when a rule does not say.
DEFAULT_MAX_GROUPS = 100
#: The most live groups a rule may ask for per topic: every group costs every window's
#: memory and one entry in each tick and snapshot, so a typo (`max_groups = 1000000`) must
#: not turn into an out-of-memory aggregator.
MAX_GROUPS_CAP = 10_000

_RULE_FIELDS = (
    "topics", "windows", "last", "stats", "group_by", "max_groups",
    "exact_percentiles_up_to", "series", "distinct", "top", "anomaly", "forecast", "grace",
    "late",
)  # fmt: skip
#: What a rule's `late` may say of an event older than its topic's clock less the grace:
#: kept on the topic's late stream (the default), or refused with `400 late_event`.
LATE_HANDLING = ("keep", "refuse")
_TOP_FIELDS = ("tag", "k")
#: A tag that names a statistic (`distinct_<tag>`, `top_<tag>`): what alert conditions and
#: `?stats=` lists can spell.
_STAT_TAG = re.compile(r"[A-Za-z0-9_]{1,64}")
#: The largest k of a `top` entry.
MAX_TOP_K = 100
#: Exact top values while a window holds at most this many different values (and 20 k).
EXACT_TOP_UP_TO = 1000
_FILE_FIELDS = ("rule", "alert", "derive", "session")


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
        described = {
            "digest": self.digest,
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
        described: dict[str, Any] = {
            "rules": [r.describe() for r in self.rules],
            "default": self.default.describe(),
        }
        if self.alerts:
            described["alerts"] = [alert.describe() for alert in self.alerts]
        if self.derives:
            described["derive"] = [rule.describe() for rule in self.derives]
        if self.sessions:
            described["session"] = [rule.describe() for rule in self.sessions]
        canonical = orjson.dumps(described, option=orjson.OPT_SORT_KEYS)
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


def parse_rules(document: Mapping[str, Any], default: Rule, *, source: str = "rules") -> Rules:
    """The rules of a parsed TOML document; RulesError names the rule and the field."""
    unknown = [key for key in document if key not in _FILE_FIELDS]
    if unknown:
        raise RulesError(
            f"rules file {source}: unknown table {unknown[0]!r}; a rules file holds [[rule]], "
            "[[alert]], [[derive]] and [[session]] tables"
        )
    tables = document.get("rule", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise RulesError(f"rules file {source}: write each rule as a [[rule]] table")
    rules = [
        _numbered_rule(number, table, default, source) for number, table in enumerate(tables, 1)
    ]
    rules, default = _spell_windows(tables, rules, default, source)
    chosen = Rules(rules, default)
    try:
        derives: tuple[DeriveRule, ...] = ()
        if "derive" in document:
            derives = parse_derives(
                document["derive"], lambda topic: chosen.series_of(chosen.for_topic(topic))
            )
        sessions: tuple[SessionRule, ...] = ()
        if "session" in document:
            sessions = parse_sessions(
                document["session"], produced=[rule.topic for rule in derives]
            )
        alerts: tuple[AlertRule, ...] = ()
        if "alert" in document:
            alerts = _alerts(document["alert"], chosen, sessions)
    except ValueError as exc:  # AlertsError too
        raise RulesError(f"rules file {source}: {exc}") from None
    return Rules(rules, default, source=source, alerts=alerts, derives=derives, sessions=sessions)


def _numbered_rule(number: int, table: Mapping[str, Any], default: Rule, source: str) -> Rule:
    """Rule `number` of the file, or RulesError naming it, its topics and the field."""
    try:
        return _rule(number, table, default)
    except _FieldError as exc:
        selectors = table.get("topics")
        named = (
            f" ({', '.join(map(str, selectors))})"
            if isinstance(selectors, list) and selectors
            else ""
        )
        raise RulesError(
            f"rules file {source}: rule {number}{named}: {exc.field}: {exc.problem}"
        ) from None


def _alerts(
    given: object, chosen: Rules, sessions: tuple[SessionRule, ...]
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
    tables: Sequence[Mapping[str, Any]], rules: list[Rule], default: Rule, source: str
) -> tuple[list[Rule], Rule]:
    """The rules and the default rule with their time windows labelled as the file writes
    them. One label per duration in a deployment: a stream's `?windows=24h` then selects the
    one window that lasts a day whatever its rule (`Rules.window_named`), and an alert's
    `count[24h]` names it too. A duration written two ways (`1d` in one rule, `24h` in
    another) is refused: which of the two a topic's updates carry would depend on its rule."""
    written: dict[int, tuple[str, int]] = {}  # width -> (label, rule number)
    for rule, table in zip(rules, tables, strict=True):
        for text in table.get("windows", ()):
            label = text.strip()
            if not _WRITTEN_LABEL.fullmatch(label):
                continue
            width = parse_duration_us(label)
            first = written.setdefault(width, (label, rule.number))
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


class _FieldError(Exception):
    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


def _rule(number: int, table: Mapping[str, Any], default: Rule) -> Rule:
    for key in table:
        if key not in _RULE_FIELDS:
            raise _FieldError(key, f"unknown field; a rule has {', '.join(_RULE_FIELDS)}")
    selectors = _selectors(table.get("topics"))
    windows, last = _windows_and_last(table, default)
    stats = _stats(table["stats"]) if "stats" in table else default.stats
    group_by = _tags(table.get("group_by", []))
    max_groups = _max_groups(table, group_by)
    exact_up_to = _exact_up_to(table, windows)
    series = _series(table["series"]) if "series" in table else None
    tiers = series if series is not None else default.series or ()
    return Rule(
        number,
        selectors,
        windows,
        last,
        stats,
        group_by,
        max_groups,
        exact_up_to,
        series,
        _stat_tags(table.get("distinct", [])),
        _tops(table.get("top", [])),
        _model(table, "anomaly", parse_anomaly, tiers),
        forecast=_model(table, "forecast", parse_forecast, tiers),
        grace_us=_grace(table["grace"]) if "grace" in table else None,
        late=_late(table.get("late", "keep")),
    )


def _windows_and_last(
    table: Mapping[str, Any], default: Rule
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """A rule's time windows and count windows: the default rule's time windows when it
    names neither; at least one of either."""
    last = _sizes(table.get("last", []))
    windows = _durations("windows", table["windows"]) if "windows" in table else ()
    if "windows" not in table and not last:
        windows = default.windows_us
    if not windows and not last:
        raise _FieldError("windows", "a rule needs at least one window (windows or last)")
    return windows, last


def _max_groups(table: Mapping[str, Any], group_by: tuple[str, ...]) -> int:
    max_groups = table.get("max_groups", DEFAULT_MAX_GROUPS)
    if not isinstance(max_groups, int) or isinstance(max_groups, bool) or max_groups < 1:
        raise _FieldError("max_groups", f"{max_groups!r} is not a positive whole number")
    if max_groups > MAX_GROUPS_CAP:
        raise _FieldError("max_groups", f"{max_groups} is over the cap of {MAX_GROUPS_CAP}")
    if "max_groups" in table and not group_by:
        raise _FieldError("max_groups", "only means something with group_by")
    return max_groups


def _exact_up_to(table: Mapping[str, Any], windows: tuple[int, ...]) -> int:
    """Up to which width the windows keep exact percentiles; a sketched window must be long
    enough for its sub-buckets."""
    exact_up_to = DEFAULT_EXACT_UP_TO_US
    if "exact_percentiles_up_to" in table:
        exact_up_to = _duration("exact_percentiles_up_to", table["exact_percentiles_up_to"])
    for width in windows:
        if width > exact_up_to and width // SUB_BUCKETS < 1_000:
            raise _FieldError("windows", f"{duration_label(width)} is too short for a sketch")
    return exact_up_to


M = TypeVar("M")


def _model(
    table: Mapping[str, Any],
    field: str,
    parse: Callable[[Any, Sequence[SeriesTier]], M],
    tiers: tuple[SeriesTier, ...],
) -> M | None:
    """A rule's `anomaly` or `forecast` table, over the series tiers the rule keeps."""
    if field not in table:
        return None
    try:
        return parse(table[field], tiers)
    except ValueError as exc:
        raise _FieldError(field, str(exc)) from None


def _late(late: object) -> str:
    if late not in LATE_HANDLING:
        raise _FieldError(
            "late", f'{_describe(late)} is neither "keep" (the late stream) nor "refuse" (a 400)'
        )
    return str(late)


def _grace(given: object) -> int:
    """A rule's grace: a duration, 0 allowed (only events at or after the clock in place)."""
    if isinstance(given, str) and given.strip() in ("0", "0s"):
        return 0
    return _duration("grace", given)


def _list(field: str, given: object) -> list[Any]:
    if not isinstance(given, list):
        raise _FieldError(field, f"expected a list, got {_describe(given)}")
    return given


def _selectors(given: object) -> tuple[str, ...]:
    if given is None:
        raise _FieldError("topics", "missing; name the topics the rule is for")
    selectors = _list("topics", given)
    if not selectors:
        raise _FieldError("topics", "empty; name at least one topic or pattern")
    if not all(isinstance(s, str) for s in selectors):
        raise _FieldError("topics", "selectors are strings: a name, prefix.* or *")
    try:
        TopicMatcher(selectors)
    except InvalidTopic as exc:
        raise _FieldError("topics", exc.message) from None
    return tuple(selectors)


def _duration(field: str, given: object) -> int:
    if not isinstance(given, str):
        raise _FieldError(field, f'durations are strings like "10s", got {_describe(given)}')
    try:
        width = parse_duration_us(given)
    except ValueError as exc:
        raise _FieldError(field, str(exc)) from None
    if width <= 0:
        raise _FieldError(field, f"{given!r} must be longer than 0")
    return width


def _durations(field: str, given: object) -> tuple[int, ...]:
    widths = [_duration(field, item) for item in _list(field, given)]
    _distinct(field, [duration_label(w) for w in widths])
    return tuple(sorted(widths))


def _sizes(given: object) -> tuple[int, ...]:
    sizes = _list("last", given)
    for size in sizes:
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise _FieldError("last", f"{size!r} is not a positive number of events")
        if size > MAX_COUNT_WINDOW:
            raise _FieldError("last", f"{size} is over the cap of {MAX_COUNT_WINDOW} events")
    _distinct("last", sizes)
    return tuple(sorted(sizes))


def _stats(given: object) -> tuple[str, ...]:
    if given == "all":
        return ALL_STATS
    names = _list("stats", given)
    if not names:
        raise _FieldError("stats", 'empty; name at least one statistic, or "all"')
    for name in names:
        if name not in ALL_STATS:
            raise _FieldError("stats", f"unknown statistic {name!r}; known: {', '.join(ALL_STATS)}")
    _distinct("stats", names)
    return tuple(s for s in ALL_STATS if s in set(names))


def _tags(given: object) -> tuple[str, ...]:
    tags = _list("group_by", given)
    for tag in tags:
        if not isinstance(tag, str) or not 0 < len(tag) <= 64:
            raise _FieldError("group_by", f"{tag!r} is not a tag name (1 to 64 characters)")
    _distinct("group_by", tags)
    return tuple(tags)


def _stat_tag(field: str, tag: object) -> str:
    if not isinstance(tag, str) or not _STAT_TAG.fullmatch(tag):
        raise _FieldError(
            field,
            f"{tag!r} is not a tag this statistic can be named after (1 to 64 letters, "
            "digits or _)",
        )
    return tag


def _stat_tags(given: object) -> tuple[str, ...]:
    tags = [_stat_tag("distinct", tag) for tag in _list("distinct", given)]
    _distinct("distinct", tags)
    return tuple(tags)


def _tops(given: object) -> tuple[tuple[str, int], ...]:
    tops = []
    for entry in _list("top", given):
        if not isinstance(entry, dict):
            raise _FieldError(
                "top", f'write each entry as {{ tag = "...", k = 10 }}, got {_describe(entry)}'
            )
        for key in entry:
            if key not in _TOP_FIELDS:
                raise _FieldError("top", f"unknown key {key!r} in an entry; an entry has tag and k")
        if "tag" not in entry or "k" not in entry:
            raise _FieldError("top", "each entry needs a tag and a k")
        tag = _stat_tag("top", entry["tag"])
        k = entry["k"]
        if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= MAX_TOP_K:
            raise _FieldError(
                "top", f"k for {tag!r} is {k!r}; k is a whole number from 1 to {MAX_TOP_K}"
            )
        tops.append((tag, k))
    _distinct("top", [tag for tag, _ in tops])
    return tuple(tops)


def _series(given: object) -> tuple[SeriesTier, ...]:
    tiers = []
    for item in _list("series", given):
        text = item if isinstance(item, str) else ""
        try:
            tiers.append(parse_tier(text))
        except ValueError as exc:
            raise _FieldError("series", str(exc)) from None
    try:
        return check_tiers(tiers)
    except ValueError as exc:
        raise _FieldError("series", str(exc)) from None


def _distinct(field: str, items: Sequence[object]) -> None:
    seen: set[object] = set()
    for item in items:
        if item in seen:
            raise _FieldError(field, f"{item!r} is given twice")
        seen.add(item)


def _resolution(tier: SeriesTier) -> int:
    return tier.resolution_us


def _describe(value: object) -> str:
    return f"{type(value).__name__} {value!r}"[:80]
