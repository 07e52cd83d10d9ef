"""The pandas oracle of derived metrics (`[[derive]]`, docs/design.md): each source
`resample(every)`, its buckets combined over a term's range (count and sum add, min and max
take theirs, mean = sum / count, rate = count / range), then the expression; None where the
value is undefined (division by zero, the mean, min or max of no events), where nothing is
appended."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence

import pandas as pd
from harness.live import request

S = 1_000_000

Events = Sequence[tuple[float, int]]
"""(value, ts µs) of one source."""


class Buckets:
    """One source's `resample(every)`: count, sum, min and max per bucket start (µs)."""

    def __init__(self, events: Events, every_us: int) -> None:
        self.every_us = every_us
        if not events:
            self._frame = pd.DataFrame(columns=["count", "sum", "min", "max"])
            return
        index = pd.to_datetime([ts for _, ts in events], unit="us")
        series = pd.Series([v for v, _ in events], index=index).sort_index()
        resampled = series.resample(pd.Timedelta(microseconds=every_us))
        frame = pd.DataFrame(
            {
                "count": resampled.count(),
                "sum": resampled.sum(),
                "min": resampled.min(),
                "max": resampled.max(),
            }
        )
        frame.index = pd.DatetimeIndex(frame.index).as_unit("us").astype("int64")
        self._frame = frame[frame["count"] > 0]

    @property
    def first_start_us(self) -> int | None:
        return None if self._frame.empty else int(self._frame.index[0])

    def stat(self, stat: str, range_us: int, t_us: int) -> float | None:
        """`stat[range]` at boundary `t`: over the buckets starting in `[t - range, t)`."""
        frame = self._frame
        window = frame[(frame.index >= t_us - range_us) & (frame.index < t_us)]
        count = int(window["count"].sum())
        if stat == "count":
            return float(count)
        if stat == "rate":
            return count / (range_us / S)
        if stat == "sum":
            return float(window["sum"].sum())
        if not count:
            return None
        if stat == "mean":
            return float(window["sum"].sum()) / count
        return float(window["min"].min() if stat == "min" else window["max"].max())


Term = Callable[[str, int, str], float | None]
"""`term(stat, range µs, topic)`: a term's value at one boundary, or None."""
Formula = Callable[[Term], float | None]
"""The expression in Python: given `term`, the value or None."""


def expected(
    sources: Mapping[str, Events],
    every_us: int,
    formula: Formula,
    *,
    lateness_us: int,
    first_us: int | None = None,
    clocks: Mapping[str, int] | None = None,
) -> list[tuple[int, float]]:
    """(t µs, value) of every boundary an uninterrupted deriver appends: from the end of the
    earliest bucket of any source (or `first_us`) to the newest boundary every source's
    clock (its newest event, or `clocks`) has passed by the allowed lateness."""
    buckets = {topic: Buckets(events, every_us) for topic, events in sources.items()}
    starts = [b.first_start_us for b in buckets.values() if b.first_start_us is not None]
    first = first_us if first_us is not None else min(starts) + every_us
    clock = min(
        (clocks or {}).get(topic, max((ts for _, ts in events), default=0))
        for topic, events in sources.items()
    )
    last = (clock - lateness_us) // every_us * every_us

    def at(t: int) -> Term:
        return lambda stat, range_us, topic: buckets[topic].stat(stat, range_us, t)

    out = []
    for t in range(first, last + every_us, every_us):
        value = formula(at(t))
        if value is not None and math.isfinite(value):
            out.append((t, value))
    return out


def divide(left: float | None, right: float | None) -> float | None:
    """`/` as a derived value has it: undefined when either side is, or the divisor is 0."""
    if left is None or right is None or right == 0:
        return None
    return left / right


def derived_events(port: int, topic: str) -> list[tuple[int, float]]:
    """(ts µs, value) of every event the derived topic's history holds, oldest first."""
    status, _, body = request(port, "GET", f"/topics/{topic}/history?limit=10000")
    assert status == 200, body
    return [
        (round(u["event"]["ts"] * S), u["event"]["value"])
        for u in json.loads(body)["updates"]
        if u.get("reason") == "event"
    ]


def assert_close(got: Sequence[tuple[int, float]], want: Sequence[tuple[int, float]]) -> None:
    """The same boundaries, the same values to 1e-9 (relative, or absolute near 0)."""
    assert [t for t, _ in got] == [t for t, _ in want], (got, want)
    for (t, value), (_, wanted) in zip(got, want, strict=True):
        assert math.isclose(value, wanted, rel_tol=1e-9, abs_tol=1e-9), (t, value, wanted)
