"""Series points against pandas: each point of a tier equals `resample` of the accepted events
over its bucket (count, sum, min and max exactly, mean and var to rounding, percentiles exactly
at the finest tier, whose buckets keep their values, and within the sketch's 1 % of the order
statistics around them above it). Shared by the corrections oracle and the fault scenarios
that read series back."""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import Any

import pandas as pd


def check_points(
    points: Sequence[dict[str, Any]],
    accepted: Sequence[tuple[int, float]],
    *,
    label: str,
    width_us: int,
    exact_percentiles: bool,
) -> None:
    """`points` (a series read's, of the buckets that hold any of `accepted`: (ts µs, value))
    are pandas' `resample(width_us)` of `accepted`, bucket for bucket, in order."""
    values = pd.Series(
        [v for _, v in accepted], index=pd.to_datetime([t for t, _ in accepted], unit="us")
    ).sort_index(kind="stable")
    table = values.resample(f"{width_us}us").agg(["count", "sum", "min", "max", "var"])
    table = table[table["count"] > 0]
    starts = [int(t) for t in pd.DatetimeIndex(table.index).as_unit("us").asi8]
    assert [round(p["t"] * 1_000_000) for p in points] == starts, label
    times = pd.DatetimeIndex(values.index).as_unit("us").asi8
    rows: list[dict[Hashable, Any]] = table.to_dict("records")
    for point, start, row in zip(points, starts, rows, strict=True):
        count, low, high = int(row["count"]), float(row["min"]), float(row["max"])
        assert point["count"] == count, (label, start)
        scale = max(abs(low), abs(high), 1.0) * count
        assert math.isclose(point["sum"], row["sum"], rel_tol=1e-12, abs_tol=1e-12 * scale)
        assert (point["min"], point["max"]) == (low, high), (label, start)
        if count == 1:
            assert point["var"] is None
        else:
            assert math.isclose(point["var"], row["var"], rel_tol=1e-9, abs_tol=1e-9 * scale**2)
        bucket = values[(times >= start) & (times < start + width_us)]
        for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
            if exact_percentiles:
                exact = float(bucket.quantile(q))
                assert math.isclose(point[name], exact, rel_tol=1e-12, abs_tol=1e-9), name
            else:
                low = float(bucket.quantile(q, interpolation="lower"))
                high = float(bucket.quantile(q, interpolation="higher"))
                assert low - 0.01 * abs(low) - 1e-9 <= point[name], (label, name)
                assert point[name] <= high + 0.01 * abs(high) + 1e-9, (label, name)
