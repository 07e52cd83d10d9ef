"""Aggregator benchmark: events/s per core of the rolling-window engine, next to River's
``TimeRolling`` and pandas rolling recomputed per event, and the per-event latency tail.

    python -m bench.aggregator                 # readable table, about two minutes
    python -m bench.aggregator --json          # one JSON object
    python -m bench.aggregator --smoke --json  # tiny streams, seconds (CI): runs and checks
    python -m bench.aggregator --late-sweep    # only the aggregator with 0/1/10/50 % late events

(From a checkout without ``pip install -e .``: ``PYTHONPATH=src python -m bench.aggregator``.)

Method, and the figures: docs/performance.md, "Aggregator". Every run first checks every run
mode's output, after every event of a small stream, against the test suite's oracle
(``harness.oracle``); no threshold on timings is ever checked here.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import resource
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from statistics import median
from typing import Any

import numpy as np
import orjson
import pandas as pd
from harness.oracle import Exact, mismatches, rolling

from bench.common import machine, percentiles, timed
from pushsvc.aggregate.aggregator import Aggregator
from pushsvc.core.event import Message
from pushsvc.core.updates import UpdateDraft
from pushsvc.ingest import Event, check_lateness
from pushsvc.rules.analytics import Rules, default_rule
from pushsvc.stats import SCALAR_STATS, STAT_KEYS, TopicWindows, WindowSpec

try:
    import river
    from river import stats as river_stats
    from river import utils as river_utils

    RIVER_ERROR = None
except ImportError as exc:
    river = None
    RIVER_ERROR = f"River is not importable ({exc}); pip install 'river>=0.21'"

S = 1_000_000  # µs per second
BASE_US = 1_763_700_000 * S
WINDOWS: tuple[tuple[int, str], ...] = ((10 * S, "10s"), (60 * S, "1m"), (300 * S, "5m"))
WIDEST_US = max(w for w, _ in WINDOWS)
LATENESS_US = 5 * S
TOPIC = "bench"
MAX_FAILURES = 10

Summary = dict[str, dict[str, Any]]


@dataclass(frozen=True)
class Stream:
    """Events in arrival order; ``warm`` is the first index after the widest window filled."""

    ts: list[int]
    values: list[float]
    warm: int
    late: int
    stride_us: int

    def __len__(self) -> int:
        return len(self.ts)


def make_stream(n: int, *, stride_us: int, seed: int, late_fraction: float = 0.03) -> Stream:
    rng = np.random.default_rng(seed)
    late = rng.random(n) < late_fraction
    late[0] = False
    # A late event is `delay` behind the clock T (the newest on-time event), within the
    # lateness, so the aggregator accepts every event and counts stay predictable.
    clock = BASE_US + (np.cumsum(~late) - 1) * stride_us
    delay = rng.integers(1, LATENESS_US + 1, size=n)
    ts = np.where(late, clock - delay, clock)
    walk = 100.0 + np.cumsum(rng.normal(0.0, 0.05, n))
    spikes = (rng.random(n) < 0.001) * rng.choice([-1.0, 1.0], n) * rng.uniform(1e3, 1e4, n)
    values = np.round(walk + rng.normal(0.0, 1.0, n) + spikes, 3)
    warm = int(np.searchsorted(clock, BASE_US + WIDEST_US + LATENESS_US))
    return Stream(ts.tolist(), values.tolist(), warm, int(late.sum()), stride_us)


# -- what is timed: each feeds events and returns how many summaries (or updates) it made --------


@dataclass(frozen=True)
class Config:
    name: str
    windows: tuple[tuple[int, str], ...]
    stats: tuple[str, ...]

    def new_windows(self) -> TopicWindows:
        """A topic's windows as the aggregator makes them: with the generated fast paths."""
        return WindowSpec([w for w, _ in self.windows], [lb for _, lb in self.windows],
                          self.stats).new()  # fmt: skip


CONFIGS = (
    Config("scalar_1w", WINDOWS[-1:], SCALAR_STATS),
    Config("scalar_3w", WINDOWS, SCALAR_STATS),
    Config("all_3w", WINDOWS, STAT_KEYS),
)


def batches(ts: list[int], values: list[float], size: int) -> list[list[tuple[int, float]]]:
    """The arguments of each ``insert_many`` call, built before any timing starts."""
    return [list(zip(ts[k : k + size], values[k : k + size], strict=True))
            for k in range(0, len(ts), size)]  # fmt: skip


