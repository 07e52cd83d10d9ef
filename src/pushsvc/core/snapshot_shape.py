"""A stream's snapshot (`event: snapshot`), defined once: `SnapshotMessage` and each topic's
`SnapshotEntry`.

`pushsvc.core.updates.snapshot_message` and `snapshot_pages` write it with orjson, in pages,
and `deletion_draft` its deletion form; tests/integration/test_answer_shapes.py holds what
they write to these classes. `/openapi.json`'s schemas are generated from them, and the Python
client decodes a snapshot into them (`pushsvc.client.models.Snapshot`).
"""

from __future__ import annotations

from typing import Annotated

from msgspec import UNSET, Meta, Struct, UnsetType

from pushsvc.core.update_shape import GroupStats
from pushsvc.core.window_stats import Windows


class SnapshotEntry(Struct, frozen=True, omit_defaults=True):
    """a topic's latest statistics in a snapshot: its latest update's id and clock, its
    windows, and a grouping topic's live groups"""

    id: str
    ts: float
    windows: Windows
    groups: list[GroupStats] | UnsetType = UNSET


class SnapshotMessage(Struct, frozen=True, omit_defaults=True):
    """a stream's first message: every subscribed topic's current statistics; later in a
    stream, with `deleted`, those topics were deleted (`DELETE /topics/{topic}`)"""

    gap: Annotated[
        bool,
        Meta(description="the stream could not resume from its id: updates after it are lost"),
    ]
    topics: dict[str, SnapshotEntry]
    deleted: (
        Annotated[list[str], Meta(description="topics deleted: everything of them before is gone")]
        | UnsetType
    ) = UNSET
