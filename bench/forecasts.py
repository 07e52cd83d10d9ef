"""Forecast accuracy on real series, and what the models cost per closed bucket.

Two report sets of NAB's real files (data/real*/, loaded as bench/nab.py loads them), each
resampled to its spacing's means (a missing bucket interpolated linearly), as a rule's tier
gives them, and split into a past (the first 80 %) and a held-out future:

* the 5-minute files (the default), on which the fixed defaults and the fit's settings were
  chosen: origins every 12 points, horizons 5 minutes, 1 hour and 4 hours;
* `--heldout`: the hourly and half-hourly files (realAdExchange, ambient_temperature, nyc_taxi):
  every bucket an origin, horizons 1 step, 6 hours and 1 day. Held out when the fit was
  built; the intervals by horizon were then chosen on them and the 5-minute files;

and, with `--fresh` (no NAB needed), six series from outside NAB (`bench.fresh_series`: half-
hourly electricity demand, sea temperature, five-minutely glucose, hourly humidity at three
weather stations), which nothing was chosen on: every bucket an origin (every sixth of the
five-minute one), horizons 1 step, 6 hours and 1 day.

Each forecast is made from everything up to its origin (season: a day) and scored by sMAPE
(percent, 0 to 200), MASE (scaled by the seasonal naive forecast's mean absolute error on the
past) and the share of the actual values inside the 80 % and 95 % intervals; a series' figure
is its mean over origins, the tables the median over series (in brackets: on how many series
the model beats seasonal naive).

Models: `pushsvc holt_winters` (`pushsvc.series.forecast_holt_winters`, fixed default
parameters) and `(fitted)` (as a rule without parameters makes it, refitted for the longest
horizon), learning the past then each future value as it comes, as the server does per closed
bucket; on the 5-minute set `pushsvc linear 1h` / `6h` (`forecast_linear` over 12 / 72 points,
Prometheus' `predict_linear`); `naive (last value)` and `seasonal naive`; and the oracle,
statsforecast's `AutoETS(model="AAA")` (additive Holt-Winters) and, on the 5-minute set, `"AAN"`
(Holt), fitted
on the past by likelihood, then run forward through the future (`forward`). statsforecast is
used here only (`pip install statsforecast` into a venv of the bench's own). NAB's data comes
from a checkout of numenta/NAB (never copied here):

    python -m bench.forecasts --nab /path/to/NAB            # needs NAB/data/real*/
    python -m bench.forecasts --nab /path/to/NAB --no-statsforecast --only Twitter
    python -m bench.forecasts --heldout --nab /path/to/NAB
    python -m bench.forecasts --fresh --no-cost
    python -m bench.forecasts --cost-only [--nab /path/to/NAB]

Then the cost: learning a bucket (on the longest series, or a simulated one without --nab), one
whole fit (the work a refit spreads over the values learned) for several seasons, and what the
aggregator does per closed bucket (learn, a fit's share, the forecast's message and JSON, the
kept outlook) by horizon, with its p99 and max once fits are under way.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
import warnings
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd

from bench.fresh_series import load_fresh
from bench.nab import load_corpus
from pushsvc.rules.forecast import ForecastRule
from pushsvc.rules.point import Point
from pushsvc.series.forecast import Predicted
from pushsvc.series.forecast_fit import EtsParams, Fit
from pushsvc.series.forecast_holt_winters import HoltWinters
from pushsvc.series.forecast_linear import LinearModel
from pushsvc.series.forecast_refit import FIT_LEAST, FIT_SEASONS, FIT_STEPS
from pushsvc.series.forecasting import BucketForecaster

PAST = 0.8
DAY = pd.Timedelta(days=1)
AHEAD = ("1 step", "6 h", "1 day")
SETS = {  # spacing -> (horizon names, stride between origins)
    "5m": {pd.Timedelta(minutes=5): (("5 min", "1 h", "4 h"), 12)},
    "heldout": {pd.Timedelta(hours=1): (AHEAD, 1), pd.Timedelta(minutes=30): (AHEAD, 1)},
    "fresh": {
        pd.Timedelta(hours=1): (AHEAD, 1),
        pd.Timedelta(minutes=30): (AHEAD, 1),
        pd.Timedelta(minutes=5): (AHEAD, 6),  # an origin every half hour: some 1,900
    },
}
Run = dict[int, list[Predicted]]
"""origin -> the predictions 1 .. the longest horizon made there."""
Model = Callable[[np.ndarray, int, list[int], int, int], Run]
"""(series, index of the first future point, origins, longest horizon, season) -> Run."""


def load(nab: Path | None, only: list[str], kind: str) -> dict[str, tuple[np.ndarray, int, Any]]:
    """name -> (values, buckets a day, (horizon names, stride)) of the report set `kind`."""
    wanted = SETS[kind]
    if kind == "fresh":
        return {name: (values, int(DAY / spacing), wanted[spacing])
                for name, (values, spacing) in load_fresh(only).items()}  # fmt: skip
    assert nab is not None
    heldout = kind == "heldout"
    out = {}
    for file in load_corpus(nab):
        if not file.relative.startswith("real") or (
            only and not any(o in file.relative for o in only)
        ):
            continue
        frame = pd.Series(file.values, index=pd.to_datetime(file.seconds, unit="s"))
        spacing = frame.index.to_series().diff().median()
        if spacing not in wanted:
            continue
        values = frame.resample(spacing).mean().interpolate().to_numpy(dtype=float)
        day = int(DAY / spacing)
        if heldout or len(values) * PAST >= 3 * day:  # two seasons to start, one to learn on
            out[file.relative] = (values, day, wanted[spacing])
    return out


def horizons(day: int, kind: str) -> tuple[int, int, int]:
    return (1, 12, 48) if kind == "5m" else (1, day // 4, day)


def smape(actual: float, forecast: float) -> float:
    denominator = abs(actual) + abs(forecast)
    return 0.0 if denominator == 0 else 200 * abs(actual - forecast) / denominator


def online(make: Callable[[int, int], HoltWinters | LinearModel]) -> Model:
    def run(y: np.ndarray, split: int, origins: list[int], h: int, m: int) -> Run:
        model, out, wanted = make(m, h), {}, set(origins)
        for i, value in enumerate(y[: max(origins)]):
            model.learn(float(value))
            if i + 1 in wanted:
                out[i + 1] = model.predict(h)
        return out

    return run


def naive(y: np.ndarray, split: int, origins: list[int], h: int, m: int) -> Run:
    return {o: [Predicted(s, y[o - 1], y[o - 1], y[o - 1], y[o - 1], y[o - 1])
                for s in range(1, h + 1)] for o in origins}  # fmt: skip


def seasonal_naive(y: np.ndarray, split: int, origins: list[int], h: int, m: int) -> Run:
    at = [
        (s, float(y[o - m * ((s - 1) // m + 1) + s - 1])) for o in origins for s in range(1, h + 1)
    ]
    return {o: [Predicted(s, v, v, v, v, v) for s, v in at[i * h : (i + 1) * h]]
            for i, o in enumerate(origins)}  # fmt: skip


def statsforecast(model: str) -> Model:
    def run(y: np.ndarray, split: int, origins: list[int], h: int, m: int) -> Run:
        from statsforecast.models import AutoETS

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fitted = AutoETS(season_length=m, model=model).fit(y[:split])
            out = {}
            for o in origins:
                f = fitted.forward(y=y[:o], h=h, level=[80, 95])
                keys = ("mean", "lo-80", "hi-80", "lo-95", "hi-95")
                out[o] = [Predicted(s + 1, *(float(f[k][s]) for k in keys)) for s in range(h)]
            return out

    return run


def models(kind: str, with_statsforecast: bool) -> dict[str, Model]:
    heldout = kind != "5m"
    out: dict[str, Model] = {
        "pushsvc holt_winters": online(lambda m, h: HoltWinters(m, horizon=h)),
        "pushsvc holt_winters (fitted)": online(lambda m, h: HoltWinters(m, fit=True, horizon=h)),
    }
    if not heldout:
        out["pushsvc linear 1h"] = online(lambda m, h: LinearModel(12))
        out["pushsvc linear 6h"] = online(lambda m, h: LinearModel(72))
    out["naive (last value)"] = naive
    out["seasonal naive"] = seasonal_naive
    if with_statsforecast:
        out["statsforecast HW (AAA)"] = statsforecast("AAA")
        if not heldout:
            out["statsforecast Holt (AAN)"] = statsforecast("AAN")
    return out


def score(y: np.ndarray, split: int, m: int, run: Run, steps: dict[int, str]) -> dict[str, float]:
    """ "{measure} {horizon name}" -> the series' mean over its origins."""
    past = y[:split]
    scale = float(np.mean(np.abs(past[m:] - past[:-m])))
    scale = scale or float(np.mean(np.abs(np.diff(past)))) or 1.0
    out: dict[str, float] = {}
    for h, name in steps.items():
        made = [(float(y[o + h - 1]), p[h - 1]) for o, p in run.items()]
        out[f"smape {name}"] = statistics.fmean(smape(a, p.mean) for a, p in made)
        out[f"mase {name}"] = statistics.fmean(abs(a - p.mean) for a, p in made) / scale
        out[f"cov80 {name}"] = statistics.fmean(p.lo80 <= a <= p.hi80 for a, p in made)
        out[f"cov95 {name}"] = statistics.fmean(p.lo95 <= a <= p.hi95 for a, p in made)
    return out