def feed_each(tw: TopicWindows, ts: list[int], values: list[float]) -> int:
    insert = tw.insert
    summary = tw.summary
    n = 0
    for t, v in zip(ts, values, strict=True):
        insert(t, v)
        summary()
        n += 1
    return n


def feed_batches(tw: TopicWindows, items: list[list[tuple[int, float]]]) -> int:
    insert_many = tw.insert_many
    n = 0
    for batch in items:
        n += len(insert_many(batch))
    return n


def new_aggregator() -> Aggregator:
    return Aggregator(rules=Rules((), default_rule([w for w, _ in WINDOWS], STAT_KEYS)),
                      wall_clock=lambda: 0)  # fmt: skip


MESSAGE_SIZES = {"100B": 100, "10KiB": 10240}
"""The messages-only rows: events that are a message of this much data and no value."""


def event_batches(
    ts: list[int], values: list[float], size: int, message_bytes: int = 0
) -> list[list[Event]]:
    """The batches to apply; with `message_bytes`, each event is a message of that much data
    (`{"value": v, "pad": "xx.."}`, as a producer's would be kept: compact JSON) and no value."""
    if message_bytes:
        events = [Event(None, t, None, Message("message", _message_data(v, message_bytes)))
                  for t, v in zip(ts, values, strict=True)]  # fmt: skip
    else:
        events = [Event(v, t) for t, v in zip(ts, values, strict=True)]
    return [events[k : k + size] for k in range(0, len(events), size)]


def _message_data(value: float, size: int) -> bytes:
    head = b'{"value":%s,"pad":"' % orjson.dumps(value)
    return head + b"x" * max(0, size - len(head) - 2) + b'"}'


def apply(agg: Aggregator, batch: list[Event]) -> list[UpdateDraft]:
    """What the embedded broker does with a POSTed batch: the lateness rule, then the windows
    and one update body per event."""
    check_lateness(agg.clock(TOPIC), batch, LATENESS_US)
    return agg.apply_events(TOPIC, batch)


def to_datetimes(ts: Sequence[int]) -> list[datetime]:
    base = datetime(2025, 11, 21)
    return [base + timedelta(microseconds=t - BASE_US) for t in ts]


RIVER_VARIANTS = ("per_stat", "var_only")


class RiverWindows:
    """River's ``TimeRolling`` per window: ``per_stat`` (Sum, Mean, Var) or ``var_only``."""

    def __init__(self, variant: str) -> None:
        self.variant = variant
        kinds = (river_stats.Sum, river_stats.Mean, river_stats.Var)
        self.rollers = [
            tuple(river_utils.TimeRolling(kind, period=timedelta(microseconds=w))
                  for kind in (kinds if variant == "per_stat" else kinds[2:]))
            for w, _ in WINDOWS
        ]  # fmt: skip

    def prime(self, stream: Stream) -> None:
        """The state after feeding the warm-up events: each window gets the events it holds."""
        ts = np.asarray(stream.ts[: stream.warm])
        clock = int(ts.max())
        for (w, _), rollers in zip(WINDOWS, self.rollers, strict=True):
            held = np.nonzero(ts > clock - w)[0].tolist()
            dts = to_datetimes([stream.ts[i] for i in held])
            for roller in rollers:
                for i, t in zip(held, dts, strict=True):
                    roller.update(stream.values[i], t=t)

    def feed(self, dts: list[datetime], values: list[float]) -> int:
        """Update then read every statistic, per event (what is timed)."""
        sqrt = math.sqrt
        n = 0
        if self.variant == "per_stat":
            for t, x in zip(dts, values, strict=True):
                for total, mean, var in self.rollers:
                    total.update(x, t=t)
                    mean.update(x, t=t)
                    var.update(x, t=t)
                    total.get()
                    _ = mean.n
                    mean.get()
                    v = var.get()
                    if v > 0:
                        sqrt(v)
                n += 1
        else:
            for t, x in zip(dts, values, strict=True):
                for (var,) in self.rollers:
                    var.update(x, t=t)
                    count = var.n
                    count * var.mean.get()
                    v = var.get()
                    if v > 0:
                        sqrt(v)
                n += 1
        return n

    def summaries(self, dts: list[datetime], values: list[float]) -> list[Summary]:
        out = []
        for t, x in zip(dts, values, strict=True):
            summary: Summary = {}
            for (_, label), (total, mean, var) in zip(WINDOWS, self.rollers, strict=True):
                for roller in (total, mean, var):
                    roller.update(x, t=t)
                summary[label] = {
                    "count": int(mean.n), "sum": total.get(), "mean": mean.get(),
                    "var": var.get() if mean.n > 1 else None,
                }  # fmt: skip
            out.append(summary)
        return out


