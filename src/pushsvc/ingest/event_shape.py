"""The event a producer posts, defined once: `EventBody`.

A POST's JSON (one object, an array of them, or each NDJSON line) is decoded into `EventBody`
by msgspec, which checks each field's type and bounds as it reads. `/openapi.json`'s `Event`
schema is generated from the same class (`event_schema`), so what the document promises and
what a POST accepts cannot drift apart.

A few rules no field type can say are written on the definition as `extra_json_schema` (for
the document) and checked by `pushsvc.ingest.parse` after decoding: an event needs a value, a
type or data; a type may not be one a messages stream sends itself; a string `ts` is an RFC 3339
date-time; data is at most a sixteenth of `--max-body` in bytes, holds no integer beyond 64
bits and nests at most `MAX_DATA_DEPTH` levels.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from pushsvc.core.event import MESSAGE_TYPE, RESERVED_TYPES, US_PER_S
from pushsvc.ingest.timestamps import MAX_TS_US, MIN_EVENT_TS_US

MAX_TAGS = 16
MAX_TAG_KEY_LEN = 64
MAX_TAG_VALUE_LEN = 256

MAX_DATA_DEPTH = 64
"""How deep a message's data may nest (arrays and objects)."""

EpochSeconds = Annotated[
    float,
    Meta(
        ge=MIN_EVENT_TS_US // US_PER_S,
        lt=(MAX_TS_US + 1) // US_PER_S,
        description="epoch seconds, from 2000-01-01 to year 9999",
    ),
]
DateTime = Annotated[
    str,
    # Years 2000 to 9999, as the epoch seconds above.
    Meta(
        pattern="^[2-9][0-9]{3}-",
        description="RFC 3339, from 2000-01-01T00:00:00Z on",
        extra_json_schema={"format": "date-time"},
    ),
]
TagName = Annotated[str, Meta(min_length=1, max_length=MAX_TAG_KEY_LEN)]
TagValue = Annotated[str, Meta(max_length=MAX_TAG_VALUE_LEN)]


class EventBody(Struct, forbid_unknown_fields=True, omit_defaults=True):
    """a measurement (`value`), an application message (`type`, `data`: pushed as published
    to `/messages` streams), or both"""

    value: Annotated[float, Meta(description="finite; optional for a message")] | UnsetType = UNSET
    ts: EpochSeconds | DateTime | UnsetType = UNSET
    tags: Annotated[dict[TagName, TagValue], Meta(max_length=MAX_TAGS)] | UnsetType = UNSET
    type: (
        Annotated[
            str,
            Meta(
                pattern=f"^{MESSAGE_TYPE.pattern}$",
                description="the message's SSE event name (default `message`)",
                extra_json_schema={"not": {"enum": sorted(RESERVED_TYPES)}},
            ),
        ]
        | UnsetType
    ) = UNSET
    data: Annotated[
        Any,
        Meta(
            description="the message's data, any JSON (default null): at most a sixteenth "
            "of --max-body in bytes as compact JSON (413 past it), integers within 64 bits, "
            "nested at most "
            f"{MAX_DATA_DEPTH} levels"
        ),
    ] = UNSET


EVENT_EXTRA_SCHEMA: dict[str, Any] = {
    "anyOf": [{"required": ["value"]}, {"required": ["type"]}, {"required": ["data"]}]
}
"""What `EventBody`'s fields cannot say of the whole event: it has a value, a type or data."""

ONE_EVENT = msgspec.json.Decoder(EventBody)
"""One event: an NDJSON line."""
EVENTS = msgspec.json.Decoder(EventBody | list[EventBody])
"""A JSON body: one event, or a batch."""


def event_schema() -> dict[str, Any]:
    """`Event`, as `/openapi.json` describes it: generated from `EventBody`."""
    (_,), components = msgspec.json.schema_components([EventBody])
    schema: dict[str, Any] = components["EventBody"]
    schema.pop("title", None)
    schema["description"] = " ".join(schema["description"].split())  # the docstring's lines
    # Every field is optional: the generated (empty) list says nothing.
    if not schema.get("required"):
        schema.pop("required", None)
    return {**schema, **EVENT_EXTRA_SCHEMA}
