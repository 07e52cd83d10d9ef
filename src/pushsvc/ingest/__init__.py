"""The producer side, pure: `model.py` (the event and its echo), `parse.py` (request bodies),
`timestamps.py` (epoch seconds and RFC 3339 to µs), `limits.py`, `lateness.py` (the rule)."""

from __future__ import annotations

from pushsvc.core.event import US_PER_S, Event, event_json
from pushsvc.ingest.input_limits import DEFAULT_LIMITS, Limits
from pushsvc.ingest.lateness import check_lateness, is_late
from pushsvc.ingest.parse import JSON, NDJSON, parse_body
from pushsvc.ingest.timestamps import MAX_TS_US, MIN_TS_US, parse_rfc3339, seconds_to_us

__all__ = [
    "DEFAULT_LIMITS",
    "JSON",
    "MAX_TS_US",
    "MIN_TS_US",
    "NDJSON",
    "US_PER_S",
    "Event",
    "Limits",
    "check_lateness",
    "event_json",
    "is_late",
    "parse_body",
    "parse_rfc3339",
    "seconds_to_us",
]
