"""A point: one closed bucket's statistics, in the one stored form every broker keeps and the
JSON every answer and message gives (pure).

Stored form (`packed`, 72 bytes): count as a little-endian int64, then sum, mean, min, max,
var (NaN for none), p50, p90, p99 as doubles; the bucket's start is the storage key, not
part of it. A rule with `distinct` tags appends one int64 per tag, in the rule's order: the
bucket's distinct count (`unpacked` is told the tags; a point stored before the rule named
a tag has no count for it). `fields` derives stddev (the square root of var) from it, so a
point read back from storage is byte for byte the one streamed when its bucket closed.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any

__all__ = ["PACKED_SIZE", "Point"]

_PACKED = struct.Struct("<q8d")
PACKED_SIZE = _PACKED.size
"""The stored form's size without distinct counts."""
_COUNT = struct.Struct("<q")


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
    distinct: tuple[tuple[str, int], ...] = ()
    """(tag, distinct count of its values in the bucket), in the rule's order."""

    def packed(self) -> bytes:
        var = math.nan if self.var is None else self.var
        head = _PACKED.pack(
            self.count, self.sum, self.mean, self.min, self.max, var, self.p50, self.p90, self.p99
        )
        return head + b"".join(_COUNT.pack(n) for _, n in self.distinct)

    @classmethod
    def unpacked(cls, t_us: int, data: bytes, distinct: tuple[str, ...] = ()) -> Point:
        count, total, mean, low, high, var, p50, p90, p99 = _PACKED.unpack_from(data)
        counts = tuple(
            (tag, _COUNT.unpack_from(data, at)[0])
            for tag, at in zip(distinct, range(PACKED_SIZE, len(data), _COUNT.size), strict=False)
        )
        return cls(
            t_us,
            count,
            total,
            mean,
            low,
            high,
            None if math.isnan(var) else var,
            p50,
            p90,
            p99,
            counts,
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
            **{f"distinct_{tag}": n for tag, n in self.distinct},
        }
