"""The types a rules file's fields share: a duration, a tag, a topic name (pure).

msgspec checks a field of one of these types as it converts the TOML document
(`pushsvc.rules.file_shape`): a bound or a pattern on the type, and `dec_hook` for a duration,
which msgspec does not know, so the field holds the parsed value and how it was written.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from msgspec import Meta

from pushsvc.core.durations import parse_duration_us
from pushsvc.core.topics import TOPIC_PATTERN

__all__ = ["Duration", "Grace", "StatTag", "TagName", "TopicName", "dec_hook", "describe", "once"]


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


_STAT_TAG = "^[A-Za-z0-9_]{1,64}$"
StatTag = Annotated[str, Meta(pattern=_STAT_TAG)]
"""A tag that names a statistic (`distinct_<tag>`, `top_<tag>`): what alert conditions and
`?stats=` lists can spell."""
TagName = Annotated[str, Meta(min_length=1, max_length=64)]


TopicName = Annotated[str, Meta(pattern=f"^{TOPIC_PATTERN}$")]
"""One topic, not a pattern."""


def once(field: str, items: Sequence[object], why: str = "") -> None:
    """ValueError `field: item is given twice` on the first item given twice."""
    seen: set[object] = set()
    for item in items:
        if item in seen:
            raise ValueError(f"{field}: {item!r} is given twice{why}")
        seen.add(item)