PANDAS_STATS = ("count", "sum", "mean", "min", "max", "var", "std")


class PandasRecompute:
    """Keeps the widest window's events in time order; recomputes rolling windows per event."""

    def __init__(self, stream: Stream) -> None:
        ts = np.asarray(stream.ts[: stream.warm], dtype=np.int64)
        order = np.argsort(ts, kind="stable")
        self.clock = int(ts.max())
        self.ts = ts[order]
        self.values = np.asarray(stream.values[: stream.warm])[order]
        self._drop_old()

    def _drop_old(self) -> None:
        head = int(np.searchsorted(self.ts, self.clock - WIDEST_US, side="right"))
        self.ts = self.ts[head:]
        self.values = self.values[head:]

    def update(self, t: int, x: float) -> dict[str, dict[str, float]]:
        # After any equal timestamps: ties keep arrival order.
        p = int(np.searchsorted(self.ts, t, side="right"))
        self.ts = np.insert(self.ts, p, t)
        self.values = np.insert(self.values, p, x)
        if t > self.clock:
            self.clock = t
            self._drop_old()
        out = {}
        for w, label in WINDOWS:
            lo = int(np.searchsorted(self.ts, self.clock - w, side="right"))
            index = pd.DatetimeIndex(self.ts[lo:].view("datetime64[us]"))
            roll = pd.Series(self.values[lo:], index=index).rolling(pd.Timedelta(microseconds=w))
            out[label] = {stat: float(getattr(roll, stat)().iat[-1]) for stat in PANDAS_STATS}
        return out

    def feed(self, ts: list[int], values: list[float]) -> int:
        for t, x in zip(ts, values, strict=True):
            self.update(t, x)
        return len(ts)


# -- the timing harness -------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """How much to time: ``repeats`` consecutive segments of each length, after warm-up."""

    segment: int
    repeats: int
    batch: int
    river_segment: int
    pandas_segment: int


Feeder = Callable[[list[int], list[float]], Callable[[], int]]
"""Given a segment's timestamps and values, builds (untimed) the call that feeds them."""


def time_segments(
    stream: Stream, plan: Plan, api: str, feeder: Feeder, *, length: int, warm_up: bool = True
) -> dict[str, Any]:
    """Feed the warm-up events untimed (unless the contender is primed otherwise), then time
    ``repeats`` consecutive segments: the median rate per CPU second, and per wall second."""
    if warm_up:
        feeder(stream.ts[: stream.warm], stream.values[: stream.warm])()
    timings = []
    for r in range(plan.repeats):
        a = stream.warm + r * length
        timings.append(timed(feeder(stream.ts[a : a + length], stream.values[a : a + length])))
    counted = sum(t.count for t in timings)
    if counted != length * plan.repeats:
        raise RuntimeError(f"{api}: counted {counted} events, fed {length * plan.repeats}")
    return {
        "api": api,
        "events_per_s": round(median([t.per_cpu_s for t in timings])),
        "wall_events_per_s": round(median([t.per_wall_s for t in timings])),
        "runs_cpu": [round(t.per_cpu_s) for t in timings],
        "events_timed": counted,
    }


def run_engine(config: Config, stream: Stream, plan: Plan, batched: bool) -> dict[str, Any]:
    tw = config.new_windows()

    def feeder(ts: list[int], values: list[float]) -> Callable[[], int]:
        if batched:
            return partial(feed_batches, tw, batches(ts, values, plan.batch))
        return partial(feed_each, tw, ts, values)

    api = f"insert_many[{plan.batch}]" if batched else "insert+summary"
    out = time_segments(stream, plan, api, feeder, length=plan.segment)
    return {**out, "held_in_widest_window": len(tw)}


