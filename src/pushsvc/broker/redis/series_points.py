"""A series read on Redis: its points, from the tier's stream and the corrections beside it.

A tier's closed points are a stream (`XADD` at close); a point corrected after it was
published (a late event within the grace) is kept beside it in a sorted set that lays over the
stream (`publish_updates.lua`), and the topic's clock says where its retention starts. The
broker reads all three in one transaction; this makes the points of them.
"""

from __future__ import annotations

from typing import Any

from pushsvc.broker.redis.keys import series_id, series_time, time_of_key
from pushsvc.broker.redis.wire import stream_entries


def series_points(
    raw: Any, corrected: list[tuple[bytes, float]], clock: bytes | None, retention_us: int
) -> list[tuple[int, bytes]]:
    """The points (µs, stored point) of a read: the stream's entries `raw`, the corrections
    (member, score) laid over them, those the retention keeps at the topic's `clock`."""
    points = [(series_time(i), fields[b"p"]) for i, fields in stream_entries(raw)]
    if corrected:
        offset = int(series_id(0).partition("-")[0])
        merged = dict(points)
        for member, score in corrected:
            merged[(int(score) - offset) * 1000] = bytes(member[8:])
        points = sorted(merged.items())
    if clock is not None:
        kept_from = time_of_key(clock) - retention_us + 1
        points = [p for p in points if p[0] >= kept_from]
    return points
