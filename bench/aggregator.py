"""Aggregator benchmark (issue 3): events/s per core of the rolling-window engine, next to River's
``TimeRolling`` and pandas rolling recomputed per event, and the per-event latency tail.

    python bench/aggregator.py                 # readable table, about two minutes
    python bench/aggregator.py --json          # one JSON object
    python bench/aggregator.py --smoke --json  # tiny streams, seconds (CI): runs and checks

(From a checkout without ``pip install -e .``: ``PYTHONPATH=src python bench/aggregator.py``.)

Method.

* Stream: seeded, integer µs timestamps 3000 µs apart (333 events/s: the 5m window holds 100k
  on-time events plus the late ones), values a random walk + noise + rare spikes rounded to 3
  decimals, ~3% late events up to the allowed lateness (5 s) behind the clock. The events up to
  5m + 5 s of event time are fed untimed first: what is timed is steady state, every window full
  and evicting on every event.
* One "event" is what the aggregator does per event: insert it, then read every statistic of
  every window (``insert`` + ``summary``, or ``insert_many`` which returns one summary per event).
* Rates are events per second of process CPU time ("per core": everything is single-threaded),
  the median of ``--repeats`` consecutive timed segments; wall-clock rates are reported too.
* ``aggregator_all_3w``: the lateness rule and ``Aggregator.apply_events`` (windows, update JSON
  per event), as the embedded broker runs them for a POSTed batch.
* River: per window, ``TimeRolling`` around ``stats.Sum``, ``stats.Mean`` and ``stats.Var``
  (count is the Mean's ``n``, stddev the root of Var); ``update(x, t=datetime)`` then ``get()``
  per event. River cannot roll ``Count``, ``Min`` or ``Max`` by time (no ``revert``), so it does
  less work than ``scalar_3w``: the ratio flatters River. ``..._var_only`` is the cheapest River
  setup (one ``TimeRolling(Var)`` per window, sum = mean * n). River starts timing in the state
  the whole stream leaves it in, built by feeding each window only the events it holds then.
* pandas: per event, the time-ordered buffer is updated and ``Series.rolling(w)`` recomputed
  over each window's events (7 statistics, read at the newest row), at the real window fill.
* Latency: ``perf_counter_ns`` around each event's ``insert`` + ``summary`` (all statistics,
  3 windows), nearest-rank percentiles; the thread's CPU time per event too (``*_cpu_*``): a
  wall-clock outlier can be the scheduler preempting us, a CPU-time outlier is the engine's own.
* Check (in every run, on a small stream): every summary of every run mode and every update the
  aggregator publishes, after every event, against the test suite's oracle
  (``pushsvc.testing.oracle``: pandas rolling for count, min, max and quantiles; exact rationals
  for sum, mean, var and stddev), and River's values against the exact ones (like-for-like).
  No threshold on timings is ever checked here.
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
from typing import Any

import numpy as np
import orjson
import pandas as pd

from common import machine, median, percentiles, timed

try:
    from pushsvc.aggregator import Aggregator
    from pushsvc.events import Event, check_lateness
    from pushsvc.stats import SCALAR_STATS, STAT_KEYS, TopicWindows, WindowSpec
    from pushsvc.testing.oracle import Exact, mismatches, rolling
    from pushsvc.updates import UpdateDraft
except ImportError as exc:  # pragma: no cover - a usage error, not a code path
    sys.exit(f"cannot import pushsvc ({exc}): pip install -e . or run with PYTHONPATH=src")

S = 1_000_000  # µs per second
BASE_US = 1_763_700_000 * S
WINDOWS: tuple[tuple[int, str], ...] = ((10 * S, "10s"), (60 * S, "1m"), (300 * S, "5m"))
LATENESS_US = 5 * S
TOPIC = "bench"
MAX_FAILURES = 10

Summary = dict[str, dict[str, Any]]


# -- the stream -----------------------------------------------------------------------------


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
    widest = max(w for w, _ in WINDOWS)
    warm = int(np.searchsorted(clock, BASE_US + widest + LATENESS_US))
    return Stream(ts.tolist(), values.tolist(), warm, int(late.sum()), stride_us)


# -- the engine ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    name: str
    windows: tuple[tuple[int, str], ...]
    stats: tuple[str, ...]


def configs() -> list[Config]:
    return [
        Config("scalar_1w", WINDOWS[-1:], SCALAR_STATS),
        Config("scalar_3w", WINDOWS, SCALAR_STATS),
        Config("all_3w", WINDOWS, STAT_KEYS),
    ]


def new_windows(config: Config) -> TopicWindows:
    """A topic's windows as the aggregator makes them: with the generated fast paths."""
    widths = [w for w, _ in config.windows]
    labels = [label for _, label in config.windows]
    return WindowSpec(widths, labels, config.stats).new()


