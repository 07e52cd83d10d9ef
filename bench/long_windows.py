"""Long windows: insert+summary of a ``1h`` ``LongWindows`` at 10,000 events/s of simulated
time, its state size and restore time, next to an exact ``1h`` ``TopicWindows``.

    python -m bench.long_windows                  # 2 simulated hours (72M events), ~20 min
    python -m bench.long_windows --hours 0.1 --exact-minutes 1    # a quick look

Part 1: one ``1h`` window with every statistic and ``rate``, events 100 µs apart (ts
increments of 100 µs = 10,000 events/s), lognormal values (raw doubles: the exact sums carry
all 53 bits). Every event is ``insert`` then ``summary``, as the aggregator does. One row per
10 simulated minutes: events/s (process CPU), sub-buckets held, sketch bins, ``to_state()``
bytes. Then: the slowest event at a sub-bucket boundary (when one leaves: a subtraction), the
time of ``to_state`` and ``from_state``, and the Python memory of the restored windows
(tracemalloc).

Part 2: the same stream for ``--exact-minutes`` through an exact ``1h`` ``TopicWindows``
(``WindowSpec.new()``, the generated fast path) and through ``LongWindows``: events/s and
the growth of this process's RSS, extrapolated to a full hour for the exact one (it keeps
every event of the hour; the long window keeps 60 sub-buckets).

No threshold is checked; figures and method: docs/journal/sketches.md.
"""

from __future__ import annotations

import gc
import math
import os
import time
import tracemalloc
from typing import Any

import numpy as np
from harness.procfs import rss_kb

from bench.common import Report, machine, parser
from pushsvc.stats import WindowSpec
from pushsvc.stats.layout import ALL_STATS, STAT_KEYS
from pushsvc.stats.long_windows import LongWindows

S = 1_000_000
HOUR = 3600 * S
BASE = 1_763_700_000 * S
CHUNK_MINUTES = 10


def values(rng: np.random.Generator, n: int) -> list[float]:
    out: list[float] = rng.lognormal(math.log(40), 1.0, n).tolist()
    return out


def rss() -> int:
    got = rss_kb([os.getpid()])
    assert got is not None
    return got