def _median(figures: list[float], naive: list[float] | None) -> str:
    wins = "" if naive is None else f" ({sum(a < b for a, b in zip(figures, naive, strict=True))})"
    return f"{statistics.median(figures):.3f}{wins}"


def accuracy(args: argparse.Namespace) -> int:
    kind = "fresh" if args.fresh else "heldout" if args.heldout else "5m"
    series = load(args.nab, args.only, kind)
    if not series:
        print(f"no series of the report set {kind} (--nab {args.nab})", file=sys.stderr)
        return 1
    table: dict[str, dict[str, list[float]]] = {}
    for name, (y, m, (names, stride)) in series.items():
        steps = dict(zip(horizons(m, kind), names, strict=True))
        split, longest = int(len(y) * PAST), max(steps)
        origins = list(range(split, len(y) - longest + 1, stride))
        for label, model in models(kind, not args.no_statsforecast).items():
            run = model(y, split, origins, longest, m)
            for key, value in score(y, split, m, run, steps).items():
                table.setdefault(label, {}).setdefault(key, []).append(value)
        print(f"{name}: {len(y)} points, season {m}, {len(origins)} origins", file=sys.stderr)
    print(f"{len(series)} series; median over series (in brackets: beats seasonal naive on n)")
    naive, reference = table["seasonal naive"], table.get("statsforecast HW (AAA)")
    for metric in ("mase", "smape", "cov80", "cov95"):
        print(f"| {metric} | " + " | ".join(names) + " |\n| --- |" + " ---: |" * len(names))
        for label, figures in table.items():
            if metric.startswith("cov") and "naive" in label:
                continue
            against = None if metric.startswith("cov") else naive
            cells = [_median(figures[f"{metric} {n}"], against and against[f"{metric} {n}"])
                     for n in names]  # fmt: skip
            print(f"| {label} | " + " | ".join(cells) + " |")
    if reference is not None:
        ours = table["pushsvc holt_winters (fitted)"]
        beaten = [f"{key} {sum(a < b for a, b in zip(ours[key], reference[key], strict=True))}"
                  for key in (f"{m} {n}" for m in ("smape", "mase") for n in names)]  # fmt: skip
        wins = ", ".join(beaten)
        print(f"pushsvc holt_winters (fitted) better than statsforecast HW on n series: {wins}")
    finite = all(math.isfinite(v) for f in table.values() for x in f.values() for v in x)
    return 0 if finite else 1


