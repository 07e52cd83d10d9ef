"""A point: one closed bucket's statistics, in the one stored form every broker keeps and the
JSON every answer and message gives (pure).

Stored form (`packed`, 72 bytes): count as a little-endian int64, then sum, mean, min, max,
var (NaN for none), p50, p90, p99 as doubles; the bucket's start is the storage key, not
part of it. A rule with `distinct` tags appends one int64 per tag, in the rule's order: the
bucket's distinct count (`unpacked` is told the tags; a point stored before the rule named
a tag has no count for it). A rule with `top` tags then appends its top lists, and a point
without them is exactly as above:

    top section   UTF-8 JSON, compact: [[tag, [[value, count], ...], error or null], ...]
    trailer       the section's length (uint32, little-endian), then 4 bytes 0xFF

A point without top lists is 72 bytes, or ends with a distinct count, a non-negative int64
whose high half is never four 0xFF bytes: the trailer tells the two apart without knowing the
rule, and a list is read by its tag (`unpacked` is told the rule's top tags; one the point
lacks, it lacks). A bucket that held messages then appends its counts by type:

    messages      UTF-8 JSON, compact: [[type, count], ...] in type order
    trailer       the section's length (uint32, little-endian), then 4 bytes 0xFD FF FF FF

(any topic may carry messages, so they are read without knowing the rule). A scored point (a
rule's `anomaly`) ends, after all of that, with

    anomaly       the score (double), the flag (one byte, 0 or 1), then 4 bytes 0xFE FF FF FF

marks that are neither the top trailer's (0xFF FF FF FF), nor each other's, nor a distinct
count's high half (whose top bit is clear), so each is read without knowing the rule. `fields`
derives stddev (the square root of var) from it, so a point read back from storage is byte for
byte the one streamed when its bucket closed, score and flag included.

A bucket of messages without values (a messages-only topic's, or a quiet stretch of a mixed
one) is a point of count 0 and sum 0 whose other statistics are none (NaN in both forms, null
in its JSON), as an empty window gives them: messages without a value are no values.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

__all__ = ["PACKED_SIZE", "Point", "TopList"]

_PACKED = struct.Struct("<q8d")
PACKED_SIZE = _PACKED.size
"""The stored form's size without distinct counts or top lists."""
_COUNT = struct.Struct("<q")
_TRAILER = struct.Struct("<I4s")
_MARK = b"\xff\xff\xff\xff"
_SCORE = struct.Struct("<dB4s")
_SCORE_MARK = b"\xfe\xff\xff\xff"
_MESSAGES_MARK = b"\xfd\xff\xff\xff"


class TopList(NamedTuple):
    """A bucket's `top_<tag>`: at most k (value, count) by count descending then value
    ascending, and `error` (the merged summary's floor, at most N/m; stored before: N/m itself)
    when the counts come from Space-Saving (None: exact)."""

    tag: str
    entries: tuple[tuple[str, int], ...]
    error: float | None = None

    def fields(self) -> list[dict[str, Any]]:
        """As windows give it: `{"value", "count"}`, plus `"error"` when not exact."""
        error = self.error
        if error is None:
            return [{"value": value, "count": count} for value, count in self.entries]
        return [{"value": value, "count": count, "error": error} for value, count in self.entries]


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
    top: tuple[TopList, ...] = ()
    """The bucket's top values of each top tag, in the rule's order."""
    anomaly: float | None = None
    """The bucket's anomaly score in [0, 1] (`pushsvc.series.scoring`); None: not scored."""
    anomalous: bool = False
    """Whether `anomaly` reached the rule's threshold when the bucket closed."""
    messages: tuple[tuple[str, int], ...] = ()
    """(type, count) of the bucket's messages, by type; empty for a bucket without any."""

    def packed(self) -> bytes:
        var = math.nan if self.var is None else self.var
        head = _PACKED.pack(
            self.count, self.sum, self.mean, self.min, self.max, var, self.p50, self.p90, self.p99
        )
        head += b"".join(_COUNT.pack(n) for _, n in self.distinct)
        if self.top:
            section = orjson.dumps([[t.tag, t.entries, t.error] for t in self.top])
            head += section + _TRAILER.pack(len(section), _MARK)
        if self.messages:
            section = orjson.dumps(self.messages)
            head += section + _TRAILER.pack(len(section), _MESSAGES_MARK)
        if self.anomaly is not None:
            head += _SCORE.pack(self.anomaly, self.anomalous, _SCORE_MARK)
        return head

    @classmethod
    def unpacked(
        cls, t_us: int, data: bytes, distinct: tuple[str, ...] = (), top: tuple[str, ...] = ()
    ) -> Point:
        """The point stored as `data`, with the counts of the rule's `distinct` tags and the
        lists of its `top` tags that it holds (module doc)."""
        count, total, mean, low, high, var, p50, p90, p99 = _PACKED.unpack_from(data)
        end = len(data)
        anomaly, anomalous = None, False
        if end >= PACKED_SIZE + _SCORE.size and data[end - 4 :] == _SCORE_MARK:
            anomaly, flag, _ = _SCORE.unpack_from(data, end - _SCORE.size)
            anomalous = bool(flag)
            end -= _SCORE.size
        messages: tuple[tuple[str, int], ...] = ()
        if end >= PACKED_SIZE + _TRAILER.size:
            length, mark = _TRAILER.unpack_from(data, end - _TRAILER.size)
            if mark == _MESSAGES_MARK:
                end -= _TRAILER.size + length
                held = orjson.loads(data[end : end + length])
                messages = tuple((kind, count) for kind, count in held)
        lists: tuple[TopList, ...] = ()
        if end >= PACKED_SIZE + _TRAILER.size:
            length, mark = _TRAILER.unpack_from(data, end - _TRAILER.size)
            if mark == _MARK:
                end -= _TRAILER.size + length
                if top:
                    lists = _top_lists(data[end : end + length], top)
        counts = tuple(
            (tag, _COUNT.unpack_from(data, at)[0])
            for tag, at in zip(distinct, range(PACKED_SIZE, end, _COUNT.size), strict=False)
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
            lists,
            anomaly,
            anomalous,
            messages,
        )

    def fields(self, resolution_us: int) -> dict[str, Any]:
        """The point's JSON: `t` (bucket start, epoch seconds) and its statistics; a bucket
        `resolution_us` wide that held messages also has `messages`, `{type: {"count",
        "rate"}}` (per second of the bucket), as a window of an update gives them."""
        var = self.var
        fields: dict[str, Any] = {
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
            **{f"top_{listed.tag}": listed.fields() for listed in self.top},
            **(
                {}
                if self.anomaly is None
                else {"anomaly": self.anomaly, "anomalous": self.anomalous}
            ),
        }
        if not self.count:  # messages only: none of the statistics of values (module doc)
            for stat in _NONE_WITHOUT_VALUES:
                fields[stat] = None
        if self.messages:
            seconds = resolution_us / 1_000_000
            fields["messages"] = {
                kind: {"count": count, "rate": count / seconds} for kind, count in self.messages
            }
        return fields


_NONE_WITHOUT_VALUES = ("mean", "min", "max", "var", "stddev", "p50", "p90", "p99")


def _top_lists(section: bytes, tags: tuple[str, ...]) -> tuple[TopList, ...]:
    """The lists of `tags` (in that order) that a stored top section holds."""
    held = {
        tag: TopList(tag, tuple((value, count) for value, count in entries), error)
        for tag, entries, error in orjson.loads(section)
    }
    return tuple(held[tag] for tag in tags if tag in held)