def long_run(report: Report, hours: float, rate: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    step = S // rate
    lw = LongWindows([HOUR], ["1h"], ALL_STATS)
    sub_us = lw.sub_bucket_us("1h")
    chunk = rate * 60 * CHUNK_MINUTES
    chunks = max(1, round(hours * 60 / CHUNK_MINUTES))
    ts = BASE
    next_edge = (ts // sub_us + 1) * sub_us
    boundary_max = 0.0
    cpu_total = 0.0
    events = 0
    report.header()
    for c in range(chunks):
        batch = values(rng, chunk)
        gc.collect()
        cpu0 = time.process_time()
        for v in batch:
            ts += step
            if ts > next_edge:
                # The first event of a sub-bucket: a sub-bucket may leave the window here.
                next_edge += sub_us
                t0 = time.perf_counter()
                lw.insert(ts, v, ts)
                lw.summary()
                boundary_max = max(boundary_max, time.perf_counter() - t0)
            else:
                lw.insert(ts, v, ts)
                lw.summary()
        cpu = time.process_time() - cpu0
        cpu_total += cpu
        events += chunk
        subs, bins = lw.footprint()["1h"]
        report.row(
            {
                "minute": (c + 1) * CHUNK_MINUTES,
                "events": events,
                "ev_per_s": chunk / cpu,
                "held": lw.summary()["1h"]["count"],
                "subs": subs,
                "bins": bins,
                "state_kb": len(lw.to_state()) / 1024,
            }
        )
    t0 = time.perf_counter()
    state = lw.to_state()
    to_state_ms = 1e3 * (time.perf_counter() - t0)
    t0 = time.perf_counter()
    back = LongWindows.from_state([HOUR], ["1h"], ALL_STATS, state)
    from_state_ms = 1e3 * (time.perf_counter() - t0)
    assert repr(back.summary()) == repr(lw.summary())
    del back
    gc.collect()
    tracemalloc.start()
    kept = LongWindows.from_state([HOUR], ["1h"], ALL_STATS, state)
    heap_kb = tracemalloc.get_traced_memory()[0] / 1024
    tracemalloc.stop()
    del kept
    return {
        "events": events,
        "ev_per_s": events / cpu_total,
        "us_per_event": 1e6 * cpu_total / events,
        "boundary_max_ms": 1e3 * boundary_max,
        "state_kb": len(state) / 1024,
        "to_state_ms": to_state_ms,
        "from_state_ms": from_state_ms,
        "heap_kb": heap_kb,
    }


def exact_vs_long(minutes: float, rate: int, seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    n = int(minutes * 60 * rate)
    step = S // rate
    batch = values(rng, n)
    rows = []
    for kind in ("exact TopicWindows", "LongWindows"):
        gc.collect()
        rss0 = rss()
        ts = BASE
        cpu0 = time.process_time()
        if kind == "LongWindows":
            lw = LongWindows([HOUR], ["1h"], ALL_STATS)
            for v in batch:
                ts += step
                lw.insert(ts, v, ts)
                lw.summary()
        else:
            tw = WindowSpec([HOUR], ["1h"], STAT_KEYS).new()
            for v in batch:
                ts += step
                tw.insert(ts, v)
                tw.summary()
        cpu = time.process_time() - cpu0
        grown_kb = rss() - rss0
        full_hour = grown_kb * (3600 * rate) / n if kind != "LongWindows" else grown_kb
        rows.append(
            {
                "kind": kind,
                "events": n,
                "ev_per_s": n / cpu,
                "rss_kb": grown_kb,
                "hour_mb": full_hour / 1024,
            }
        )
        if kind == "LongWindows":
            del lw
        else:
            del tw
    return rows


def main() -> None:
    args = parser(__doc__ or "")
    args.add_argument("--hours", type=float, default=2.0, help="simulated hours, part 1")
    args.add_argument("--rate", type=int, default=10_000, help="events per simulated second")
    args.add_argument("--exact-minutes", type=float, default=5.0, help="simulated, part 2")
    args.add_argument("--seed", type=int, default=3)
    options = args.parse_args()
    report = Report(
        [("minute", 7, "minute"), ("events", 10, "events"), ("events/s", 9, "ev_per_s"),
         ("held", 9, "held"), ("subs", 5, "subs"), ("bins", 6, "bins"),
         ("state KB", 9, "state_kb")],
        json=options.json,
    )  # fmt: skip
    report.say(f"# {machine('numpy')}")
    report.say(f"# part 1: 1h LongWindows, {options.rate} events/s, {options.hours} h")
    total = long_run(report, options.hours, options.rate, options.seed)
    report.say(
        f"# total: {total['events']} events, {total['ev_per_s']:.0f} events/s "
        f"({total['us_per_event']:.1f} µs per insert+summary); slowest sub-bucket-boundary "
        f"event {total['boundary_max_ms']:.2f} ms; state {total['state_kb']:.1f} KB, "
        f"to_state {total['to_state_ms']:.1f} ms, from_state {total['from_state_ms']:.1f} ms; "
        f"restored windows hold {total['heap_kb']:.0f} KB (tracemalloc)"
    )
    exact = Report(
        [("kind", 20, "kind"), ("events", 9, "events"), ("events/s", 9, "ev_per_s"),
         ("RSS KB", 9, "rss_kb"), ("1h MB", 8, "hour_mb")],
        json=options.json,
    )  # fmt: skip
    exact.say(
        f"# part 2: {options.exact_minutes} simulated minutes into a 1h window, exact vs long "
        "(1h MB: the exact one's RSS growth scaled to a full hour; the long one's as measured)"
    )
    exact.header()
    for row in exact_vs_long(options.exact_minutes, options.rate, options.seed):
        exact.row(row)


if __name__ == "__main__":
    main()