def simulated(n: int, m: int, seed: int = 7) -> list[float]:
    """A daily-shaped series with noise and a slow drift (for the cost only)."""
    rng = random.Random(seed)
    return [
        10 + 3 * math.sin(2 * math.pi * t / m) + t / (50 * m) + rng.gauss(0, 0.5) for t in range(n)
    ]


def close_cost_us(values: list[float], rule: ForecastRule, m: int) -> tuple[float, float, float]:
    """What the aggregator does per closed bucket of a forecast tier: learn the point, make the
    forecast's message (at most `MESSAGE_STEPS` of the horizon's steps) and its JSON, and the
    outlook the series keeps (`BucketForecaster`): mean µs, and p99 and max from the third
    season on (fits under way)."""
    forecaster, took = BucketForecaster(rule), []
    for i, v in enumerate(values):
        point = Point(i * rule.tier_us, 1, v, v, v, v, None, v, v, v)
        started = time.perf_counter()
        forecaster.learn(point)
        orjson.dumps(forecaster.message_fields())
        forecaster.kept()
        took.append((time.perf_counter() - started) * 1e6)
    late = sorted(took[3 * m :]) or [math.nan]
    return statistics.fmean(took), late[int(0.99 * len(late))], late[-1]


def costs(real: list[float] | None) -> None:
    """`real`: the longest 5-minute series, else simulated ones."""
    longest = real or simulated(20_000, 288)
    print("one whole fit (what a refit spreads over the values learned), pure Python:")
    for m in (24, 48, 288, 1440):
        window = max(FIT_SEASONS * m, FIT_LEAST)
        fit = Fit(m, array("d", simulated(window, m)), EtsParams(0.1, 0.01, 0.045, 0.95), m)
        started, learned = time.perf_counter(), 0
        while not fit.done:
            fit.advance(FIT_STEPS)
            learned += 1
        took = time.perf_counter() - started
        print(f"  season {m}, window {window}, horizon {m}: {took * 1e3:.0f} ms, "
              f"{fit.search.evals} passes, spread over {learned} values learned")  # fmt: skip
    print(f"cost per learned bucket, one series of {len(longest)} points, season 288:")
    learners: dict[str, Callable[[], HoltWinters | LinearModel]] = {
        "holt_winters fixed": lambda: HoltWinters(288, horizon=288),
        "holt_winters fitted": lambda: HoltWinters(288, fit=True, horizon=288),
        "linear (window 72)": lambda: LinearModel(72),
    }
    for label, make in learners.items():
        model, started = make(), time.perf_counter()
        for v in longest:
            model.learn(v)
        print(f"  {label}: {(time.perf_counter() - started) * 1e6 / len(longest):.2f} µs")
    five, minute = 300_000_000, 60_000_000
    rules = []
    for tier, m, hs in ((five, 288, (12, 48, 360, 2880)), (minute, 1440, (360,))):
        for h in hs:
            rules.append(("fixed", m, ForecastRule(tier, h, season=m)))
            rules.append(("fitted", m, ForecastRule(tier, h, season=m, fit=True)))
            if m == 288:
                rules.append(("linear", m, ForecastRule(tier, h, "linear", range=72)))
    for label, m, rule in rules:
        values = real if real and m == 288 else simulated(8 * m, m)
        mean, p99, worst = close_cost_us(values, rule, m)
        print(f"per closed bucket, {label}, season {m}, horizon {rule.horizon}: mean {mean:.1f} "
              f"µs, p99 {p99:.0f} µs, max {worst:.0f} µs -> {int(1e6 / mean):,} series' closes "
              "a second on one core")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--nab", type=Path, help="a checkout of numenta/NAB")
    parser.add_argument("--heldout", action="store_true", help="the hourly and half-hourly set")
    parser.add_argument("--fresh", action="store_true", help="the series of bench.fresh_series")
    parser.add_argument("--only", action="append", default=[], help="files whose name has this")
    parser.add_argument("--no-statsforecast", action="store_true")
    parser.add_argument("--cost-only", action="store_true", help="only the cost per bucket")
    parser.add_argument("--no-cost", action="store_true", help="the accuracy only")
    args = parser.parse_args(argv)
    status = 0
    if args.nab is None and not (args.cost_only or args.fresh):
        parser.error("--nab is needed, unless --fresh or --cost-only")
    if not args.cost_only:
        status = accuracy(args)
    if args.no_cost:
        return status
    five = load(args.nab, args.only, "5m") if args.nab is not None else {}
    longest = max((y for y, _, _ in five.values()), key=len, default=None)
    costs(None if longest is None else [float(v) for v in longest])
    return status


if __name__ == "__main__":
    sys.exit(main())
