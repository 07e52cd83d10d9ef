"""The document's `Event` schema (what `/openapi.json` promises a producer, generated from
`EventBody`) against the parser that judges a POST: an event the schema allows is accepted, one
it forbids refused; and the parser's two readings (the definition's, and the one that words a
refusal) give the same verdict and the same error."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
from hypothesis import example, given
from hypothesis import strategies as st

from pushsvc.core.event import US_PER_S
from pushsvc.errors import InvalidEvent, RequestError
from pushsvc.ingest import parse
from pushsvc.ingest.event_shape import event_schema
from pushsvc.ingest.input_limits import InputLimits
from pushsvc.ingest.parse import parse_body
from pushsvc.ingest.timestamps import MAX_TS_US, MIN_EVENT_TS_US, MIN_TS_US

VALIDATOR = jsonschema.Draft202012Validator(event_schema())

_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=70)
_tags = st.dictionaries(
    _text,
    st.one_of(_text, st.text(st.characters(exclude_categories=("Cs",)), min_size=250)),
    max_size=18,
)
_edges = [MIN_EVENT_TS_US // US_PER_S, (MAX_TS_US + 1) // US_PER_S]
_ts = st.one_of(
    st.sampled_from([edge + step for edge in _edges for step in (-1, -0.5, 0, 0.5, 1)]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(),
)


# How far ahead of the server's clock a `ts` may be (`--max-future`) moves with the clock, which
# no schema can say: the document describes it, and this compares what a schema can say, with
# the bound out of the way (tests/system/test_ingest_search.py searches the bound itself).
UNBOUNDED_FUTURE = InputLimits(max_future_us=MAX_TS_US - MIN_TS_US)


def _accepted(event: dict[str, Any]) -> bool:
    try:
        parse_body(
            json.dumps(event).encode(), "application/json", now_us=0, limits=UNBOUNDED_FUTURE
        )
    except InvalidEvent:
        return False
    return True


@given(tags=_tags, ts=st.none() | _ts)
@example(tags={f"t{i}": "v" for i in range(17)}, ts=None)
@example(tags={"k" * 65: "v"}, ts=None)
@example(tags={"": "v"}, ts=None)
@example(tags={"k": "v" * 257}, ts=None)
@example(tags={}, ts=float(_edges[1]))
@example(tags={}, ts=_edges[0] - 1)
def test_an_event_is_accepted_exactly_when_the_schema_allows_it(
    tags: dict[str, str], ts: float | None
) -> None:
    event: dict[str, Any] = {"value": 1.5, "tags": tags}
    if ts is not None:
        event["ts"] = ts
    assert VALIDATOR.is_valid(event) == _accepted(event), event


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=8,
)
_fields = {
    "value": st.floats(allow_nan=False) | st.integers() | _json,
    "ts": _ts
    | st.sampled_from(["2025-11-21T10:00:00Z", "1999-12-31T23:59:59Z", "2025-13-01"])
    | _json,
    "tags": _tags | _json,
    "type": st.sampled_from(["shipped", "gap", "a b", "", "x" * 65]) | _json,
    "data": _json,
    "unknown": _json,
}


Outcome = tuple[str, str, int | None] | None
"""What a reading said: None (accepted) or the error's kind, message and index."""


def _by_definition(body: bytes) -> Outcome:
    try:
        parse_body(body, "application/json", now_us=0, limits=UNBOUNDED_FUTURE)
    except RequestError as error:
        return type(error).__name__, error.message, error.index
    return None


def _by_second_reading(body: bytes) -> Outcome:
    nothing_found = RequestError("")
    error = parse._explain(body, nothing_found, 0, UNBOUNDED_FUTURE, first_index=0, lineno=None)
    return None if error is nothing_found else (type(error).__name__, error.message, error.index)


@given(
    events=st.lists(
        st.fixed_dictionaries({}, optional=_fields).filter(lambda e: e.keys() != {"unknown"}),
        min_size=1,
        max_size=3,
    )
)
@example(events=[{"value": 1, "ts": MIN_EVENT_TS_US / US_PER_S - 1e-7}])
@example(events=[{"value": 1, "tags": {f"t{i}": "v" for i in range(17)}}])
@example(events=[{"value": 1, "tags": {"k" * 65: "v"}}])
@example(events=[{"value": 1, "tags": {"k": "v" * 257}}])
@example(events=[{"type": "gap"}])
@example(events=[{"data": 2**64}, {"value": "x"}])
@example(events=[{"data": {"k": ["\ud800"]}}, {"value": "x"}])
@example(events=[{"value": 1, "ts": 1e300}, {"data": [1e308, 2**70]}])
def test_the_definition_and_the_reading_that_words_a_refusal_agree(
    events: list[dict[str, Any]],
) -> None:
    # Every refusal is worded by the second reading (never in msgspec's words), and the
    # definition accepts exactly what that reading accepts.
    body = json.dumps(events if len(events) > 1 else events[0]).encode()
    assert _by_definition(body) == _by_second_reading(body), events