def run_aggregator(stream: Stream, plan: Plan, size: int, message_bytes: int = 0) -> dict[str, Any]:
    agg = new_aggregator()

    def feeder(ts: list[int], values: list[float]) -> Callable[[], int]:
        posted = event_batches(ts, values, size, message_bytes)
        return lambda: sum(len(apply(agg, batch)) for batch in posted)

    api = f"lateness + Aggregator.apply_events, batches of {size}"
    if message_bytes:
        api += f", messages of {message_bytes} B and no value"
    return time_segments(stream, plan, api, feeder, length=plan.segment)


def run_river(stream: Stream, plan: Plan, variant: str) -> dict[str, Any]:
    windows = RiverWindows(variant)
    windows.prime(stream)

    def feeder(ts: list[int], values: list[float]) -> Callable[[], int]:
        return partial(windows.feed, to_datetimes(ts), values)

    api = f"TimeRolling({'Sum|Mean|Var' if variant == 'per_stat' else 'Var'}) per window"
    return time_segments(stream, plan, api, feeder, length=plan.river_segment, warm_up=False)


def run_pandas(stream: Stream, plan: Plan) -> dict[str, Any]:
    recompute = PandasRecompute(stream)

    def feeder(ts: list[int], values: list[float]) -> Callable[[], int]:
        return partial(recompute.feed, ts, values)

    api = "per event: Series.rolling(w) over each window's events, 7 statistics"
    out = time_segments(stream, plan, api, feeder, length=plan.pandas_segment, warm_up=False)
    return {**out, "held_in_widest_window": len(recompute.ts)}


LATE_FRACTIONS = (0.0, 0.01, 0.10, 0.50)
"""The late sweep: these shares of events late by up to the grace (applied in place)."""


def run_late_sweep(plan: Plan, *, stride_us: int, size: int, seed: int) -> dict[str, Any]:
    """The aggregator (`run_aggregator`) on streams with each share of `LATE_FRACTIONS` late
    by up to the grace, and each rate as a share of the in-order one. A late event does not
    move the clock, so the stream is made longer to fill the widest window all the same."""
    timed_events = plan.segment * plan.repeats
    out: dict[str, Any] = {}
    for fraction in LATE_FRACTIONS:
        n = int(size / (1 - fraction)) + timed_events
        stream = make_stream(n, stride_us=stride_us, seed=seed, late_fraction=fraction)
        out[f"{fraction:.0%}"] = run_aggregator(stream, plan, plan.batch)
    in_order = out["0%"]["events_per_s"]
    for figures in out.values():
        figures["of_in_order"] = round(figures["events_per_s"] / in_order, 3)
    return out


# (key, label, quantile) of the latency tail; nearest rank.
TAIL = (("p50", "p50", 0.5), ("p99", "p99", 0.99), ("p999", "p99.9", 0.999),
        ("p9999", "p99.99", 0.9999), ("max", "max", 1.0))  # fmt: skip


def tail(durations_ns: list[int], prefix: str = "") -> dict[str, float | int]:
    us = percentiles(durations_ns, [q for _, _, q in TAIL])
    return {
        **{f"{prefix}{key}_us": v / 1000 for (key, _, _), v in zip(TAIL, us, strict=True)
           if v is not None},
        f"{prefix}over_2ms": sum(1 for d in durations_ns if d > 2_000_000),
    }  # fmt: skip


def run_latency(config: Config, stream: Stream, plan: Plan) -> dict[str, Any]:
    """Per event, wall time and this thread's CPU time (which excludes being preempted)."""
    tw = config.new_windows()
    feed_each(tw, stream.ts[: stream.warm], stream.values[: stream.warm])
    a, b = stream.warm, stream.warm + plan.segment * plan.repeats
    gen2 = gc.get_stats()[2]["collections"]
    switches = resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw
    wall, cpu = time.perf_counter_ns, time.thread_time_ns
    insert, summary = tw.insert, tw.summary
    walls: list[int] = []
    cpus: list[int] = []
    for t, v in zip(stream.ts[a:b], stream.values[a:b], strict=True):
        c0 = cpu()
        t0 = wall()
        insert(t, v)
        summary()
        t1 = wall()
        c1 = cpu()
        walls.append(t1 - t0)
        cpus.append(c1 - c0)
    return {
        "events": len(walls),
        **tail(walls),
        **tail(cpus, "cpu_"),
        "involuntary_switches": resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw - switches,
        "gc_gen2_collections": gc.get_stats()[2]["collections"] - gen2,
    }


