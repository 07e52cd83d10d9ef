"""Sessions and funnels: `[[session]]` rules, parsed and checked once at start (pure).

```toml
[[session]]
topic = "shop.visits"            # the session topic: one event per session that ended
from = ["shop.*"]                # the topics whose events make sessions
key = "user"                     # the tag saying whose session an event belongs to
gap = "30m"                      # a session ends after this long without an event of its key
max_duration = "12h"             # optional: a longer session is cut
max_open = 1000000               # optional: open sessions at most (the longest idle ends early)
keep_key = false                 # optional: the key as a tag of the session's event
funnel = { tag = "step", steps = ["view", "cart", "checkout", "paid"], within = "1h" }
```

What a session is, when it ends and what its event holds is `pushsvc.stats.sessions` and
`pushsvc.aggregate.sessionize`'s; this module only says which rules are valid: a table's shape
and its own fields' checks are `SessionTable` (converted with the rest of the file,
`pushsvc.rules.file_shape`), the checks across tables `parse_sessions`. A pattern in
`from` never takes a session topic (`shop.*` above does not feed `shop.visits` back into its
own sessions, nor into another rule's); naming one outright is an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from msgspec import Meta, Struct

from pushsvc.core.durations import duration_label
from pushsvc.core.topics import TopicMatcher
from pushsvc.errors import InvalidTopic
from pushsvc.rules.fields import Duration, Selector, TagName, TopicName, capped, once, wrong

__all__ = [
    "DEFAULT_MAX_OPEN",
    "MAX_OPEN_CAP",
    "MAX_STEPS",
    "SESSION_SCALARS",
    "SESSION_STATS",
    "FunnelSpec",
    "FunnelTable",
    "SessionRule",
    "SessionTable",
    "parse_sessions",
]

SESSION_STATS = ("bounce_rate", "events_per_session", "active", "funnel")
"""The statistics a session topic has of its own in every time window, exact or long
(`pushsvc.stats.session_stats`): what `?stats=` may name when a rule declares sessions."""
SESSION_SCALARS = ("bounce_rate", "events_per_session", "active")
"""Those that are numbers: what an alert condition may name."""
DEFAULT_MAX_OPEN = 1_000_000
MAX_OPEN_CAP = 100_000_000
"""A larger `max_open` is refused: at ~250 bytes an open session, 25 GB of memory."""
MAX_STEPS = 64
"""Funnel steps at most (`pushsvc.stats.sessions` packs a step index beside its time)."""

_MAX_STEP_LEN = 256
"""As long as a tag value may be (`pushsvc.ingest.event_shape.MAX_TAG_VALUE_LEN`)."""
Step = Annotated[
    str,
    Meta(min_length=1, max_length=_MAX_STEP_LEN),
    wrong(f"{{value!r}} is not a tag value (1 to {_MAX_STEP_LEN} characters)"),
]


@dataclass(frozen=True, slots=True)
class FunnelSpec:
    """`funnel = {tag, steps, within}`: the tag naming an event's step, the steps in order."""

    tag: str
    steps: tuple[str, ...]
    within_us: int

    def index(self, step: str | None) -> int | None:
        """The index of an event's step (its tag's value), None for any other value."""
        if step is None:
            return None
        try:
            return self.steps.index(step)
        except ValueError:
            return None

    def describe(self) -> dict[str, Any]:
        return {
            "tag": self.tag,
            "steps": list(self.steps),
            "within": duration_label(self.within_us),
        }


@dataclass(frozen=True, slots=True)
class SessionRule:
    """One `[[session]]` table, checked."""

    number: int
    topic: str
    sources: tuple[str, ...]
    key: str
    gap_us: int
    max_duration_us: int | None = None
    max_open: int = DEFAULT_MAX_OPEN
    keep_key: bool = False
    funnel: FunnelSpec | None = None

    def describe(self) -> dict[str, Any]:
        """`GET /rules`: the rule as given, durations as labels."""
        described: dict[str, Any] = {
            "session": self.number,
            "topic": self.topic,
            "from": list(self.sources),
            "key": self.key,
            "gap": duration_label(self.gap_us),
            "max_open": self.max_open,
            "keep_key": self.keep_key,
        }
        if self.max_duration_us is not None:
            described["max_duration"] = duration_label(self.max_duration_us)
        if self.funnel is not None:
            described["funnel"] = self.funnel.describe()
        return described


