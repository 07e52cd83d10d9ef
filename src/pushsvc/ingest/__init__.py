"""Events in: `parse` (request bodies, JSON or NDJSON), `timestamps` (epoch seconds and RFC 3339
to µs), `input_limits` (body, batch, tag and how-far-ahead limits), and the one path in,
`accept` (for a POST and for the Redis bridge, `redis_bridge`). What the broker and the
aggregator share with it lives in `pushsvc.core`: the event itself and its echo
(`core.event`), the lateness rule (`core.lateness`) and the Idempotency-Key
(`core.idempotency`)."""

from __future__ import annotations

from pushsvc.core.event import US_PER_S, Event, event_json
from pushsvc.core.lateness import check_lateness, is_late
from pushsvc.ingest.input_limits import DEFAULT_LIMITS, InputLimits
from pushsvc.ingest.parse import JSON, NDJSON, parse_body
from pushsvc.ingest.timestamps import (
    MAX_TS_US,
    MIN_EVENT_TS_US,
    MIN_TS_US,
    parse_rfc3339,
    seconds_to_us,
)

__all__ = [
    "DEFAULT_LIMITS",
    "JSON",
    "MAX_TS_US",
    "MIN_EVENT_TS_US",
    "MIN_TS_US",
    "NDJSON",
    "US_PER_S",
    "Event",
    "InputLimits",
    "check_lateness",
    "event_json",
    "is_late",
    "parse_body",
    "parse_rfc3339",
    "seconds_to_us",
]