# -- correctness check --------------------------------------------------------------------------


Expected = list[dict[str, tuple[dict[str, float], Exact]]]


def expectations(stream: Stream) -> Expected:
    """Per event, per window label: the oracle's order statistics (pandas) and exact moments."""
    ts, values = np.asarray(stream.ts), np.asarray(stream.values)
    clock = np.maximum.accumulate(ts)
    states = []
    for i in range(len(ts)):
        held = np.nonzero(ts[: i + 1] > clock[i] - WIDEST_US)[0]
        held = held[np.argsort(ts[held], kind="stable")]  # ties keep arrival order
        states.append(list(zip(ts[held].tolist(), values[held].tolist(), strict=True)))
    columns = rolling(states, [w for w, _ in WINDOWS])
    return [
        {
            label: (
                {name: column[i] for name, column in columns[w].items()},
                Exact.of(values[: i + 1][ts[: i + 1] > clock[i] - w].tolist()),
            )
            for w, label in WINDOWS
        }
        for i in range(len(ts))
    ]


def check(stream: Stream, batch: int, expected: Expected | None = None) -> dict[str, Any]:
    """Every run mode's output after every event against the oracle (see module doc)."""
    expected = expected or expectations(stream)
    ts, values = stream.ts, stream.values
    outputs: dict[str, tuple[Config, list[Summary]]] = {}
    for config in CONFIGS:
        tw = config.new_windows()
        each = []
        for t, v in zip(ts, values, strict=True):
            tw.insert(t, v)
            each.append(tw.summary())
        outputs[f"{config.name} insert+summary"] = (config, each)
        tw = config.new_windows()
        many = [s for items in batches(ts, values, batch) for s in tw.insert_many(items)]
        outputs[f"{config.name} insert_many[{batch}]"] = (config, many)
    agg = new_aggregator()
    posted = event_batches(ts, values, batch)
    updates = [orjson.loads(d.body)["windows"] for events in posted for d in apply(agg, events)]
    outputs[f"aggregator batches of {batch}"] = (CONFIGS[-1], updates)
    failures: list[str] = []
    for name, (config, got) in outputs.items():
        if len(got) != len(stream):
            failures.append(f"{name}: {len(got)} summaries for {len(stream)} events")
            continue
        labels = [label for _, label in config.windows]
        for i, summary in enumerate(got):
            if list(summary) != labels:
                failures.append(f"{name} event {i}: windows {list(summary)} != {labels}")
                continue
            for label in labels:
                order, exact = expected[i][label]
                wrong = mismatches(summary[label], order, exact, config.stats)
                failures += [f"{name} event {i} [{label}] {m}" for m in wrong]
    return {
        "passed": not failures,
        "events": len(stream),
        "late_events": stream.late,
        "checked": list(outputs),
        "oracle": "harness.oracle: pandas rolling (count, min, max, quantiles), "
        "exact rationals (sum, mean, var, stddev)",
        "failures": failures[:MAX_FAILURES],
        "failure_count": len(failures),
    }


def check_river(stream: Stream, expected: Expected) -> dict[str, Any]:
    """River's values against the exact ones: is the comparison like-for-like?"""
    got = RiverWindows("per_stat").summaries(to_datetimes(stream.ts), stream.values)
    count_mismatches = 0
    worst = {"sum": 0.0, "mean": 0.0, "var": 0.0}
    for g, want in zip(got, expected, strict=True):
        for label, (_, exact) in want.items():
            count_mismatches += g[label]["count"] != exact.n
            for stat in worst:
                a, b = g[label][stat], getattr(exact, stat)
                if a is None or b is None:
                    continue
                scale = exact.big**2 if stat == "var" else exact.big
                error = abs(a - float(b)) / max(abs(float(b)), 1e-12 * scale)
                worst[stat] = max(worst[stat], error)
    return {
        "events": len(stream),
        "count_mismatches": count_mismatches,
        "max_rel_error": {k: float(f"{v:.3g}") for k, v in worst.items()},
        "matches": count_mismatches == 0 and max(worst.values()) <= 1e-6,
        "semantics": (
            "same window (T - w, T]: River keeps t > T - period; it reverts only when a newer "
            "event moves T, so a late event older than T - w would count until then (cannot "
            "happen here: lateness 5 s < 10 s); no Count/Min/Max by time"
        ),
    }


