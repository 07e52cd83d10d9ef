"""The types a rules file's fields share: a duration, a tag, a topic name (pure).

msgspec checks a field of one of these types as it converts the TOML document
(`pushsvc.rules.file_shape`): a bound or a pattern on the type, and `dec_hook` for a duration,
which msgspec does not know, so the field holds the parsed value and how it was written. A
type says in its own words what is wrong with a value it refuses (`wrong`), which
`pushsvc.rules.file_errors` gives the reader.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from msgspec import Meta

from pushsvc.core.durations import parse_duration_us
from pushsvc.core.topics import TOPIC_PATTERN

__all__ = [
    "Duration",
    "Grace",
    "Selector",
    "StatTag",
    "TagName",
    "TopicName",
    "capped",
    "dec_hook",
    "describe",
    "once",
    "wrong",
]


class Duration:
    """A duration longer than 0, as written (`text`, stripped) and in microseconds. Not a
    dataclass: msgspec would read one from a table, and a duration is a string."""

    __slots__ = ("text", "us")

    def __init__(self, text: str, us: int) -> None:
        self.text = text
        self.us = us


class Grace(Duration):
    """A duration that may be 0 (`"0"`, `"0s"`: only events at or after the clock)."""

    __slots__ = ()


def dec_hook(kind: type, given: Any) -> Any:
    """Reads the field type msgspec does not know: a duration."""
    if kind in (Duration, Grace):
        if not isinstance(given, str):
            raise TypeError(f'durations are strings like "10s", got {describe(given)}')
        width = parse_duration_us(given)
        if width <= 0 and not (kind is Grace and width == 0):
            raise ValueError(f"{given!r} must be longer than 0")
        return kind(given.strip(), width)
    raise NotImplementedError


def describe(value: object) -> str:
    """A value as an error names it: its type and repr, cut to 80 characters."""
    return f"{type(value).__name__} {value!r}"[:80]


def wrong(words: str, over: str | None = None) -> Meta:
    """What is wrong with a value a field refuses: `words`, or `over` for a number over its
    cap, formatted with `value`, `described` (its type and value) and `parent` (the table
    holding it)."""
    return Meta(extra={"wrong": words} if over is None else {"wrong": words, "over": over})


def capped(cap: int, what: str = "a positive whole number", unit: str = "") -> Meta:
    """A whole number from 1 to `cap`, and what is wrong with another."""
    return Meta(
        ge=1,
        le=cap,
        extra={
            "wrong": f"{{value!r}} is not {what}",
            "over": f"{{value}} is over the cap of {cap}{unit}",
        },
    )


StatTag = Annotated[
    str,
    Meta(pattern="^[A-Za-z0-9_]{1,64}$"),
    wrong(
        "{value!r} is not a tag this statistic can be named after (1 to 64 letters, digits or _)"
    ),
]
"""A tag that names a statistic (`distinct_<tag>`, `top_<tag>`): what alert conditions and
`?stats=` lists can spell."""
TagName = Annotated[
    str,
    Meta(min_length=1, max_length=64),
    wrong("{value!r} is not a tag name (1 to 64 characters)"),
]
TopicName = Annotated[
    str,
    Meta(pattern=f"^{TOPIC_PATTERN}$"),
    wrong("{value!r} is not a topic name (one topic, not a pattern)"),
]
Selector = Annotated[str, wrong("selectors are strings: a name, prefix.* or *")]
"""A topic name, `prefix.*` or `*` (checked whole by `TopicMatcher`)."""


def once(field: str, items: Sequence[object], why: str = "") -> None:
    """ValueError `field: item is given twice` on the first item given twice."""
    seen: set[object] = set()
    for item in items:
        if item in seen:
            raise ValueError(f"{field}: {item!r} is given twice{why}")
        seen.add(item)