def batch_items(ts: list[int], values: list[float], size: int) -> list[Any]:
    """The arguments of each ``insert_many`` call, built before any timing starts."""
    return [
        (list(zip(ts[k : k + size], values[k : k + size], strict=True)),)
        for k in range(0, len(ts), size)
    ]


# Tight loops: these are what is timed. Each returns how many summaries it produced.


def feed_each(tw: TopicWindows, ts: list[int], values: list[float]) -> int:
    insert = tw.insert
    summary = tw.summary
    n = 0
    for t, v in zip(ts, values, strict=True):
        insert(t, v)
        summary()
        n += 1
    return n


def feed_batches(tw: TopicWindows, batches: list[Any]) -> int:
    insert_many = tw.insert_many
    n = 0
    for args in batches:
        n += len(insert_many(*args))
    return n


def latencies_ns(
    tw: TopicWindows, ts: list[int], values: list[float]
) -> tuple[list[int], list[int]]:
    """Per event: wall time, and this thread's CPU time (which excludes being preempted)."""
    wall = time.perf_counter_ns
    cpu = time.thread_time_ns
    insert = tw.insert
    summary = tw.summary
    walls: list[int] = []
    cpus: list[int] = []
    for t, v in zip(ts, values, strict=True):
        c0 = cpu()
        t0 = wall()
        insert(t, v)
        summary()
        t1 = wall()
        c1 = cpu()
        walls.append(t1 - t0)
        cpus.append(c1 - c0)
    return walls, cpus


# The same API calls, keeping every summary, for the correctness check.


def summaries_each(tw: TopicWindows, ts: list[int], values: list[float]) -> list[Summary]:
    out = []
    for t, v in zip(ts, values, strict=True):
        tw.insert(t, v)
        out.append(tw.summary())
    return out


def summaries_batches(tw: TopicWindows, batches: list[Any]) -> list[Summary]:
    out: list[Summary] = []
    for args in batches:
        out.extend(tw.insert_many(*args))
    return out


# -- timed runs -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """How much to time: ``repeats`` consecutive segments of each length, after warm-up."""

    segment: int
    repeats: int
    batch: int
    river_segment: int
    pandas_segment: int


def time_segments(
    stream: Stream, plan: Plan, length: int, segment: Callable[[int, int], Callable[[], int]]
) -> dict[str, Any]:
    """Time ``segment(a, b)()`` (built untimed) on ``repeats`` consecutive segments of the
    warm stream: the median rate per CPU second, and per wall second."""
    timings = []
    for r in range(plan.repeats):
        a = stream.warm + r * length
        timings.append(timed(segment(a, a + length)))
    counted = sum(t.count for t in timings)
    if counted != length * plan.repeats:
        raise RuntimeError(f"counted {counted} events, fed {length * plan.repeats}")
    return {
        "events_per_s": round(median([t.per_cpu_s for t in timings])),
        "wall_events_per_s": round(median([t.per_wall_s for t in timings])),
        "runs_cpu": [round(t.per_cpu_s) for t in timings],
        "events_timed": counted,
    }


