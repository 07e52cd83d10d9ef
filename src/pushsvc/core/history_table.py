"""An update as one row of a table: the one owner of the history's columns, shared by the
CSV answer of `GET /topics/{t}/history` and the client's `history()` DataFrame.

Columns, in this order:

    id        the update id (resume a stream after it with Last-Event-ID)
    time      the update's clock `ts` (the topic clock T), UTC; RFC 3339 with microseconds
    reason    "event" or "tick" (an idle topic's windows slid)
    value     the event's value; empty (NaN) for a tick
    {window}_{stat}   e.g. 10s_count, 1m_p99: the statistics right after the update;
                      empty (NaN) where the update has null (an empty window, var of one value)
    tag.{name}        e.g. tag.dish: the event's tag, one column per tag name some event of
                      the table carries, by name; empty where the event lacks it, and for a
                      tick. Last, so that the columns before them stay where they were.

Windows in the server's order, statistics in the update's order (count, sum, mean, min, max,
var, stddev, p50, p90, p99). Pure: no I/O, no pandas (the server does not import it).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

BASE_COLUMNS = ("id", "time", "reason", "value")
TAG_PREFIX = "tag."
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def columns(windows: Sequence[str], stats: Sequence[str], tags: Sequence[str] = ()) -> list[str]:
    return [
        *BASE_COLUMNS,
        *(stat_column(w, s) for w in windows for s in stats),
        *(tag_column(t) for t in tags),
    ]


def stat_column(window: str, stat: str) -> str:
    return f"{window}_{stat}"


def tag_column(tag: str) -> str:
    return f"{TAG_PREFIX}{tag}"


def _tags_of(fields: Mapping[str, Any]) -> Mapping[str, str]:
    event = fields.get("event")
    tags = event.get("tags") if isinstance(event, Mapping) else None
    return tags if isinstance(tags, Mapping) else {}


def tag_names(updates: Iterable[Mapping[str, Any]]) -> list[str]:
    """Every tag name the updates' events carry, sorted: the table's tag columns."""
    return sorted({name for fields in updates for name in _tags_of(fields)})


def row(
    fields: Mapping[str, Any],
    clock_us: int,
    windows: Sequence[str],
    stats: Sequence[str],
    tags: Sequence[str] = (),
) -> list[Any]:
    """One update's cells: id, clock (µs), reason, value, then each window's statistics
    (None where the update has null or lacks the field), then the event's value of each of
    `tags` (None where it has none)."""
    event = fields.get("event")
    window_stats = fields.get("windows") or {}
    cells: list[Any] = [
        fields["id"],
        clock_us,
        fields.get("reason", "event"),
        event.get("value") if isinstance(event, Mapping) else None,
    ]
    for window in windows:
        values = window_stats.get(window) or {}
        cells.extend(values.get(stat) for stat in stats)
    carried = _tags_of(fields)
    cells.extend(carried.get(tag) for tag in tags)
    return cells


def rfc3339_us(clock_us: int) -> str:
    """`2025-11-21T04:40:02.000000Z`: exact to the microsecond, as pandas parses it."""
    when = _EPOCH + timedelta(microseconds=clock_us)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def to_csv(rows: Iterable[list[Any]], header: Sequence[str]) -> str:
    """CSV text (RFC 4180, CRLF line ends) of rows made by `row`: times in RFC 3339, floats
    in their shortest round-trip form, None as an empty cell."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    for cells in rows:
        writer.writerow(
            [_cell(c) for c in cells[:1]] + [rfc3339_us(cells[1])] + [_cell(c) for c in cells[2:]]
        )
    return out.getvalue()


def _cell(value: object) -> object:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return value
