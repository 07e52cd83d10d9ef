"""The rules file's shape, defined once: `RulesFile` and the tables it holds, as msgspec
Structs that the TOML document is converted into (`decode_rules_file`).

Every check one field can make on its own is written on the field's type: a bound (`Meta(ge=,
le=)`), a length, a pattern, a choice (`Literal`), no field the table does not have
(`forbid_unknown_fields`); a duration or a series tier is read by `_dec_hook`, so a field of
either type holds its parsed value. What a table can only check across its fields (a value
given twice, `max_groups` without `group_by`, a window too short for a sketch) is its
`__post_init__`, one `field: problem` message. msgspec reports the first problem with its path
(`$.rule[2].top[0].k`); `pushsvc.rules.file_errors` turns it into the one line that names the
table and the field. What needs more than one table (the tiers a rule inherits from the
server, alerts against rules, derived metrics against their sources) is checked after, by
`pushsvc.rules.analytics` and the modules of each kind of rule.

The other kinds of table are defined beside the rules they make: `AlertTable`
(`pushsvc.rules.alerts`), `DeriveTable` (`.derive`), `SessionTable` (`.sessions`), and a
rule's `AnomalyTable` (`.anomaly`), read against the rule's tiers once they are known. A
rule's `forecast` is a raw table that `pushsvc.rules.forecast` reads.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

from pushsvc.core.durations import duration_label
from pushsvc.core.topics import TopicMatcher
from pushsvc.errors import InvalidTopic
from pushsvc.rules.alerts import AlertTable
from pushsvc.rules.anomaly import AnomalyTable
from pushsvc.rules.derive import DeriveTable
from pushsvc.rules.fields import (
    Duration,
    Grace,
    Selector,
    StatTag,
    TagName,
    capped,
    dec_hook,
    once,
    wrong,
)
from pushsvc.rules.names import ALL_STATS, MAX_COUNT_WINDOW, SUB_BUCKETS
from pushsvc.rules.sessions import SessionTable
from pushsvc.rules.tiers import SeriesTier, check_tiers, parse_tier

__all__ = [
    "DEFAULT_EXACT_UP_TO_US",
    "DEFAULT_MAX_GROUPS",
    "MAX_GROUPS_CAP",
    "MAX_TOP_K",
    "RuleTable",
    "RulesFile",
    "TopEntry",
    "decode_rules_file",
]

#: `exact_percentiles_up_to` when a rule does not say: wider windows use a sketch.
DEFAULT_EXACT_UP_TO_US = 5 * 60_000_000
#: `max_groups` when a rule does not say.
DEFAULT_MAX_GROUPS = 100
#: The most live groups a rule may ask for per topic: every group costs every window's
#: memory and one entry in each tick and snapshot, so a typo (`max_groups = 1000000`) must
#: not turn into an out-of-memory aggregator.
MAX_GROUPS_CAP = 10_000
#: The largest k of a `top` entry.
MAX_TOP_K = 100


StatName = Annotated[
    str,
    Meta(pattern=f"^({'|'.join(map(re.escape, ALL_STATS))})$"),
    wrong(f"unknown statistic {{value!r}}; known: {', '.join(ALL_STATS)}"),
]
Stats = Annotated[
    Literal["all"] | Annotated[list[StatName], Meta(min_length=1)] | None,
    wrong(f'write "all" or a list of statistics; known: {", ".join(ALL_STATS)}'),
]
Events = Annotated[int, capped(MAX_COUNT_WINDOW, "a positive number of events", " events")]
"""A count window's size."""
Tier = Annotated[str, wrong('{value!r} is not resolution:retention, e.g. "1m:24h"')]
TopK = Annotated[
    int,
    Meta(ge=1, le=MAX_TOP_K),
    wrong(f"k for {{parent[tag]!r}} is {{value!r}}; k is a whole number from 1 to {MAX_TOP_K}"),
]
Anomaly = Annotated[
    AnomalyTable,
    wrong('write it as {{ every = "1m", stat = "mean", learn = "6h" }}, got {described}'),
]
"""Read by `pushsvc.rules.anomaly.parse_anomaly` against the rule's tiers."""
Forecast = Annotated[
    dict[str, Any],
    wrong(
        'write it as {{ tier = "1m", model = "holt_winters", season = "1d", horizon = "6h" }}, '
        "got {described}"
    ),
]
"""Read by `pushsvc.rules.forecast` against the rule's tiers."""
Late = Annotated[
    Literal["keep", "refuse"],
    wrong('{described} is neither "keep" (the late stream) nor "refuse" (a 400)'),
]
"""What a rule's `late` may say of an event older than its topic's clock less the grace:
kept on the topic's late stream (the default), or refused with `400 late_event`."""


