"""The document's `Event` schema (what `/openapi.json` promises a producer) against the parser
that judges a POST: an event the schema allows is accepted, one it forbids refused."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
from hypothesis import example, given
from hypothesis import strategies as st

from pushsvc.core.event import US_PER_S
from pushsvc.errors import InvalidEvent
from pushsvc.http.api.openapi_schemas import SCHEMAS
from pushsvc.ingest.input_limits import InputLimits
from pushsvc.ingest.parse import parse_body
from pushsvc.ingest.timestamps import MAX_TS_US, MIN_EVENT_TS_US, MIN_TS_US

VALIDATOR = jsonschema.Draft202012Validator(SCHEMAS["Event"])

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
