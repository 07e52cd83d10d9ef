"""The answers that list what the server keeps, defined once: `GET /topics` (`Topics`),
`GET /alerts` (`Alerts`), `GET /topics/{t}/history` (`History`), `GET /topics/{t}/series`
(`Series`), `GET /anomalies` (`Anomalies`) and `GET /topics/{t}/presence` (`TopicPresence`).

The views in `pushsvc.http.api` write them; tests/integration/test_answer_shapes.py holds what they
write to these classes. `/openapi.json`'s schemas are generated from them, and the Python client
decodes the pages it reads (history, series) into them.
"""

from __future__ import annotations

from typing import Annotated, Any

from msgspec import UNSET, Meta, Struct, UnsetType

from pushsvc.core.alert_shape import AlertInstance
from pushsvc.core.point_shape import PointStats
from pushsvc.core.shape_schema import REF

_NEXT = Annotated[str | None, Meta(description="`?after=` of the next page; null on the last")]


class TopicEntry(Struct, frozen=True):
    """a topic and its latest update"""

    topic: str
    last_id: str
    last_ts: float
    subscribers: Annotated[int, Meta(ge=0)]


class Topics(Struct, frozen=True):
    """a page of the topics the caller may read, in name order"""

    topics: list[TopicEntry]
    next: _NEXT


class Alerts(Struct, frozen=True):
    """a page of the alert instances pending or firing now"""

    alerts: list[AlertInstance]
    next: _NEXT


class History(Struct, frozen=True):
    """a topic's updates from its history"""

    topic: str
    resume_id: str | None
    more: Annotated[
        bool,
        Meta(
            description="updates beyond `limit` were left out: with `since`, newer ones (page "
            "on with `since=<resume_id>`); without, older ones (read them from `since=0`)"
        ),
    ]
    gap: bool
    windows: list[str]
    stats: list[str]
    updates: Annotated[
        # Read as rows (`pushsvc.core.history_table`): the schema says what each is (msgspec
        # would replace the `items` below by that of `dict`).
        list[Any],
        Meta(
            description="the updates exactly as streamed (`_alerts`: its alert changes)",
            extra_json_schema={
                "items": {
                    "anyOf": [
                        {"$ref": REF.format(name="StreamUpdate")},
                        {"$ref": REF.format(name="AlertChangeMessage")},
                    ]
                }
            },
        ),
    ]


class SeriesSegment(Struct, frozen=True):
    """the part of a range one tier answered"""

    resolution: str
    since: float
    until: float


class Series(Struct, frozen=True, omit_defaults=True):
    """a topic's (or group's) closed buckets at a resolution, in ascending `t`"""

    topic: str
    resolution: str
    points: list[PointStats]
    more: Annotated[bool, Meta(description="points beyond `limit` were left out")]
    segments: Annotated[
        list[SeriesSegment], Meta(description="which tier answered which part of the range")
    ]
    group: dict[str, str | None] | UnsetType = UNSET


class AnomalyEntry(Struct, frozen=True, omit_defaults=True):
    """a scored series (a topic's own, or one live group's) with a scored point in the range"""

    topic: str
    resolution: Annotated[str, Meta(description="the rule's `every`")]
    stat: Annotated[str, Meta(description="the statistic scored")]
    rate: Annotated[float, Meta(ge=0, le=1, description="anomalous / scored points in the range")]
    anomalous: Annotated[int, Meta(ge=0)]
    scored: Annotated[int, Meta(ge=1)]
    points: Annotated[
        list[PointStats],
        Meta(max_length=3, description="its most anomalous points, score descending"),
    ]
    group: (
        Annotated[
            dict[str, str | None], Meta(description="a group's key; absent for the topic's own")
        ]
        | UnsetType
    ) = UNSET


class Anomalies(Struct, frozen=True):
    """the scored series ranked by anomaly rate over a range"""

    since: Annotated[float | None, Meta(description="the range asked, epoch s")]
    until: float | None
    anomalies: Annotated[
        list[AnomalyEntry],
        Meta(
            description="by rate descending, then anomalous points descending, then topic and group"
        ),
    ]
    more: Annotated[bool, Meta(description="entries beyond `limit` were left out")]


class TopicPresence(Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """how many streams watch a topic now"""

    topic: str
    watching: Annotated[
        int,
        Meta(
            ge=0,
            description="streams watching the topic now, over every web process (a pattern "
            "stream counts for every topic it would receive)",
        ),
    ]
    subs: (
        Annotated[
            list[str],
            Meta(
                description="the distinct token subjects watching (only where the server keeps "
                "them, to a token whose presence scope holds the topic)"
            ),
        ]
        | UnsetType
    ) = UNSET
