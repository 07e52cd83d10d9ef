"""Count windows benchmark: events/s per core of ``CountWindows.insert`` + ``summary``.

    python -m bench.count_windows                 # table; a minute or two
    python -m bench.count_windows --json          # one JSON line per row
    python -m bench.count_windows --events 20000 --rounds 1

Rows: ``last = [100]`` and ``last = [100, 1000]``, every statistic and ``rate``, fed an
event stream at 10,000 events/s (100 µs apart) of latency-like values (log-normal, rounded to
the microsecond as decimals are), in order or with 5 % late events. A late event is late by
up to 20 ms (200 events): every one lands inside ``last1000``, about half inside ``last100``
(the rest are older than all it holds and leave it unchanged). Later than that, at this rate,
an event is in no window and costs a bisection.

Each row is timed ``--rounds`` times (process CPU time, so other processes on a shared machine
do not count against it); the median is reported with the spread. ``insert`` alone is timed
too, to show what the summary costs. Before timing, each configuration's last summary over a
short stream is checked against pandas ``rolling(N, min_periods=1)`` and the exact moments
(``harness.oracle``); a mismatch exits 1. No threshold on timings is checked here.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable
from statistics import median
from typing import Any

import pandas as pd
from harness.oracle import QUANTILES, Exact, mismatches

from bench.common import Report, machine, parser, timed
from pushsvc.stats.count_windows import CountWindows
from pushsvc.stats.layout import ALL_STATS

S = 1_000_000
BASE_US = 1_763_700_000 * S
STEP_US = 100  # 10,000 events/s
LATE_MAX_US = 20_000
CONFIGS: tuple[tuple[int, ...], ...] = ((100,), (100, 1000))
ORDERS = {"in order": 0.0, "5% late": 0.05}

Stream = list[tuple[int, float, int]]
"""(ts_us, value, clock_us) in arrival order."""


def stream(events: int, late: float, seed: int) -> Stream:
    rng = random.Random(seed)
    out: Stream = []
    clock = BASE_US
    for i in range(events):
        value = round(rng.lognormvariate(3.0, 0.8), 3)
        if i and rng.random() < late:
            ts = clock - rng.randint(0, LATE_MAX_US)
        else:
            clock += STEP_US
            ts = clock
        out.append((ts, value, clock))
    return out


def check(sizes: tuple[int, ...], events: Stream) -> list[str]:
    """What is wrong with the last summary of ``events``, against the oracles."""
    windows = CountWindows(sizes, ALL_STATS)
    for ts, value, clock in events:
        windows.insert(ts, value, clock)
    got = windows.summary()
    ordered = sorted(events, key=lambda e: e[0])  # stable: ties keep arrival order
    wrong = []
    for size in sizes:
        last = ordered[-size:]
        series = pd.Series([v for _, v, _ in ordered]).rolling(size, min_periods=1)
        order = {
            "count": series.count().iloc[-1],
            "min": series.min().iloc[-1],
            "max": series.max().iloc[-1],
        }
        for name, q in QUANTILES:
            order[name] = series.quantile(q, interpolation="linear").iloc[-1]
        row = got[f"last{size}"]
        wrong += mismatches(row, order, Exact.of([v for _, v, _ in last]), ALL_STATS)
        rate = (len(last) - 1) * S / (last[-1][0] - last[0][0])
        if row["rate"] != rate:
            wrong.append(f"last{size} rate: got {row['rate']}, want {rate}")
    return wrong


def insert_and_summary(sizes: tuple[int, ...], events: Stream) -> Callable[[], int]:
    def run() -> int:
        windows = CountWindows(sizes, ALL_STATS)
        insert, summary = windows.insert, windows.summary
        for ts, value, clock in events:
            insert(ts, value, clock)
            summary()
        return len(events)

    return run


def insert_only(sizes: tuple[int, ...], events: Stream) -> Callable[[], int]:
    def run() -> int:
        windows = CountWindows(sizes, ALL_STATS)
        insert = windows.insert
        for ts, value, clock in events:
            insert(ts, value, clock)
        return len(events)

    return run


def rate(run: Callable[[], int], rounds: int) -> tuple[float, float, float]:
    """(median, min, max) events/s per core over ``rounds`` runs."""
    rates = [timed(run).per_cpu_s for _ in range(rounds)]
    return median(rates), min(rates), max(rates)


def main() -> int:
    cli = parser(__doc__ or "")
    cli.add_argument("--events", type=int, default=200_000, help="events per run")
    cli.add_argument("--rounds", type=int, default=3, help="timed runs per row")
    args = cli.parse_args()
    report = Report(
        [
            ("last", 12, lambda r: ",".join(map(str, r["last"]))),
            ("order", 9, "order"),
            ("ev/s", 8, "events_per_s"),
            ("min", 8, "events_per_s_min"),
            ("max", 8, "events_per_s_max"),
            ("µs/event", 9, lambda r: 1e6 / r["events_per_s"]),
            ("insert ev/s", 12, "insert_events_per_s"),
        ],
        json=args.json,
    )
    report.say(f"machine: {machine('sortedcontainers', 'pandas')}")
    for sizes in CONFIGS:
        for order, late in ORDERS.items():
            wrong = check(sizes, stream(3000, late, seed=7))
            if wrong:
                report.say(f"last={list(sizes)} {order}: does not match the oracle: {wrong}")
                return 1
    report.header()
    for sizes in CONFIGS:
        for order, late in ORDERS.items():
            events = stream(args.events, late, seed=1)
            both = rate(insert_and_summary(sizes, events), args.rounds)
            alone = rate(insert_only(sizes, events), args.rounds)
            row: dict[str, Any] = {
                "last": list(sizes),
                "order": order,
                "stats": "all+rate",
                "events": args.events,
                "rounds": args.rounds,
                "events_per_s": round(both[0]),
                "events_per_s_min": round(both[1]),
                "events_per_s_max": round(both[2]),
                "insert_events_per_s": round(alone[0]),
            }
            report.row(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
