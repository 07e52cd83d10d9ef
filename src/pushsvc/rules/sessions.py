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
`pushsvc.aggregate.sessionize`'s; this module only says which rules are valid. A pattern in
`from` never takes a session topic (`shop.*` above does not feed `shop.visits` back into its
own sessions, nor into another rule's); naming one outright is an error.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pushsvc.core.durations import duration_label, parse_duration_us
from pushsvc.core.topics import TOPIC_PATTERN, TopicMatcher
from pushsvc.errors import InvalidTopic

__all__ = [
    "DEFAULT_MAX_OPEN",
    "MAX_OPEN_CAP",
    "MAX_STEPS",
    "SESSION_SCALARS",
    "SESSION_STATS",
    "FunnelSpec",
    "SessionRule",
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

_FIELDS = ("topic", "from", "key", "gap", "max_duration", "max_open", "keep_key", "funnel")
_FUNNEL_FIELDS = ("tag", "steps", "within")
_TOPIC = re.compile(TOPIC_PATTERN)
_MAX_STEP_LEN = 256
"""As long as a tag value may be (`pushsvc.ingest.event_shape.MAX_TAG_VALUE_LEN`)."""


class _SessionError(Exception):
    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")


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


def parse_sessions(tables: object, *, produced: Sequence[str] = ()) -> tuple[SessionRule, ...]:
    """The `[[session]]` tables of a rules file. `produced`: topics other rules produce
    (derived metrics), which cannot be session topics too. ValueError, one line naming the
    session table and the problem."""
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ValueError("write each session rule as a [[session]] table")
    rules: list[SessionRule] = []
    for number, table in enumerate(tables, start=1):
        try:
            rules.append(_session(number, table))
        except _SessionError as exc:
            raise ValueError(f"session {number}{_named(table)}: {exc}") from None
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


def _named(table: Mapping[str, Any]) -> str:
    topic = table.get("topic")
    return f" ({topic})" if isinstance(topic, str) and topic else ""


def _session(number: int, table: Mapping[str, Any]) -> SessionRule:
    for field in table:
        if field not in _FIELDS:
            raise _SessionError(field, f"unknown field; a session table has {', '.join(_FIELDS)}")
    for field in ("topic", "from", "key", "gap"):
        if field not in table:
            raise _SessionError(field, "missing")
    topic = table["topic"]
    if not isinstance(topic, str) or _TOPIC.fullmatch(topic) is None:
        raise _SessionError("topic", f"{topic!r} is not a topic name (one topic, not a pattern)")
    sources = _sources(table["from"])
    if topic in sources:
        raise _SessionError(
            "from", f"names the session topic {topic} itself; a session topic cannot be a source"
        )
    key = _tag("key", table["key"])
    gap = _duration("gap", table["gap"])
    max_duration = None
    if "max_duration" in table:
        max_duration = _duration("max_duration", table["max_duration"])
        if max_duration < gap:
            raise _SessionError(
                "max_duration",
                f"{table['max_duration']!r} is shorter than gap ({duration_label(gap)})",
            )
    max_open = table.get("max_open", DEFAULT_MAX_OPEN)
    if isinstance(max_open, bool) or not isinstance(max_open, int) or max_open < 1:
        raise _SessionError("max_open", f"{max_open!r} is not a positive whole number")
    if max_open > MAX_OPEN_CAP:
        raise _SessionError("max_open", f"{max_open} is over the cap of {MAX_OPEN_CAP}")
    keep_key = table.get("keep_key", False)
    if not isinstance(keep_key, bool):
        raise _SessionError("keep_key", f"true or false, got {keep_key!r}")
    funnel = _funnel(table["funnel"]) if "funnel" in table else None
    return SessionRule(number, topic, sources, key, gap, max_duration, max_open, keep_key, funnel)


def _sources(given: object) -> tuple[str, ...]:
    if not isinstance(given, list) or not given:
        raise _SessionError("from", "a non-empty list of topics or patterns (name, prefix.*, *)")
    if not all(isinstance(s, str) for s in given):
        raise _SessionError("from", "selectors are strings: a name, prefix.* or *")
    try:
        TopicMatcher(given)
    except InvalidTopic as exc:
        raise _SessionError("from", exc.message) from None
    return tuple(given)


def _tag(field: str, given: object) -> str:
    if not isinstance(given, str) or not 0 < len(given) <= 64:
        raise _SessionError(field, f"{given!r} is not a tag name (1 to 64 characters)")
    return given


def _duration(field: str, given: object) -> int:
    if not isinstance(given, str):
        raise _SessionError(
            field, f'not a duration: durations are strings like "30m", got {given!r}'
        )
    try:
        width = parse_duration_us(given)
    except ValueError as exc:
        raise _SessionError(field, f"not a duration: {exc}") from None
    if width <= 0:
        raise _SessionError(field, f"{given!r} must be longer than 0")
    return width


def _funnel(given: object) -> FunnelSpec:
    if not isinstance(given, dict):
        raise _SessionError("funnel", "a table {tag, steps, within}")
    for field in given:
        if field not in _FUNNEL_FIELDS:
            raise _SessionError(
                "funnel", f"unknown key {field!r}; a funnel has {', '.join(_FUNNEL_FIELDS)}"
            )
    for field in _FUNNEL_FIELDS:
        if field not in given:
            raise _SessionError("funnel", f"{field} is missing")
    tag = _tag("funnel.tag", given["tag"])
    steps = given["steps"]
    if not isinstance(steps, list) or not steps:
        raise _SessionError("funnel.steps", "a non-empty list of the tag's values, in order")
    for step in steps:
        if not isinstance(step, str) or not 0 < len(step) <= _MAX_STEP_LEN:
            raise _SessionError(
                "funnel.steps", f"{step!r} is not a tag value (1 to {_MAX_STEP_LEN} characters)"
            )
    if len(steps) > MAX_STEPS:
        raise _SessionError("funnel.steps", f"{len(steps)} steps; a funnel has at most {MAX_STEPS}")
    seen: set[str] = set()
    for step in steps:
        if step in seen:
            raise _SessionError(
                "funnel.steps", f"{step!r} is given twice; each step names a different value"
            )
        seen.add(step)
    within = _duration("funnel.within", given["within"])
    return FunnelSpec(tag, tuple(steps), within)
