"""A point: one closed bucket's statistics, in the one stored form every broker keeps and the
JSON every answer and message gives (pure).

Stored form (`packed`, 72 bytes): count as a little-endian int64, then sum, mean, min, max,
var (NaN for none), p50, p90, p99 as doubles; the bucket's start is the storage key, not
part of it. `fields` derives stddev (the square root of var) from it, so a point read back
from storage is byte for byte the one streamed when its bucket closed.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any

__all__ = ["PACKED_SIZE", "Point"]

_PACKED = struct.Struct("<q8d")
PACKED_SIZE = _PACKED.size


@dataclass(frozen=True, slots=True)
class Point:
    """A closed bucket `[t_us, t_us + resolution)` with at least one event. `var` is None for
    one event (as in windows)."""

    t_us: int
    count: int
    sum: float
    mean: float
    min: float
    max: float
    var: float | None
    p50: float
    p90: float
    p99: float

    def packed(self) -> bytes:
        var = math.nan if self.var is None else self.var
        return _PACKED.pack(
            self.count, self.sum, self.mean, self.min, self.max, var, self.p50, self.p90, self.p99
        )

    @classmethod
    def unpacked(cls, t_us: int, data: bytes) -> Point:
        count, total, mean, low, high, var, p50, p90, p99 = _PACKED.unpack(data)
        return cls(
            t_us, count, total, mean, low, high, None if math.isnan(var) else var, p50, p90, p99
        )

    def fields(self) -> dict[str, Any]:
        """The point's JSON: `t` (bucket start, epoch seconds) and its statistics."""
        var = self.var
        return {
            "t": self.t_us / 1_000_000,
            "count": self.count,
            "sum": self.sum,
            "mean": self.mean,
            "min": self.min,
            "max": self.max,
            "var": var,
            "stddev": None if var is None else math.sqrt(var),
            "p50": self.p50,
            "p90": self.p90,
            "p99": self.p99,
        }
