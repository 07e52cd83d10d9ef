"""A window's statistics, as updates, snapshots and `GET /topics/{t}/stats` carry them, defined
once: the shape whose keys the rules choose (window labels, `distinct_<tag>`, `top_<tag>`).

The statistics of a window are a dict (`WindowStats`, by window label in `Windows`): what each
member holds is said once, in `NAMED` and `PREFIXED` (and `REST`: count, sum, mean, …), and
both `/openapi.json`'s description of the object (`keyed_schema`) and the client's typed
reading of one statistic (`stat_type`) come from those tables. The aggregator writes these
objects with its own fast encoders (`pushsvc.stats`); tests/integration/test_answer_shapes.py holds
what it writes to these types.
"""

from __future__ import annotations

from typing import Annotated, Any

from msgspec import Meta, Struct

from pushsvc.core import shape_schema


class TopValue(Struct, frozen=True, omit_defaults=True):
    """one entry of a `top_<tag>` list: a value and how many events of the window (or bucket)
    carry it; `error` where Space-Saving counted: the count is at most that above the true one
    (absent, None: exact)"""

    value: str
    count: int
    error: float | None = None


class FunnelStep(Struct, frozen=True):
    """one step of a session topic's `funnel`: the sessions that reached it, as a share of the
    first step's and of the step before's (null where undefined, and for the first step's
    `step_conversion`), and the median seconds from the first step to it"""

    step: str
    sessions: int
    conversion: float | None
    step_conversion: float | None
    median_s: float | None


class MessageRate(Struct, frozen=True):
    """a message type's count in a window (or bucket), and its rate per second"""

    count: Annotated[int, Meta(ge=1)]
    rate: Annotated[float, Meta(gt=0)]


_NUMBER_OR_NULL = float | None

NAMED: dict[str, Any] = {
    "messages": Annotated[
        dict[str, MessageRate],
        Meta(
            description="the messages the window holds, by type (only while it holds one): "
            "their count and their rate per second"
        ),
    ],
    "anomaly_rate": Annotated[
        Annotated[float, Meta(ge=0, le=1)] | None,
        Meta(
            description="a rule that scores anomalies: anomalous / scored among the series "
            "buckets that closed in the window (null while none closed)"
        ),
    ],
    "bounce_rate": Annotated[
        _NUMBER_OR_NULL, Meta(description="a session topic's: sessions of one event / sessions")
    ],
    "events_per_session": Annotated[
        _NUMBER_OR_NULL,
        Meta(description="a session topic's: the mean of its sessions' event counts"),
    ],
    "active": Annotated[
        int | None,
        Meta(description="a session topic's: sessions open when its newest session ended"),
    ],
    "funnel": Annotated[
        list[FunnelStep],
        Meta(description="a session topic's with a funnel: one entry per step"),
    ],
}
"""The members a window's statistics may hold by name, and what each is."""

PREFIXED: dict[str, Any] = {
    "distinct_": Annotated[
        int, Meta(ge=0, description="a rule's distinct tag: its different values in the window")
    ],
    "top_": Annotated[
        list[TopValue],
        Meta(
            description="a rule's top tag: its k most frequent values in the window, by count "
            "descending then value ascending"
        ),
    ],
}
"""The members named by a prefix and a tag of the rule's."""

REST = _NUMBER_OR_NULL
"""Every other statistic (count, sum, mean, min, max, var, stddev, the percentiles, rate):
a number, null where undefined (an empty window)."""


def stat_type(name: str) -> Any:
    """The type of a window's statistic `name`."""
    return shape_schema.stat_type(name, NAMED, PREFIXED, REST)


WindowStats = Annotated[
    # Any: each member's type is its key's (`stat_type`); the schema says which.
    dict[str, Any],
    Meta(
        description="one window's statistics, by the names the topic's rule keeps",
        extra_json_schema=shape_schema.keyed_schema(NAMED, PREFIXED, REST),
    ),
]
"""One window's statistics."""

Windows = Annotated[
    dict[str, WindowStats],
    Meta(description="statistics by window label; null where undefined (an empty window)"),
]
"""Every window's statistics, by window label."""