# -- the report ---------------------------------------------------------------------------------


def run_all(args: argparse.Namespace) -> dict[str, Any]:
    if args.smoke:
        plan = Plan(segment=300, repeats=3, batch=args.batch, river_segment=30, pandas_segment=3)
        # 300 ms apart: the 5m window holds 1000 events, so everything stays small.
        size, stride_us = 1100, 300_000
    else:
        plan = Plan(args.events, args.repeats, args.batch, args.river_events, args.pandas_events)
        # 305 s of event time at 3 ms per on-time event, ~3% late events on top, some slack.
        size, stride_us = 106_000, 3000
    timed_events = max(plan.segment, plan.river_segment, plan.pandas_segment) * plan.repeats
    stream = make_stream(size + timed_events, stride_us=stride_us, seed=args.seed)
    if len(stream) < stream.warm + timed_events:
        raise SystemExit(f"the stream ({len(stream)} events) is too short for the plan")
    info = machine("numpy", "pandas", "sortedcontainers", "orjson", "river")

    def say(msg: str) -> None:
        if not args.json:
            print(f"... {msg}", file=sys.stderr, flush=True)

    say("correctness check on a small stream")
    # 300 ms apart: 3000 events are 15 minutes, the 5m window full for two thirds of them; the
    # smoke's 1500 still fill it for a third (its oracle is O(events * window): 8 s of the 10).
    check_stream = make_stream(1500 if args.smoke else 3000, stride_us=300_000, seed=args.seed + 1)
    expected = expectations(check_stream)
    result_check = check(check_stream, plan.batch, expected)
    river_check = check_river(check_stream, expected) if river else None
    del expected  # millions of objects: a garbage collection must not walk them while timing
    gc.collect()
    details: dict[str, Any] = {}
    for config in CONFIGS:
        for mode in ("each", "batch"):
            say(f"{config.name} {mode}")
            details[f"{config.name}_{mode}"] = run_engine(config, stream, plan, mode == "batch")
    say("latency")
    latency = details["latency"] = {c.name: run_latency(c, stream, plan) for c in CONFIGS[1:]}
    say("aggregator")
    details["aggregator_all_3w"] = run_aggregator(stream, plan, plan.batch)
    details["aggregator_all_3w_batch1"] = run_aggregator(stream, plan, 1)
    for label, message_bytes in MESSAGE_SIZES.items():
        say(f"aggregator, messages of {label}")
        details[f"aggregator_messages_{label}"] = run_aggregator(
            stream, plan, plan.batch, message_bytes
        )
    rivers: dict[str, Any] = {"error": RIVER_ERROR}
    if river:
        rivers = {}
        for variant in RIVER_VARIANTS:
            say(f"river {variant}")
            rivers[variant] = run_river(stream, plan, variant)
        rivers["check"] = river_check
    details["river"] = rivers
    say("pandas")
    details["pandas_per_event"] = run_pandas(stream, plan)
    # Other processes on the machine show up in wall-clock figures (rates and latencies).
    info["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]

    headline = {c.name: details[f"{c.name}_batch"]["events_per_s"] for c in CONFIGS}
    river_rates = {k: rivers[k]["events_per_s"] if river else None for k in RIVER_VARIANTS}
    ratios = {k: round(headline["scalar_3w"] / r, 1) if r else None for k, r in river_rates.items()}
    return {
        "smoke": args.smoke,
        **headline,
        "aggregator_all_3w": details["aggregator_all_3w"]["events_per_s"],
        **{
            f"aggregator_messages_{label}": details[f"aggregator_messages_{label}"]["events_per_s"]
            for label in MESSAGE_SIZES
        },
        "river_time_rolling": river_rates["per_stat"],
        "river_time_rolling_var_only": river_rates["var_only"],
        "pandas_per_event": details["pandas_per_event"]["events_per_s"],
        "ratio_vs_river": ratios["per_stat"],
        "ratio_vs_river_var_only": ratios["var_only"],
        "p9999_event_us": latency["all_3w"]["p9999_us"],
        "max_event_us": latency["all_3w"]["max_us"],
        "p9999_event_cpu_us": latency["all_3w"]["cpu_p9999_us"],
        "max_event_cpu_us": latency["all_3w"]["cpu_max_us"],
        "check": result_check,
        "river_check": river_check,
        "river": river.__version__ if river else None,
        "river_error": RIVER_ERROR,
        **{k: info[k] for k in ("platform", "nproc", "python", "date")},
        "machine": info,
        "stream": {
            "events": len(stream),
            "warm_up_events": stream.warm,
            "late_events": stream.late,
            "event_rate_per_s": round(S / stream.stride_us, 1),
            "seed": args.seed,
            "windows": [label for _, label in WINDOWS],
            "repeats": plan.repeats,
        },
        "units": "events per second of process CPU time (one core); latencies in µs",
        "details": details,
    }


def table(result: dict[str, Any]) -> str:
    d = result["details"]
    runs = {key: run for key, run in d.items() if "api" in run}
    runs |= {f"river {k}": run for k, run in d["river"].items() if k in RIVER_VARIANTS}
    rows = [("run", "events/s (CPU)", "events/s (wall)", "how")]
    for key, run in runs.items():
        # A headline figure is the batch API's; the event-by-event run is in brackets.
        name = f"  ({key[:-5]})" if key.endswith("_each") else key.removesuffix("_batch")
        rows.append((name, run["events_per_s"], run["wall_events_per_s"], run["api"]))
    widths = [max(len(str(r[i])) for r in rows) for i in range(4)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.append("")
    for name, lat in d["latency"].items():
        for kind, p in (("wall", ""), ("CPU", "cpu_")):
            figures = "  ".join(f"{label} {lat[f'{p}{key}_us']:.1f}" for key, label, _ in TAIL)
            lines.append(f"latency {name} {kind} (µs): {figures}  (>2 ms: {lat[p + 'over_2ms']})")
        lines.append(f"  during it: {lat['involuntary_switches']} involuntary context switches, "
                     f"{lat['gc_gen2_collections']} gen-2 GCs")  # fmt: skip
    c, m = result["check"], result["machine"]
    lines += [
        f"ratio vs River TimeRolling: {result['ratio_vs_river']} "
        f"(var-only River: {result['ratio_vs_river_var_only']})",
        *([result["river_error"]] if result["river_error"] else []),
        *([f"River values vs exact: {result['river_check']}"] if result["river_check"] else []),
        f"correctness check: {'passed' if c['passed'] else 'FAILED'} "
        f"({c['events']} events, {len(c['checked'])} outputs)",
        *c["failures"],
        f"{result['platform']}, {result['nproc']} CPUs, Python {result['python']}, "
        f"{result['date']}, load {m['loadavg']} -> {m['loadavg_end']}",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--smoke", action="store_true", help="tiny streams (seconds), for CI")
    parser.add_argument("--seed", type=int, default=2025)
    parser.add_argument("--events", type=int, default=100_000, help="events per timed segment")
    parser.add_argument("--repeats", type=int, default=3, help="timed segments (median)")
    parser.add_argument("--batch", type=int, default=100, help="events per batch")
    parser.add_argument("--river-events", type=int, default=300, help="per River segment")
    parser.add_argument("--pandas-events", type=int, default=10, help="per pandas segment")
    parser.add_argument(
        "--late-sweep", action="store_true", help="only the aggregator with 0/1/10/50 %% late"
    )
    args = parser.parse_args(argv)
    if args.late_sweep:
        plan = Plan(args.events, args.repeats, args.batch, args.river_events, args.pandas_events)
        sweep = run_late_sweep(plan, stride_us=3000, size=106_000, seed=args.seed)
        sweep = {"machine": machine("numpy", "pandas", "sortedcontainers", "orjson"), **sweep}
        if args.json:
            sys.stdout.write(orjson.dumps(sweep, option=orjson.OPT_INDENT_2).decode() + "\n")
        else:
            for share, figures in sweep.items():
                if share != "machine":
                    print(
                        f"{share:>4} late: {figures['events_per_s']:>9,} events/s per CPU s "
                        f"({figures['of_in_order']:.2f} of in order)"
                    )
        return 0
    result = run_all(args)
    if args.json:
        sys.stdout.write(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print(table(result))
    return 0 if result["check"]["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
