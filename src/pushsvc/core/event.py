"""The event: what a producer sends, once accepted, and how updates echo it back (pure)."""

from __future__ import annotations

from dataclasses import dataclass

US_PER_S = 1_000_000


@dataclass(frozen=True, slots=True)
class Event:
    """One accepted event: a finite value, its time in integer microseconds, tags."""

    value: float
    ts_us: int
    tags: dict[str, str] | None = None


def event_json(event: Event) -> dict[str, object]:
    """The event as updates echo it: ts in epoch seconds, tags always an object."""
    return {
        "value": event.value,
        "ts": event.ts_us / US_PER_S,
        "tags": {} if event.tags is None else event.tags,
    }
