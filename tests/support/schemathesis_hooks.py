"""Schemathesis hooks for the fuzz suite (`tests/system/test_openapi_fuzz.py`), loaded by the
`schemathesis run` it starts (`support.schemathesis_run`).

One check replaces schemathesis' `positive_data_acceptance`: a schema-valid request may still
be refused for a reason no schema can state, because it depends on what came before, on the
clock or on two parameters together; each such refusal has its own `error.code`, and only those
codes (with their status) pass. Any other refusal of a schema-valid request fails as
schemathesis' own check would.

One `before_call` hook aims schema-valid requests where they can succeed (see its docstring).
"""

from __future__ import annotations

import itertools
import json
import os
import re
from typing import Any
from urllib.parse import unquote

import schemathesis
from schemathesis.openapi.checks import RejectedPositiveData
from schemathesis.specs.openapi.checks import positive_data_acceptance

from pushsvc.core.topics import TOPIC_PATTERN

CONTEXT_REFUSALS = {
    # An event older than its topic's clock minus the allowed lateness: earlier examples
    # moved that clock.
    "late_event": 400,
    # An event further ahead of the server's clock than --max-future allows.
    "future_event": 400,
    # A one-topic `?group=` naming a tag that some rule groups by, but not this topic's.
    "ungrouped_tag": 400,
    # /series' `since` not before its `until`, or before the topic's clock when `until` is
    # left out: a relation between values, which no schema of one parameter states.
    "empty_range": 400,
    # A stream naming a topic whose rule does not keep a window or statistic it asks for,
    # which another rule keeps (the document lists every rule's).
    "not_kept": 400,
    # A stream asking for presence events (`?presence=1`) with patterns only: its events are
    # about the topics it names outright (two parameters together).
    "presence_needs_names": 400,
    # An Idempotency-Key an earlier example sent with another body to the same topic.
    "idempotency_key_reused": 422,
    # A message's data with an integer beyond 64 bits: JSON Schema cannot tell one from a
    # double of the same value (a schema's "integer" is any number without a fraction).
    "wide_integer": 400,
    # A body past --max-body: a bound in bytes, which no schema of a batch's items states (the
    # fuzz suite serves with a small one, so that a batch at its length bound is refused before
    # any of its topics is made).
    "payload_too_large": 413,
    # A message's data with half of a surrogate pair: JSON Schema's strings take any escape.
    "lone_surrogate": 400,
}
"""The codes of refusals that depend on earlier requests, the clock, the topic's rule or two
parameters together, with their status."""


def error_code(body: bytes) -> str | None:
    """The `error.code` of a pushsvc JSON error body, else None."""
    try:
        document = json.loads(body)
    except ValueError:
        return None
    error = document.get("error") if isinstance(document, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) else None


@schemathesis.check
def positive_data_accepted_unless_stateful(ctx: Any, response: Any, case: Any) -> bool | None:
    """`positive_data_acceptance`, except a refusal whose code and status CONTEXT_REFUSALS
    lists."""
    try:
        return positive_data_acceptance(ctx, response, case)
    except RejectedPositiveData:
        code = error_code(response.content)
        if code is not None and CONTEXT_REFUSALS.get(code) == response.status_code:
            return None
        raise


TOPIC_PREFIX_ENV = "PUSHSVC_FUZZ_TOPIC_PREFIX"
"""Where set (e.g. `public.`): every schema-valid request's topics start with it, so that a run
without a token reaches the topics anonymous callers may read."""

TOPIC = re.compile(TOPIC_PATTERN)
_POST_EVENTS = ("POST", "/topics/{topic}/events")
_MAX_TOPIC = 128
_posts = itertools.count()


def _prefixed(prefix: str, topic: str) -> str:
    return (prefix + topic)[:_MAX_TOPIC]


_MULTI_STREAMS = ("/stream", "/messages")
_MESSAGE_STREAMS = ("/messages", "/topics/{topic}/messages")
NO_HISTORY_ID = "0:0-0"
"""An update id of an epoch no history has: a stream resumed from it starts with its gap."""


@schemathesis.hook
def before_call(ctx: Any, case: Any, **kwargs: Any) -> None:
    """Aim schema-valid requests, keeping them valid: at the anonymous topics where asked, and
    each schema-valid POST at a topic of its own (its name cut to leave room for a suffix), so
    that its acceptance is judged on its body and not refused for what earlier examples posted
    to the same topic (a later clock, the same Idempotency-Key: see CONTEXT_REFUSALS, which
    still covers what one batch does to itself)."""
    if case.meta is None or not case.meta.generation.mode.is_positive:
        return
    prefix = os.environ.get(TOPIC_PREFIX_ENV, "")
    path_parameters = case.path_parameters or {}
    topic = path_parameters.get("topic")
    if isinstance(topic, str):
        topic = _prefixed(prefix, topic)
        if (case.method.upper(), case.operation.path) == _POST_EVENTS:
            suffix = f"-{next(_posts):x}-{os.getpid():x}"
            topic = topic[: _MAX_TOPIC - len(suffix)] + suffix
        case.path_parameters = {**path_parameters, "topic": topic}
    selectors = (case.query or {}).get("topic")
    if prefix and case.operation.path in _MULTI_STREAMS and isinstance(selectors, list):
        case.query = {**case.query, "topic": [_prefixed(prefix, s) for s in selectors]}
    if case.operation.path in _MESSAGE_STREAMS:
        # A messages stream starts live, with nothing to send until a message is published:
        # schemathesis would wait its whole request timeout for a first event. Resumed from an
        # id of no history, it sends its `event: gap` at once (checked against the schema like
        # any first event); an id the case gives itself is kept.
        headers = case.headers or {}
        if "Last-Event-ID" not in headers and "lastEventId" not in (case.query or {}):
            case.headers = {**headers, "Last-Event-ID": NO_HISTORY_ID}


@schemathesis.hook
def filter_failure(ctx: Any, failure: Any, case: Any, response: Any) -> bool:
    """Keep every failure but one schemathesis makes itself: it keeps path parameters
    percent-encoded, so a generated topic like `a%3Ab`, invalid as written, is sent as the
    valid topic `a:b`, and its acceptance reported as "schema-violating request accepted"
    although every parameter the server received was valid."""
    if getattr(failure, "code", None) != "ST201" or case.meta is None:
        return True
    others = [c for loc, c in case.meta.components.items() if str(loc.value) != "path"]
    if any(c.mode.is_negative for c in others):
        return True
    sent = [unquote(v) for v in (case.path_parameters or {}).values() if isinstance(v, str)]
    return not all(TOPIC.fullmatch(value) for value in sent)
