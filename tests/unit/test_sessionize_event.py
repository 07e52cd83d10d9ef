"""The sessionizer reads an update's event alone (`_event_of`), without parsing its windows:
byte tables of updates as `pushsvc.core.updates` makes them, tricky tags included."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from pushsvc.aggregate.sessionize import _event_of
from pushsvc.core.updates import GroupPart, Update, UpdateId, draft

WINDOWS = {"1m": {"count": 2, "mean": 1.5}}


def _data(event: dict[str, Any] | None, *, group: bool = False) -> bytes:
    part = GroupPart("g", {"station": "grill"}, WINDOWS) if group else None
    made = draft("shop.a", 5_000_000, "event" if event else "tick", event, WINDOWS, group=part)
    return Update.of(made, UpdateId("e1", 1, 0)).data


@pytest.mark.parametrize(
    "event",
    [
        {"value": 1.0, "ts": 5.0, "tags": {"user": "ann", "step": "view"}},
        {"value": 1.0, "ts": 5.0, "tags": {"user": 'a,"windows":{"x"', "step": "}"}},
        {"value": -2.5, "ts": 5.0, "tags": {}},
        {"value": 1.0, "ts": 5.0},
    ],
)
@pytest.mark.parametrize("group", [False, True])
def test_the_event_alone_equals_the_event_of_the_whole_update(
    event: dict[str, Any], group: bool
) -> None:
    data = _data(event, group=group)
    assert _event_of(data) == orjson.loads(data)["event"] == event


def test_a_tick_carries_no_event() -> None:
    assert _event_of(_data(None)) is None
