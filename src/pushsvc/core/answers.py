"""The answers a producer meets, defined once: a POST's `Accepted`, a many-topic POST's
`TopicsAccepted` and every error's `Error`.

The server encodes them from these classes, the Python client decodes them into the same
classes, and `/openapi.json`'s schemas of them are generated from them
(`pushsvc.http.api.openapi_schemas`), so the three cannot drift apart.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from pushsvc.errors import RequestError


class Accepted(Struct, frozen=True):
    """a POST's answer: its events logged on time, and those past the topic's grace"""

    accepted: Annotated[int, Meta(ge=0, description="events logged on the topic on time")]
    late: (
        Annotated[
            int,
            Meta(
                ge=1,
                description="events past the topic's grace, logged on its late stream "
                "`<topic>.late` (a message among them is pushed on the topic all the same, "
                "in none of its statistics; absent: none)",
            ),
        ]
        | UnsetType
    ) = UNSET


class ErrorDetail(Struct, frozen=True):
    """what went wrong: a stable `code` to act on, a message for people, and where it applies
    the position of the event at fault in a batch"""

    code: str
    message: str
    index: int | UnsetType = UNSET


class Error(Struct, frozen=True):
    """every error answer's body"""

    error: ErrorDetail


def error_of(error: RequestError) -> Error:
    """The answer to a request that raised `error`."""
    index = UNSET if error.index is None else error.index
    return Error(ErrorDetail(error.code, error.message, index))


def answer_json(answer: Accepted | Error) -> bytes:
    """An answer's body: compact JSON and a newline, as every JSON answer of the API ends (so
    that a shell prints the next prompt, or `curl -w`'s status, on a line of its own)."""
    return msgspec.json.encode(answer) + b"\n"


def error_json(code: str, message: str) -> bytes:
    """The body of an error that is no `RequestError` (one the WSGI server or werkzeug
    answers), in the same shape."""
    return answer_json(Error(ErrorDetail(code, message)))


def accepted_json(accepted: int, late: int) -> bytes:
    """A POST's 202 body: `late` only when some events were past the topic's grace."""
    return answer_json(Accepted(accepted, late if late else UNSET))


class TopicResult(Struct, frozen=True, omit_defaults=True):
    """what became of one topic's events in a request that publishes to many topics: logged
    (`accepted` on the topic, `late` on its late stream), or refused whole (`error`)"""

    topic: Annotated[str, Meta(description="the topic as the request named it")]
    items: Annotated[
        list[int],
        Meta(
            description="the positions in the request of the events (or broadcast topic) "
            "this result is about, in order"
        ),
    ]
    accepted: Annotated[int, Meta(ge=0, description="events logged on the topic")] | UnsetType = (
        UNSET
    )
    late: (
        Annotated[
            int,
            Meta(ge=0, description="events past the topic's grace, logged on `<topic>.late`"),
        ]
        | UnsetType
    ) = UNSET
    error: ErrorDetail | UnsetType = UNSET
    status: (
        Annotated[
            int,
            Meta(
                ge=400,
                le=599,
                description="with `error`: the status a one-topic POST of these events "
                "would have answered (403 for a topic the token may not publish to...)",
            ),
        ]
        | UnsetType
    ) = UNSET


class TopicsAccepted(Struct, frozen=True):
    """a many-topic POST's answer: one result per topic, in the order topics first appear,
    and the totals of the events"""

    results: list[TopicResult]
    accepted: Annotated[int, Meta(ge=0, description="events logged on their topics")]
    late: Annotated[int, Meta(ge=0, description="events logged on their late streams")]
    refused: Annotated[int, Meta(ge=0, description="events refused (their results say why)")]


def topics_json(answer: TopicsAccepted) -> bytes:
    """A many-topic POST's body."""
    return msgspec.json.encode(answer) + b"\n"


ANSWERS = (Accepted, TopicsAccepted, Error)
"""The classes `/openapi.json` describes (with what they hold)."""