def run_engine(config: Config, stream: Stream, plan: Plan, mode: str) -> dict:
    tw = new_windows(config)
    ts, values = stream.ts, stream.values

    def segment(a: int, b: int) -> Callable[[], int]:
        if mode == "batch":
            return partial(feed_batches, tw, batch_items(ts[a:b], values[a:b], plan.batch))
        return partial(feed_each, tw, ts[a:b], values[a:b])

    segment(0, stream.warm)()
    out = time_segments(stream, plan, plan.segment, segment)
    out["api"] = f"insert_many[{plan.batch}]" if mode == "batch" else "insert+summary"
    out["held_in_widest_window"] = len(tw)
    return out


def tail(durations_ns: list[int], prefix: str = "") -> dict[str, float | int]:
    qs = {"p50": 0.5, "p99": 0.99, "p999": 0.999, "p9999": 0.9999, "max": 1.0}
    us = percentiles(durations_ns, list(qs.values()))
    return {
        **{f"{prefix}{name}_us": v / 1000 for name, v in zip(qs, us, strict=True) if v is not None},
        f"{prefix}over_2ms": sum(1 for d in durations_ns if d > 2_000_000),
    }


def run_latency(config: Config, stream: Stream, plan: Plan) -> dict:
    """Wall-clock percentiles, plus CPU-time ones: on a shared machine a wall-clock outlier may
    be the scheduler (see ``involuntary_switches``); a CPU-time outlier is the engine's own."""
    tw = new_windows(config)
    feed_each(tw, stream.ts[: stream.warm], stream.values[: stream.warm])
    a, b = stream.warm, stream.warm + plan.segment * plan.repeats
    gen2 = gc.get_stats()[2]["collections"]
    switches = resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw
    walls, cpus = latencies_ns(tw, stream.ts[a:b], stream.values[a:b])
    return {
        "events": len(walls),
        **tail(walls),
        **tail(cpus, "cpu_"),
        "involuntary_switches": resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw - switches,
        "gc_gen2_collections": gc.get_stats()[2]["collections"] - gen2,
    }


def new_aggregator() -> Aggregator:
    return Aggregator(
        windows_us=[w for w, _ in WINDOWS],
        labels=[label for _, label in WINDOWS],
        wall_clock=lambda: 0,
    )


def apply(agg: Aggregator, batch: list[Event]) -> list[UpdateDraft]:
    """What the embedded broker does with a POSTed batch: the lateness rule, then the windows
    and one update body per event."""
    check_lateness(agg.clock(TOPIC), batch, LATENESS_US)
    return agg.apply_events(TOPIC, batch)


def event_batches(stream: Stream, a: int, b: int, size: int) -> list[list[Event]]:
    events = [Event(v, t) for t, v in zip(stream.ts[a:b], stream.values[a:b], strict=True)]
    return [events[k : k + size] for k in range(0, len(events), size)]


def run_aggregator(stream: Stream, plan: Plan, size: int) -> dict:
    agg = new_aggregator()

    def segment(a: int, b: int) -> Callable[[], int]:
        batches = event_batches(stream, a, b, size)
        return lambda: sum(len(apply(agg, batch)) for batch in batches)

    segment(0, stream.warm)()
    out = time_segments(stream, plan, plan.segment, segment)
    out["api"] = f"lateness + Aggregator.apply_events, batches of {size}"
    return out


# -- River ----------------------------------------------------------------------------------


def river_version() -> tuple[str | None, str | None]:
    """(version, None) when River is importable, else (None, why not)."""
    try:
        import river
        from river import stats, utils  # noqa: F401
    except ImportError as exc:
        return None, f"River is not importable ({exc}); pip install 'river>=0.21'"
    return river.__version__, None


def to_datetimes(ts: Sequence[int]) -> list[datetime]:
    base = datetime(2025, 11, 21)
    return [base + timedelta(microseconds=t - BASE_US) for t in ts]


