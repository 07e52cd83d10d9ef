"""Analytics rules: what a rule's extra work costs per event, and what a long window holds.

    python -m bench.rules                    # every segment, one round
    python -m bench.rules --rounds 3 --json  # alternating rounds, one JSON object per row

Segments (events/s of process CPU through `Aggregator.apply_events`, batches of 100, one
topic, timestamps 3 ms apart unless said; the first half of each stream is fed untimed):

* `plain` / `grouped`: every statistic over 10s, 1m and 5m, without and with `group_by` on a
  tag of 100 values (the update then carries the event's group too: two sets of windows and
  two JSON encodings per event). The goal is for `grouped` to keep at least half of `plain`.
* `long`: a `1h` sketch window, `last = [100]` and `rate`, every statistic, at 10,000 events/s
  (timestamps 100 µs apart); with its checkpoint's size (what Redis holds and a cold
  aggregator reads), the topic's Python memory (tracemalloc), and the time to restore it.
* `tags`: the design's example rule (`1m` and a `1h` sketch window, every statistic) with
  `distinct` on one tag and `top` k=10 on another, each taking 100,000 different values an
  hour (events 10 ms apart, the first hour fed untimed), against the same rule without them:
  `events_per_s` with, `without_events_per_s`, their `ratio` (the goal: at least 0.5), and
  the tagged topic's checkpoint size. The two aggregators take the timed hour in turns of
  5,000 events (about a third of a second each): this machine's speed drifts by 10-20 %
  over the minute one of them would take alone, and in turns the drift falls on both.
* `tag_parts`: the same stream and rule with `distinct` alone, `top` alone, and neither, in
  events/s, in turns likewise (what each part costs, where `tags` gives both against
  neither).
* `river_grouped`: River 0.26's `TimeRolling(Mean)` per window and per group (100 groups, 3
  windows), `update` then `get` per event: one statistic where pushsvc computes ten.
* `pandas_grouped`: `groupby(tag).rolling(w)` recomputed over the events so far, per event,
  mean only, on a short prefix (its cost grows with the stream; said as measured).
"""

from __future__ import annotations

import argparse
import json
import time
import tracemalloc
from collections.abc import Callable
from datetime import datetime, timedelta

from pushsvc.aggregate.aggregator import Aggregator
from pushsvc.core.event import Event
from pushsvc.rules.analytics import Rule, Rules, default_rule

S = 1_000_000
ALL = ("count", "sum", "mean", "min", "max", "var", "stddev", "p50", "p90", "p99", "rate")
WINDOWS = (10 * S, 60 * S, 300 * S)
T0 = 1_700_000_000 * S
BATCH = 100
TURN = 5_000


def _events(n: int, step_us: int, groups: int) -> list[Event]:
    return [
        Event(((i * 7919) % 1000) / 10.0 + (i % 7), T0 + i * step_us, {"k": f"g{i * 31 % groups}"})
        for i in range(n)
    ]


def _aggregator(rule: Rule) -> Aggregator:
    rules = Rules([rule], default_rule(WINDOWS, ALL[:10]))
    return Aggregator(rules=rules, wall_clock=lambda: 0, topic_ttl_us=3600 * S)


def _timed(aggregator: Aggregator, events: list[Event]) -> float:
    """Feed the first half untimed, time the second: events/s of process CPU."""
    half = len(events) // 2
    for start in range(0, half, BATCH):
        aggregator.apply_events("t", events[start : start + BATCH])
    started = time.process_time()
    for start in range(half, len(events), BATCH):
        aggregator.apply_events("t", events[start : start + BATCH])
    return (len(events) - half) / (time.process_time() - started)


def _in_turns(aggregators: list[Aggregator], events: list[Event]) -> list[float]:
    """Feed each the first half untimed, then the second half in turns of ``TURN`` events,
    each aggregator in turn: the events/s of process CPU of each."""
    half = len(events) // 2
    for aggregator in aggregators:
        for start in range(0, half, BATCH):
            aggregator.apply_events("t", events[start : start + BATCH])
    spent = [0.0] * len(aggregators)
    for turn in range(half, len(events), TURN):
        for i, aggregator in enumerate(aggregators):
            started = time.process_time()
            for start in range(turn, min(turn + TURN, len(events)), BATCH):
                aggregator.apply_events("t", events[start : start + BATCH])
            spent[i] += time.process_time() - started
    return [(len(events) - half) / took for took in spent]


def plain(n: int) -> dict[str, object]:
    rule = Rule(1, ("t",), WINDOWS, (), ALL)
    return {"events_per_s": round(_timed(_aggregator(rule), _events(n, 3000, 100)))}


def grouped(n: int) -> dict[str, object]:
    rule = Rule(1, ("t",), WINDOWS, (), ALL, ("k",), 100)
    return {"events_per_s": round(_timed(_aggregator(rule), _events(n, 3000, 100)))}


