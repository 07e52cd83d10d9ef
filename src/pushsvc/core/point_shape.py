"""A series point and a forecast, defined once: `PointStats` (a closed bucket's statistics,
whose `distinct_<tag>` and `top_<tag>` the rules choose), `PointMessage` (an `event: point`
message) and `Forecast` (`GET /topics/{t}/forecast`, and what a forecast message carries).

`pushsvc.rules.point`, `pushsvc.core.updates.point_draft` and `pushsvc.series.forecasting`
write them with orjson; tests/integration/test_answer_shapes.py holds what they write to these
types. `/openapi.json`'s schemas are generated from them, and the Python client decodes into
them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from msgspec import Meta, Struct, field

from pushsvc.core import shape_schema
from pushsvc.core.window_stats import MessageRate, TopValue

_NULL_WITHOUT_VALUES = Annotated[float | None, Meta(description="null when `count` is 0")]
_NULL_BELOW_TWO = Annotated[float | None, Meta(description="null for one event or none")]

NAMED: dict[str, Any] = {
    "t": Annotated[float, Meta(description="the bucket's start, epoch seconds")],
    "count": Annotated[
        int, Meta(ge=0, description="the bucket's events with a value (0: it held messages only)")
    ],
    "sum": float,
    "mean": _NULL_WITHOUT_VALUES,
    "min": _NULL_WITHOUT_VALUES,
    "max": _NULL_WITHOUT_VALUES,
    "var": _NULL_BELOW_TWO,
    "stddev": _NULL_BELOW_TWO,
    "p50": _NULL_WITHOUT_VALUES,
    "p90": _NULL_WITHOUT_VALUES,
    "p99": _NULL_WITHOUT_VALUES,
    "messages": Annotated[
        dict[str, MessageRate],
        Meta(
            description="the topic's messages in the bucket, by type (only where it held one; "
            "a group's points have none): their count and their rate per second of the bucket"
        ),
    ],
    "anomaly": Annotated[
        float,
        Meta(
            ge=0,
            le=1,
            description="a rule's `anomaly` tier only: the bucket's anomaly score, from the "
            "series' points before it only (0 while the detector learns)",
        ),
    ],
    "anomalous": Annotated[
        bool, Meta(description="with `anomaly`: whether the score reached the rule's threshold")
    ],
}
"""A point's members by name, and what each is."""

REQUIRED = ("t", "count", "sum", "mean", "min", "max", "var", "stddev", "p50", "p90", "p99")

PREFIXED: dict[str, Any] = {
    "distinct_": Annotated[
        int, Meta(ge=0, description="a rule's distinct tag: its different values in the bucket")
    ],
    "top_": Annotated[
        list[TopValue],
        Meta(
            description="a rule's top tag: its k most frequent values in the bucket, by count "
            "descending then value ascending"
        ),
    ],
}


def stat_type(name: str) -> Any:
    """The type of a point's member `name` (None: a point has no such member)."""
    return shape_schema.stat_type(name, NAMED, PREFIXED, None)


PointStats = Annotated[
    # Any: each member's type is its key's (`stat_type`); the schema says which.
    dict[str, Any],
    Meta(
        description="one closed bucket of a series tier",
        extra_json_schema=shape_schema.keyed_schema(NAMED, PREFIXED, None, REQUIRED),
    ),
]

GroupKey = Annotated[dict[str, str | None], Meta(description="a group's point: the group's key")]


class PointMessage(Struct, frozen=True, kw_only=True, omit_defaults=True):
    """an `event: point` message: one closed bucket of a series tier of `topic` (or of one of
    its groups)"""

    id: str
    resolution: str
    topic: str
    group: GroupKey | None = None
    point: PointStats
    correction: Annotated[
        bool,
        Meta(
            description="true when the bucket was published before and a late event within "
            "its rule's grace amended it: `point` replaces the point of the same resolution, "
            "group and `t` (series reads give the corrected one)"
        ),
    ] = False


class ForecastPoint(Struct, frozen=True):
    """one predicted bucket: its start (epoch ms), the predicted statistic and its central
    80 % and 95 % prediction intervals"""

    t: int
    mean: float
    lo80: float
    hi80: float
    lo95: float
    hi95: float


class Forecast(Struct, frozen=True, kw_only=True, omit_defaults=True):
    """a rule's `forecast` after the last bucket of its tier closed: the model's predicted
    `stat` for each bucket of the horizon; `points` is empty while the model learns; also what
    an `event: point` message with `forecast` carries"""

    topic: str | None = None
    group: Annotated[dict[str, str | None], Meta(description="a group's forecast")] | None = None
    model: Literal["holt_winters", "linear"]
    stat: str
    resolution: str
    from_: Annotated[
        int | None, Meta(description="the start (epoch ms) of the last bucket learned")
    ] = field(name="from")
    points: list[ForecastPoint]
    every: (
        Annotated[
            int,
            Meta(
                description="a forecast message only, of a horizon of more than 60 buckets: "
                "it carries every `every`-th bucket's point, up to the horizon's last (at most "
                "60); `GET /forecast` has them all"
            ),
        ]
        | None
    ) = None
    clock: (
        Annotated[
            int,
            Meta(
                description="`GET /forecast` only: the topic's clock (epoch ms), its latest "
                "update's, so that a reader sees how far `from` is behind it"
            ),
        ]
        | None
    ) = None
    pending: (
        Annotated[
            int,
            Meta(
                description="`GET /forecast` only: entries of the topic's partition logged "
                "and not yet applied by the aggregator; while above 0 (a bulk post being "
                "worked through) a newer forecast may come: ask again"
            ),
        ]
        | None
    ) = None
