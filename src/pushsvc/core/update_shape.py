"""An update as subscribers receive it (`event: stats`), defined once: `StreamUpdate`, with the
event it echoes (`EventEcho`) and a grouping topic's groups (`GroupStats`).

`pushsvc.core.updates.draft` writes updates with orjson on the hot path (once per event,
shared by every subscriber) and does not use these classes: tests/integration/
test_answer_shapes.py holds what it writes to them, strictly. `/openapi.json`'s `StreamUpdate`
is generated from them, and the Python client decodes a `stats` message into them
(`pushsvc.client.StreamUpdate`, which adds typed readers).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from msgspec import UNSET, Meta, Struct, UnsetType

from pushsvc.core.window_stats import Windows

GroupKey = Annotated[
    dict[str, str | None],
    Meta(
        description="the group_by tags' values; null for a tag the event lacks, "
        '"(other)" for every tag of the overflow group'
    ),
]


class EventEcho(Struct, frozen=True, kw_only=True, omit_defaults=True):
    """the event the update applied: its value (absent for a message without one), its time
    (epoch seconds), its tags, and a message's `type` and `data`"""

    value: float | None = None
    ts: float
    tags: dict[str, str]
    type: str | UnsetType = UNSET
    data: Any = UNSET


class GroupStats(Struct, frozen=True):
    """one group's statistics: its key and its windows"""

    key: GroupKey
    windows: Windows


class StreamUpdate(Struct, frozen=True, kw_only=True, omit_defaults=True):
    """a topic's statistics right after an event (or a tick)"""

    id: str
    topic: str
    ts: Annotated[float, Meta(description="the topic clock: the largest event time it took")]
    reason: Literal["event", "tick"]
    event: Annotated[EventEcho | None, Meta(description="null for a tick")]
    windows: Windows
    late: Annotated[
        bool,
        Meta(description="true: the event was behind the topic's clock (applied in place)"),
    ] = False
    past_grace: Annotated[
        bool,
        Meta(
            description="true: a message past the topic's grace, pushed all the same and in "
            "none of the topic's statistics (its late stream counts it)"
        ),
    ] = False
    copy: Annotated[
        bool,
        Meta(
            description="true: on a late stream, a message its own topic pushed (no messages "
            "stream pushes it again)"
        ),
    ] = False
    group: (
        Annotated[GroupStats, Meta(description="a grouping topic's event: its group")] | UnsetType
    ) = UNSET
    groups: (
        Annotated[
            list[GroupStats],
            Meta(
                description="a grouping topic's tick: the groups whose windows changed; "
                "GET /topics/{topic}/stats: the live groups"
            ),
        ]
        | UnsetType
    ) = UNSET
    forgotten: (
        Annotated[
            list[GroupKey],
            Meta(description="keys of groups idle for the topic TTL, no longer kept"),
        ]
        | UnsetType
    ) = UNSET