class RiverWindows:
    """River's ``TimeRolling`` per window: ``per_stat`` (Sum, Mean, Var) or ``var_only``."""

    def __init__(self, variant: str) -> None:
        from river import stats, utils

        self.variant = variant
        kinds = (stats.Sum, stats.Mean, stats.Var) if variant == "per_stat" else (stats.Var,)
        self.rollers = [
            tuple(utils.TimeRolling(kind, period=timedelta(microseconds=w)) for kind in kinds)
            for w, _ in WINDOWS
        ]

    def prime(self, stream: Stream, start: int) -> None:
        """The state after feeding events ``[0, start)``: each window gets the events it holds."""
        ts = np.asarray(stream.ts[:start])
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


def run_river(stream: Stream, plan: Plan, variant: str) -> dict:
    river = RiverWindows(variant)
    river.prime(stream, stream.warm)

    def segment(a: int, b: int) -> Callable[[], int]:
        return partial(river.feed, to_datetimes(stream.ts[a:b]), stream.values[a:b])

    out = time_segments(stream, plan, plan.river_segment, segment)
    out["api"] = f"TimeRolling({'Sum|Mean|Var' if variant == 'per_stat' else 'Var'}) per window"
    return out


# -- pandas ---------------------------------------------------------------------------------


def pandas_window(ts: np.ndarray, values: np.ndarray, width_us: int) -> dict:
    """Window ``width_us`` at the newest row of time-sorted events, by ``Series.rolling``."""
    index = pd.DatetimeIndex(ts.view("datetime64[us]"))
    roll = pd.Series(values, index=index).rolling(pd.Timedelta(microseconds=width_us))
    return {
        "count": int(roll.count().iat[-1]),
        "sum": float(roll.sum().iat[-1]),
        "mean": float(roll.mean().iat[-1]),
        "min": float(roll.min().iat[-1]),
        "max": float(roll.max().iat[-1]),
        "var": float(roll.var().iat[-1]),
        "stddev": float(roll.std().iat[-1]),
    }


class PandasRecompute:
    """Keeps the widest window's events in time order; recomputes rolling windows per event."""

    def __init__(self, stream: Stream, start: int) -> None:
        ts = np.asarray(stream.ts[:start], dtype=np.int64)
        values = np.asarray(stream.values[:start])
        order = np.argsort(ts, kind="stable")
        self.clock = int(ts.max())
        self.ts = ts[order]
        self.values = values[order]
        self._drop_old()

    def _drop_old(self) -> None:
        widest = max(w for w, _ in WINDOWS)
        head = int(np.searchsorted(self.ts, self.clock - widest, side="right"))
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
            out[label] = pandas_window(self.ts[lo:], self.values[lo:], w)
        return out

    def feed(self, ts: list[int], values: list[float]) -> int:
        n = 0
        for t, x in zip(ts, values, strict=True):
            self.update(t, x)
            n += 1
        return n


def run_pandas(stream: Stream, plan: Plan) -> dict:
    recompute = PandasRecompute(stream, stream.warm)

    def segment(a: int, b: int) -> Callable[[], int]:
        return partial(recompute.feed, stream.ts[a:b], stream.values[a:b])

    out = time_segments(stream, plan, plan.pandas_segment, segment)
    out["api"] = "per event: Series.rolling(w) over each window's events, 7 statistics"
    out["held_in_widest_window"] = len(recompute.ts)
    return out


# -- correctness check ----------------------------------------------------------------------


Expected = list[dict[str, tuple[dict[str, float], Exact]]]


def expectations(stream: Stream) -> Expected:
    """Per event, per window label: the oracle's order statistics (pandas) and exact moments."""
    ts, values = np.asarray(stream.ts), np.asarray(stream.values)
    clock = np.maximum.accumulate(ts)
    widest = max(w for w, _ in WINDOWS)
    states = []
    for i in range(len(ts)):
        held = np.nonzero(ts[: i + 1] > clock[i] - widest)[0]
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