class FunnelTable(Struct, forbid_unknown_fields=True):
    """`funnel = { tag, steps, within }` as written."""

    tag: TagName
    steps: Annotated[
        list[Step], Meta(min_length=1), wrong("a non-empty list of the tag's values, in order")
    ]
    within: Duration

    def __post_init__(self) -> None:
        if len(self.steps) > MAX_STEPS:
            raise ValueError(f"steps: {len(self.steps)} steps; a funnel has at most {MAX_STEPS}")
        once("steps", self.steps, "; each step names a different value")


Funnel = Annotated[
    FunnelTable,
    wrong(
        'write it as {{ tag = "step", steps = ["view", "paid"], within = "1h" }}, got {described}'
    ),
]


class SessionTable(Struct, forbid_unknown_fields=True, kw_only=True, rename={"sources": "from"}):
    """A `[[session]]` table as written."""

    topic: TopicName
    sources: Annotated[
        list[Selector],
        Meta(min_length=1),
        wrong("a non-empty list of topics or patterns (name, prefix.*, *)"),
    ]
    key: TagName
    gap: Duration
    max_duration: Duration | None = None
    max_open: Annotated[int, capped(MAX_OPEN_CAP)] = DEFAULT_MAX_OPEN
    keep_key: Annotated[bool, wrong("true or false, got {value!r}")] = False
    funnel: Funnel | None = None

    def __post_init__(self) -> None:
        try:
            TopicMatcher(self.sources)
        except InvalidTopic as exc:
            raise ValueError(f"from: {exc.message}") from None
        if self.topic in self.sources:
            raise ValueError(
                f"from: names the session topic {self.topic} itself; a session topic cannot be "
                "a source"
            )
        if self.max_duration is not None and self.max_duration.us < self.gap.us:
            raise ValueError(
                f"max_duration: {self.max_duration.text!r} is shorter than gap "
                f"({duration_label(self.gap.us)})"
            )


def parse_sessions(
    tables: Sequence[SessionTable], *, produced: Sequence[str] = ()
) -> tuple[SessionRule, ...]:
    """The `[[session]]` tables of a rules file, each valid on its own. `produced`: topics
    other rules produce (derived metrics), which cannot be session topics too. ValueError, one
    line naming the session table and the problem."""
    rules = [_session(number, table) for number, table in enumerate(tables, start=1)]
    taken = {topic: "a [[derive]] rule" for topic in produced}
    for rule in rules:
        if rule.topic in taken:
            raise ValueError(
                f"session {rule.number} ({rule.topic}): topic: produced already by "
                f"{taken[rule.topic]}"
            )
        taken[rule.topic] = f"session {rule.number}"
    # A session topic feeding sessions (another rule's, or in a cycle its own rule's through
    # the other) would make sessions of sessions that end one another without end.
    for rule in rules:
        for source in rule.sources:
            other = taken.get(source, "")
            if other.startswith("session "):
                raise ValueError(
                    f"session {rule.number} ({rule.topic}): from: names the session topic "
                    f"{source} of {other}; a session topic cannot be a source"
                )
    return tuple(rules)


def _session(number: int, table: SessionTable) -> SessionRule:
    funnel = table.funnel
    return SessionRule(
        number,
        table.topic,
        tuple(table.sources),
        table.key,
        table.gap.us,
        None if table.max_duration is None else table.max_duration.us,
        table.max_open,
        table.keep_key,
        None if funnel is None else FunnelSpec(funnel.tag, tuple(funnel.steps), funnel.within.us),
    )