class TopEntry(Struct, forbid_unknown_fields=True):
    """`{ tag = "product", k = 10 }`: every window lists the tag's k most frequent values."""

    tag: StatTag
    k: TopK


Top = Annotated[TopEntry, wrong('write each entry as {{ tag = "...", k = 10 }}, got {described}')]


class RuleTable(Struct, forbid_unknown_fields=True, kw_only=True):
    """A `[[rule]]` table as written: what a field leaves out is the server's."""

    topics: Annotated[list[Selector], Meta(min_length=1)]
    windows: list[Duration] | None = None
    last: list[Events] = []
    stats: Stats = None
    group_by: list[TagName] = []
    max_groups: Annotated[int, capped(MAX_GROUPS_CAP)] | None = None
    exact_percentiles_up_to: Duration | None = None
    series: list[Tier] | None = None
    distinct: list[StatTag] = []
    top: list[Top] = []
    anomaly: Anomaly | None = None
    forecast: Forecast | None = None
    grace: Grace | None = None
    late: Late = "keep"

    def __post_init__(self) -> None:
        try:
            TopicMatcher(self.topics)
        except InvalidTopic as exc:
            raise ValueError(f"topics: {exc.message}") from None
        if self.windows == [] and not self.last:
            raise ValueError("windows: a rule needs at least one window (windows or last)")
        if self.max_groups is not None and not self.group_by:
            raise ValueError("max_groups: only means something with group_by")
        exact_up_to = self.exact_up_to_us
        for width in self.windows or ():
            if width.us > exact_up_to and width.us // SUB_BUCKETS < 1_000:
                raise ValueError(f"windows: {duration_label(width.us)} is too short for a sketch")
        once("windows", [duration_label(w.us) for w in self.windows or ()])
        once("last", self.last)
        once("stats", self.stats if isinstance(self.stats, list) else [])
        once("group_by", self.group_by)
        once("distinct", self.distinct)
        once("top", [entry.tag for entry in self.top])
        self.tiers()

    def tiers(self) -> tuple[SeriesTier, ...] | None:
        """The rule's own series tiers, finest first; None: the server's."""
        if self.series is None:
            return None
        try:
            return check_tiers([parse_tier(item) for item in self.series])
        except ValueError as exc:
            raise ValueError(f"series: {exc}") from None

    @property
    def exact_up_to_us(self) -> int:
        given = self.exact_percentiles_up_to
        return DEFAULT_EXACT_UP_TO_US if given is None else given.us


class RulesFile(Struct, forbid_unknown_fields=True):
    """A rules file: its `[[rule]]` tables, and the other kinds', read by their parsers."""

    rule: list[RuleTable] = []
    alert: list[AlertTable] = []
    derive: list[DeriveTable] = []
    session: list[SessionTable] = []


def decode_rules_file(document: dict[str, Any]) -> RulesFile:
    """The rules file a parsed TOML document holds; msgspec.ValidationError on the first
    problem (`pushsvc.rules.file_errors` says it in one line)."""
    return msgspec.convert(document, RulesFile, dec_hook=dec_hook)