def check(stream: Stream, batch: int, expected: Expected | None = None) -> dict:
    """Every run mode's output after every event against the oracle (see module doc)."""
    expected = expected or expectations(stream)
    outputs: dict[str, tuple[Config, list[Summary]]] = {}
    for config in configs():
        each = summaries_each(new_windows(config), stream.ts, stream.values)
        batches = batch_items(stream.ts, stream.values, batch)
        outputs[f"{config.name} insert+summary"] = (config, each)
        many = summaries_batches(new_windows(config), batches)
        outputs[f"{config.name} insert_many[{batch}]"] = (config, many)
    agg = new_aggregator()
    drafts = [
        d for events in event_batches(stream, 0, len(stream), batch) for d in apply(agg, events)
    ]
    updates = [orjson.loads(draft.body)["windows"] for draft in drafts]
    outputs[f"aggregator batches of {batch}"] = (configs()[-1], updates)
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
        "oracle": "pushsvc.testing.oracle: pandas rolling (count, min, max, quantiles), "
        "exact rationals (sum, mean, var, stddev)",
        "failures": failures[:MAX_FAILURES],
        "failure_count": len(failures),
    }


def check_river(stream: Stream, expected: Expected) -> dict:
    """River's values against the exact ones: is the comparison like-for-like?"""
    river = RiverWindows("per_stat")
    got = river.summaries(to_datetimes(stream.ts), stream.values)
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
                worst[stat] = max(
                    worst[stat], abs(a - float(b)) / max(abs(float(b)), 1e-12 * scale)
                )
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


# -- the report -----------------------------------------------------------------------------


