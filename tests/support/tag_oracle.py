"""What a window's distinct counts and top values should be, from pandas: `nunique` and
`value_counts` over the rows the window holds (docs/design.md, "Distinct counts and top
values"). Shared by the unit oracles and the system tests on both brokers.

The window kinds hold, at topic clock T:

* a time window of width w: the rows with ts in (T - w, T];
* a long window of width w (sub-buckets of s = w // 60): the rows with ts in
  (floor((T - w) / s) * s, T] -- the edge rounded out to a sub-bucket;
* a count window of N: the last N rows in time order (ties in arrival order).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

SUB_BUCKETS = 60


@dataclass(frozen=True, slots=True)
class Kind:
    """One window: its label, and `width` (µs) of a time window, with `long` for a window
    over sub-buckets, or `last` events of a count window."""

    label: str
    width: int = 0
    long: bool = False
    last: int = 0


def frame(
    rows: Sequence[tuple[int, Mapping[str, str] | None]], tags: Sequence[str]
) -> pd.DataFrame:
    """Accepted events `(ts_us, tags)` in arrival order as a frame: ts, arrival, one column per
    tag (missing: None)."""
    return pd.DataFrame(
        {
            "ts": [ts for ts, _ in rows],
            "arrival": range(len(rows)),
            **{tag: [(t or {}).get(tag) for _, t in rows] for tag in tags},
        }
    )


def held(data: pd.DataFrame, clock_us: int, kind: Kind) -> pd.DataFrame:
    """The rows window `kind` holds at topic clock `clock_us`."""
    # numpy on the columns: pandas' own operators cost more than the rest of these tests.
    ts = data["ts"].to_numpy()
    if kind.last:
        return data.iloc[np.lexsort((data["arrival"].to_numpy(), ts))[-kind.last :]]
    if kind.long:
        step = kind.width // SUB_BUCKETS
        edge = (clock_us - kind.width) // step * step
    else:
        edge = clock_us - kind.width
    return data[(ts > edge) & (ts <= clock_us)]


def distinct(rows: pd.DataFrame, tag: str) -> int:
    return int(rows[tag].nunique())


def top(rows: pd.DataFrame, tag: str, k: int) -> list[dict[str, Any]]:
    """`value_counts`, by count descending then value ascending, the first k."""
    # pandas counts; the order is a plain sort of its few pairs (a frame sorted by two columns
    # cost the oracle tests two thirds of their time).
    counts = rows[tag].value_counts()
    ranked = sorted(((str(v), int(c)) for v, c in counts.items()), key=lambda vc: (-vc[1], vc[0]))
    return [{"value": v, "count": c} for v, c in ranked[:k]]


def top_problems(got: list[dict[str, Any]], rows: pd.DataFrame, tag: str, k: int) -> list[str]:
    """What breaks the top-values promise: the exact list when no entry carries an error;
    else every listed count within its own error of the true one (`count - error <= c <=
    count`), every error at most N/m, the order, and every value whose true count beats the
    k-th listed count (or the error, if fewer than k are listed) listed."""
    if not any("error" in entry for entry in got):
        want = top(rows, tag, k)
        return [] if got == want else [f"top {tag}: got {got}, want {want}"]
    counts = rows[tag].value_counts()
    true = {str(v): int(c) for v, c in counts.items()}
    most = len(rows[rows[tag].notna()]) / max(1000, 20 * k)
    wrong = []
    for entry in got:
        c = true.get(entry["value"], 0)
        if not entry["count"] - entry["error"] <= c <= entry["count"]:
            wrong.append(f"top {tag}: {entry} but the true count is {c}")
        if not 0 <= entry["error"] <= most:
            wrong.append(f"top {tag}: {entry}'s error is not within [0, N/m = {most}]")
    if got != sorted(got, key=lambda e: (-e["count"], e["value"])):
        wrong.append(f"top {tag}: not in order")
    listed = {entry["value"] for entry in got}
    bar = got[-1]["count"] if len(got) == k else max(entry["error"] for entry in got)
    missing = [v for v, c in true.items() if c > bar and v not in listed]
    if missing:
        wrong.append(f"top {tag}: {missing[:3]} beat {bar} and are not listed")
    return wrong
