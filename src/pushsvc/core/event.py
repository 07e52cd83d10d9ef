"""The event: what a producer sends, once accepted, and how updates echo it back (pure).

An event is a measurement (`value`), an application message (`message`: an SSE event name and
its JSON data, pushed to browsers as published), or both. The message's data is kept as the
compact JSON text it was validated into at ingest, never parsed again on its way: the log, the
update and every stream carry those bytes as they are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

import orjson

US_PER_S = 1_000_000

DEFAULT_MESSAGE_TYPE = "message"
"""A message's type when the producer gives data and no type: what `EventSource.onmessage`
receives."""

MESSAGE_TYPE = re.compile(r"[A-Za-z0-9._:-]{1,64}")
"""A message's type: its SSE event name (no CR, LF or NUL can reach the `event:` line)."""

RESERVED_TYPES = frozenset(("gap",))
"""Types a message may not have: a messages stream's own events (`event: gap`)."""


PAST_GRACE = 1
"""`Event.mark` of a message past its topic's grace, logged on its topic all the same: pushed
on the topic's messages streams, in none of its statistics (which took it on the late stream,
`pushsvc.core.lateness`)."""
PUSHED_ON_TOPIC = 2
"""`Event.mark` of a late stream's copy of a message that its topic pushed (`PAST_GRACE`):
in the late stream's statistics, not pushed again on a messages stream."""


class Message(NamedTuple):
    """An application message: its SSE event name (`type`) and its data, compact JSON."""

    type: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Event:
    """One accepted event: a finite value (None for a message without one), its time in
    integer microseconds, tags, and its message if it carries one. `mark` (0 for none) is
    what the append said of a message past its topic's grace, in the log: `PAST_GRACE` or
    `PUSHED_ON_TOPIC`."""

    value: float | None
    ts_us: int
    tags: dict[str, str] | None = None
    message: Message | None = None
    mark: int = 0


def value_of(event: Event) -> float:
    """The value of an event that has one: the statistics of values are only ever given those
    (a message without a value moves the clock and is counted, nothing more)."""
    value = event.value
    if value is None:
        raise ValueError("a message without a value is in no statistic of values")
    return value


def event_json(event: Event) -> dict[str, object]:
    """The event as updates echo it: ts in epoch seconds, tags always an object; a message's
    `type` and `data` (spliced as they are), and `value` only where the event has one."""
    message = event.message
    if message is None:
        return {
            "value": event.value,
            "ts": event.ts_us / US_PER_S,
            "tags": {} if event.tags is None else event.tags,
        }
    echo: dict[str, object] = {}
    if event.value is not None:
        echo["value"] = event.value
    echo["ts"] = event.ts_us / US_PER_S
    echo["tags"] = {} if event.tags is None else event.tags
    echo["type"] = message.type
    echo["data"] = orjson.Fragment(message.data)
    return echo