def run_all(args: argparse.Namespace) -> dict:
    if args.smoke:
        plan = Plan(segment=300, repeats=3, batch=args.batch, river_segment=30, pandas_segment=3)
    else:
        plan = Plan(
            segment=args.events, repeats=args.repeats, batch=args.batch,
            river_segment=args.river_events, pandas_segment=args.pandas_events,
        )  # fmt: skip
    longest = max(plan.segment, plan.river_segment, plan.pandas_segment)
    if args.smoke:
        # 300 ms apart: the 5m window holds 1000 events, so everything stays small.
        stream = make_stream(1100 + longest * plan.repeats, stride_us=300_000, seed=args.seed)
    else:
        # 305 s of event time at 3 ms per on-time event, ~3% late events on top, some slack.
        stream = make_stream(106_000 + longest * plan.repeats, stride_us=3000, seed=args.seed)
    if len(stream) < stream.warm + longest * plan.repeats:
        raise SystemExit(f"the stream ({len(stream)} events) is too short for the plan")
    river_ver, river_missing = river_version()
    info = machine("numpy", "pandas", "sortedcontainers", "orjson", "river")
    check_stream = make_stream(3000, stride_us=300_000, seed=args.seed + 1)

    def say(msg: str) -> None:
        if not args.json:
            print(f"... {msg}", file=sys.stderr, flush=True)

    details: dict[str, Any] = {}
    headline: dict[str, int] = {}
    say("correctness check on a small stream")
    expected = expectations(check_stream)
    result_check = check(check_stream, plan.batch, expected)
    river_check = check_river(check_stream, expected) if river_ver is not None else None
    del expected  # millions of objects: a garbage collection must not walk them while timing
    gc.collect()
    for config in configs():
        modes = ["each", "batch"]
        for mode in modes:
            say(f"{config.name} {mode}")
            details[f"{config.name}_{mode}"] = run_engine(config, stream, plan, mode)
        headline[config.name] = details[f"{config.name}_{modes[-1]}"]["events_per_s"]
    say("latency")
    latency = {config.name: run_latency(config, stream, plan) for config in configs()[1:]}
    details["latency"] = latency
    say("aggregator")
    details["aggregator_all_3w"] = run_aggregator(stream, plan, plan.batch)
    details["aggregator_all_3w_batch1"] = run_aggregator(stream, plan, 1)
    river: dict[str, Any] = {}
    if river_ver is not None:
        for variant in ("per_stat", "var_only"):
            say(f"river {variant}")
            river[variant] = run_river(stream, plan, variant)
        river["check"] = river_check
    details["river"] = river or {"error": river_missing}
    say("pandas")
    details["pandas_per_event"] = run_pandas(stream, plan)
    # Other processes on the machine show up in wall-clock figures (rates and latencies).
    info["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]

    river_rate_main = river["per_stat"]["events_per_s"] if river else None
    river_rate_var = river["var_only"]["events_per_s"] if river else None
    scalar_3w = headline["scalar_3w"]
    return {
        "smoke": args.smoke,
        **headline,
        "aggregator_all_3w": details["aggregator_all_3w"]["events_per_s"],
        "river_time_rolling": river_rate_main,
        "river_time_rolling_var_only": river_rate_var,
        "pandas_per_event": details["pandas_per_event"]["events_per_s"],
        "ratio_vs_river": round(scalar_3w / river_rate_main, 1) if river_rate_main else None,
        "ratio_vs_river_var_only": round(scalar_3w / river_rate_var, 1) if river_rate_var else None,
        "p9999_event_us": latency["all_3w"]["p9999_us"],
        "max_event_us": latency["all_3w"]["max_us"],
        "p9999_event_cpu_us": latency["all_3w"]["cpu_p9999_us"],
        "max_event_cpu_us": latency["all_3w"]["cpu_max_us"],
        "check": result_check,
        "river_check": river.get("check"),
        "river": river_ver,
        "river_error": river_missing,
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


def table(result: dict) -> str:
    d = result["details"]
    rows = [("run", "events/s (CPU)", "events/s (wall)", "how")]
    runs = {key: run for key, run in d.items() if "api" in run}
    runs |= {f"river {k}": run for k, run in d["river"].items() if isinstance(run, dict)}
    runs.pop("river check", None)
    for key, run in runs.items():
        # A headline figure is the batch API's; the event-by-event run is in brackets.
        name = f"  ({key[:-5]})" if key.endswith("_each") else key.removesuffix("_batch")
        rows.append((name, run["events_per_s"], run["wall_events_per_s"], run["api"]))
    widths = [max(len(str(r[i])) for r in rows) for i in range(4)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.append("")
    for name, lat in d["latency"].items():
        for kind, p in (("wall", ""), ("CPU", "cpu_")):
            lines.append(
                f"latency {name} {kind} (µs): p50 {lat[p + 'p50_us']:.1f}  "
                f"p99 {lat[p + 'p99_us']:.1f}  p99.9 {lat[p + 'p999_us']:.1f}  "
                f"p99.99 {lat[p + 'p9999_us']:.1f}  max {lat[p + 'max_us']:.1f}  "
                f"(>2 ms: {lat[p + 'over_2ms']})"
            )
        lines.append(
            f"  during it: {lat['involuntary_switches']} involuntary context switches, "
            f"{lat['gc_gen2_collections']} gen-2 GCs"
        )
    lines.append(f"ratio vs River TimeRolling: {result['ratio_vs_river']} "
                 f"(var-only River: {result['ratio_vs_river_var_only']})")  # fmt: skip
    if result["river_error"]:
        lines.append(result["river_error"])
    if result["river_check"]:
        lines.append(f"River values vs exact: {result['river_check']}")
    c = result["check"]
    lines.append(f"correctness check: {'passed' if c['passed'] else 'FAILED'} "
                 f"({c['events']} events, {len(c['checked'])} outputs)")  # fmt: skip
    lines.extend(c["failures"])
    lines.append(f"{result['platform']}, {result['nproc']} CPUs, Python {result['python']}, "
                 f"{result['date']}, load {result['machine']['loadavg']} -> "
                 f"{result['machine']['loadavg_end']}")  # fmt: skip
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
    args = parser.parse_args(argv)
    result = run_all(args)
    if args.json:
        sys.stdout.write(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print(table(result))
    return 0 if result["check"]["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