def long(n: int) -> dict[str, object]:
    rule = Rule(1, ("t",), (3600 * S,), (100,), ALL)
    aggregator = _aggregator(rule)
    events = _events(n, 100, 1)
    rate = _timed(aggregator, events)
    # Memory apart: tracemalloc slows every allocation several times over.
    traced = _aggregator(rule)
    tracemalloc.start()
    for start in range(0, len(events), BATCH):
        traced.apply_events("t", events[start : start + BATCH])
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    checkpoint = aggregator.checkpoint("t", (1, 0))
    assert checkpoint is not None
    size = sum(len(value) for value in checkpoint.fields().values())
    cold = _aggregator(rule)
    started = time.perf_counter()
    cold.restore(checkpoint)
    cold.end_replay()
    restore_s = time.perf_counter() - started
    return {
        "events_per_s": round(rate),
        "simulated_s": n * 100 / S,
        "checkpoint_bytes": size,
        "python_bytes_traced": held,
        "restore_ms": round(restore_s * 1000, 2),
    }


def _tag_events(n: int) -> list[Event]:
    """Events 10 ms apart; users cycle through 100,000 values an hour in a scattered order,
    products through 100,000 with a few far more frequent than the rest."""
    golden = 0.618033988749895
    return [
        Event(
            ((i * 7919) % 1000) / 10.0,
            T0 + i * 10_000,
            {
                "user": f"u{(i * 7919) % 100_000}",
                "product": f"p{int(100_000 * ((i * golden) % 1.0) ** 3)}",
            },
        )
        for i in range(n)
    ]


def tags(n: int) -> dict[str, object]:
    windows = (60 * S, 3600 * S)
    events = _tag_events(n)
    rule = Rule(1, ("t",), windows, (), ALL, distinct=("user",), top=(("product", 10),))
    aggregator = _aggregator(rule)
    base, with_tags = _in_turns(
        [_aggregator(Rule(1, ("t",), windows, (), ALL)), aggregator], events
    )
    checkpoint = aggregator.checkpoint("t", (1, 0))
    assert checkpoint is not None
    return {
        "events_per_s": round(with_tags),
        "without_events_per_s": round(base),
        "ratio": round(with_tags / base, 3),
        "simulated_s": n * 10_000 / S,
        "checkpoint_bytes": sum(len(value) for value in checkpoint.fields().values()),
    }


def tag_parts(n: int) -> dict[str, object]:
    windows = (60 * S, 3600 * S)
    events = _tag_events(n)
    parts = {
        "without_events_per_s": {},
        "distinct_events_per_s": {"distinct": ("user",)},
        "top_events_per_s": {"top": (("product", 10),)},
    }
    rates = _in_turns(
        [_aggregator(Rule(1, ("t",), windows, (), ALL, **fields)) for fields in parts.values()],
        events,
    )
    row: dict[str, object] = {name: round(rate) for name, rate in zip(parts, rates, strict=True)}
    row["events_per_s"] = row["without_events_per_s"]
    return row


def river_grouped(n: int) -> dict[str, object]:
    try:
        from river import stats, utils
    except ImportError:
        return {
            "events_per_s": None,
            "skipped": "River is not installed: pip install -e '.[bench]'",
        }

    rolling: dict[str, list[utils.TimeRolling]] = {}
    events = _events(n, 3000, 100)
    started = time.process_time()
    for event in events:
        key = (event.tags or {})["k"]
        windows = rolling.get(key)
        if windows is None:
            windows = rolling[key] = [
                utils.TimeRolling(stats.Mean, period=timedelta(microseconds=w)) for w in WINDOWS
            ]
        at = datetime.fromtimestamp(event.ts_us / S)
        for window in windows:
            window.update(event.value, t=at)
            window.get()
    return {"events_per_s": round(n / (time.process_time() - started)), "statistics": "mean"}


def pandas_grouped(n: int) -> dict[str, object]:
    import pandas as pd

    events = _events(n, 3000, 100)
    frame = pd.DataFrame(
        {"k": [(e.tags or {})["k"] for e in events], "v": [e.value for e in events]},
        index=pd.to_datetime([e.ts_us for e in events], unit="us"),
    )
    started = time.process_time()
    for i in range(1, n + 1):
        seen = frame.iloc[:i]
        for width in WINDOWS:
            seen.groupby("k")["v"].rolling(pd.Timedelta(width, unit="us")).mean()
    return {"events_per_s": round(n / (time.process_time() - started), 1), "statistics": "mean"}


SEGMENTS: dict[str, tuple[Callable[[int], dict[str, object]], int]] = {
    "plain": (plain, 40_000),
    "grouped": (grouped, 40_000),
    "long": (long, 600_000),
    "tags": (tags, 720_000),
    "tag_parts": (tag_parts, 720_000),
    "river_grouped": (river_grouped, 20_000),
    "pandas_grouped": (pandas_grouped, 200),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--only", help="comma-separated segments")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every stream's length")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    chosen = args.only.split(",") if args.only else list(SEGMENTS)
    for round_ in range(1, args.rounds + 1):
        for name in chosen:
            run, n = SEGMENTS[name]
            row = {"round": round_, "segment": name, "events": int(n * args.scale)}
            row.update(run(int(n * args.scale)))
            print(json.dumps(row) if args.json else "  ".join(f"{k}={v}" for k, v in row.items()))


if __name__ == "__main__":
    main()
