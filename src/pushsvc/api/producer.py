"""POST /topics/{topic}/events — validate, check lateness, hand to the broker."""

from __future__ import annotations

import time

from flask import Blueprint, request

from pushsvc.api.context import runtime
from pushsvc.errors import NoAggregator, PayloadTooLarge
from pushsvc.events import check_lateness, parse_body
from pushsvc.topics import validate_topic

bp = Blueprint("producer", __name__)


@bp.post("/topics/<anytext:topic>/events")
def post_events(topic: str) -> tuple[dict[str, int], int]:
    rt = runtime()
    validate_topic(topic)
    limits = rt.limits
    if request.content_length is not None and request.content_length > limits.max_body_bytes:
        raise PayloadTooLarge(f"body is larger than {limits.max_body_bytes} bytes")
    # Read one byte past the limit so chunked bodies of unknown length are capped too.
    body = request.stream.read(limits.max_body_bytes + 1)
    events = parse_body(body, request.content_type, now_us=time.time_ns() // 1000, limits=limits)
    check_lateness(rt.hub.topic_clocks.get(topic), events, rt.settings.allowed_lateness)
    if rt.broker.publish_events(topic, events) == 0:
        raise NoAggregator("no aggregator is running for this topic; the events were not accepted")
    rt.metrics.events_accepted.inc(len(events))
    return {"accepted": len(events)}, 202
