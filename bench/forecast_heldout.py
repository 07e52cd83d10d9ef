"""Forecast accuracy on series no default was chosen on, every bucket an origin, and what a
fitted model costs.

The report set: NAB's real series whose rows are an hour or half an hour apart (realAdExchange's
six hourly files, ambient_temperature_system_failure hourly, nyc_taxi half-hourly), none of
which `bench.forecasts` (the 5-minute files, on which the fixed defaults and the fit's
settings were chosen) reads. Each is resampled to its spacing's means (a missing bucket
interpolated linearly), split into a past (the first 80 %) and a held-out future; every bucket
of the future is an origin, its forecasts made from everything before it and scored 1 step,
6 hours and 1 day ahead (season: a day) by sMAPE (percent, 0 to 200) and MASE (scaled by the
seasonal naive forecast's mean absolute error on the past), each series' mean over its
origins, then the median over series; and the share of held-out values inside the 80 % and
95 % intervals (median over series).

Models:

* `pushsvc holt_winters (fitted)`: `pushsvc.series.forecast_holt_winters` as a rule without
  parameters and a horizon of a day makes it (ETS(A,Ad,A), refitted once a season for
  forecasts up to the horizon, each fit spread over the values learned), learning the past
  then each future value as it comes, as the server does per closed bucket;
* `pushsvc holt_winters (fixed defaults)`: the same with the fixed parameters (alpha 0.02,
  beta 0, gamma 0.1), what a rule gave before fitting;
* `statsforecast AutoETS(model="AAA")`: fitted on the past (parameters and initial states by
  likelihood; it picks damped or not by AICc), run forward through the future with those
  parameters (`forward`);
* `seasonal naive`: the value a season before.

statsforecast is the oracle, used here only (`pip install statsforecast` into a venv of the
bench's own; not a dependency of pushsvc). NAB's data comes from a checkout of numenta/NAB:

    python -m bench.forecast_heldout --nab /path/to/NAB
    python -m bench.forecast_heldout --nab /path/to/NAB --no-statsforecast --only nyc_taxi
    python -m bench.forecast_heldout --cost-only

Then the cost: learning a bucket (fitted and fixed), one whole fit (the work a refit spreads
over the values learned) for several seasons, what the aggregator does per closed bucket of a
fitted forecast (learn, its share of the fit, the forecast's message and JSON, the kept
outlook) at the worst (while a fit is under way), and from it how many series one core keeps
within a tick.
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
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import orjson
import pandas as pd

from pushsvc.rules.forecast import ForecastRule
from pushsvc.rules.point import Point
from pushsvc.series.forecast import Predicted
from pushsvc.series.forecast_fit import EtsParams, Fit
from pushsvc.series.forecast_holt_winters import HoltWinters
from pushsvc.series.forecast_refit import FIT_LEAST, FIT_SEASONS, FIT_STEPS
from pushsvc.series.forecasting import BucketForecaster

PAST = 0.8
NAMES = ("1 step", "6 h", "1 day")
SPACINGS = {pd.Timedelta(hours=1): "1h", pd.Timedelta(minutes=30): "30m"}
Run = dict[int, list[Predicted]]
"""origin -> the predictions 1 .. the longest horizon made there."""


def load(nab: Path, only: Sequence[str]) -> dict[str, tuple[np.ndarray, int]]:
    """name -> (values, buckets a day) of the report set."""
    out: dict[str, tuple[np.ndarray, int]] = {}
    for path in sorted(nab.glob("data/real*/*.csv")):
        name = f"{path.parent.name}/{path.name}"
        if only and not any(o in name for o in only):
            continue
        frame = pd.read_csv(path, parse_dates=["timestamp"]).set_index("timestamp")
        spacing = frame.index.to_series().diff().median()
        if spacing not in SPACINGS:
            continue
        rule = "1h" if spacing == pd.Timedelta(hours=1) else "30min"
        values = frame["value"].resample(rule).mean().interpolate()
        out[name] = (values.to_numpy(dtype=float), int(pd.Timedelta(days=1) / spacing))
    return out


def horizons(day: int) -> tuple[int, int, int]:
    """1 step, 6 hours, 1 day, in buckets of a day's `day`."""
    return 1, day // 4, day


def smape(actual: float, forecast: float) -> float:
    denominator = abs(actual) + abs(forecast)
    return 0.0 if denominator == 0 else 200 * abs(actual - forecast) / denominator


def online(make: Callable[[], HoltWinters], y: np.ndarray, origins: list[int], h: int) -> Run:
    model, out, wanted = make(), {}, set(origins)
    for i, value in enumerate(y[: max(origins)]):
        model.learn(float(value))
        if i + 1 in wanted:
            out[i + 1] = model.predict(h)
    return out


def seasonal_naive(y: np.ndarray, origins: list[int], h: int, m: int) -> Run:
    out = {}
    for o in origins:
        out[o] = [
            Predicted(s, v, v, v, v, v)
            for s in range(1, h + 1)
            for v in (float(y[o - m * ((s - 1) // m + 1) + s - 1]),)
        ]
    return out


def autoets(y: np.ndarray, split: int, origins: list[int], h: int, m: int) -> Run:
    from statsforecast.models import AutoETS

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitted = AutoETS(season_length=m, model="AAA").fit(y[:split])
        out = {}
        for o in origins:
            f = fitted.forward(y=y[:o], h=h, level=[80, 95])
            out[o] = [
                Predicted(
                    s + 1,
                    float(f["mean"][s]),
                    float(f["lo-80"][s]),
                    float(f["hi-80"][s]),
                    float(f["lo-95"][s]),
                    float(f["hi-95"][s]),
                )
                for s in range(h)
            ]
        return out


def score(y: np.ndarray, split: int, m: int, run: Run, steps: Sequence[int]) -> dict[str, float]:
    """ "{measure} {horizon name}" -> the series' mean over its origins."""
    past = y[:split]
    scale = float(np.mean(np.abs(past[m:] - past[:-m]))) or 1.0
    out: dict[str, float] = {}
    for h, name in zip(steps, NAMES, strict=True):
        made = [(float(y[o + h - 1]), p[h - 1]) for o, p in run.items()]
        out[f"smape {name}"] = statistics.fmean(smape(a, p.mean) for a, p in made)
        out[f"mase {name}"] = statistics.fmean(abs(a - p.mean) for a, p in made) / scale
        out[f"cov80 {name}"] = statistics.fmean(p.lo80 <= a <= p.hi80 for a, p in made)
        out[f"cov95 {name}"] = statistics.fmean(p.lo95 <= a <= p.hi95 for a, p in made)
    return out


def accuracy(args: argparse.Namespace) -> int:
    series = load(args.nab, args.only)
    if not series:
        print(f"no hourly or half-hourly real series under {args.nab}/data", file=sys.stderr)
        return 1
    names = NAMES
    table: dict[str, dict[str, list[float]]] = {}
    for name, (y, m) in series.items():
        steps = horizons(m)
        split = int(len(y) * PAST)
        origins = list(range(split, len(y) - steps[-1] + 1))
        runs: dict[str, Run] = {
            "pushsvc holt_winters (fitted)": online(
                lambda m=m: HoltWinters(m, fit=True, horizon=m), y, origins, steps[-1]
            ),
            "pushsvc holt_winters (fixed defaults)": online(
                lambda m=m: HoltWinters(m), y, origins, steps[-1]
            ),
            "seasonal naive": seasonal_naive(y, origins, steps[-1], m),
        }
        if not args.no_statsforecast:
            runs['statsforecast AutoETS(model="AAA")'] = autoets(y, split, origins, steps[-1], m)
        for label, run in runs.items():
            for key, value in score(y, split, m, run, steps).items():
                table.setdefault(label, {}).setdefault(key, []).append(value)
        print(f"{name}: {len(y)} points, season {m}, {len(origins)} origins", file=sys.stderr)
    print(f"{len(series)} series; median over series (in brackets: beats seasonal naive on n)")
    naive = table["seasonal naive"]
    for metric in ("mase", "smape"):
        keys = [f"{metric} {n}" for n in names]
        print(f"| {metric} | " + " | ".join(names) + " |")
        print("| --- |" + " ---: |" * len(names))
        for label, figures in table.items():
            cells = []
            for key in keys:
                wins = sum(a < b for a, b in zip(figures[key], naive[key], strict=True))
                cells.append(f"{statistics.median(figures[key]):.3f} ({wins})")
            print(f"| {label} | " + " | ".join(cells) + " |")
    print("interval coverage, median over series (80 % / 95 %):")
    for label, figures in table.items():
        if label == "seasonal naive":
            continue
        cells = [
            f"{statistics.median(figures[f'cov80 {n}']):.3f} / "
            f"{statistics.median(figures[f'cov95 {n}']):.3f}"
            for n in names
        ]
        print(f"| {label} | " + " | ".join(cells) + " |")
    finite = all(math.isfinite(v) for f in table.values() for x in f.values() for v in x)
    return 0 if finite else 1


def simulated(n: int, m: int, seed: int = 7) -> list[float]:
    """A daily-shaped series with noise and a slow drift (for the cost only)."""
    rng = random.Random(seed)
    return [
        10 + 3 * math.sin(2 * math.pi * t / m) + t / (50 * m) + rng.gauss(0, 0.5) for t in range(n)
    ]


def costs() -> None:
    print("one whole fit (what a refit spreads over the values learned), pure Python:")
    for m in (24, 48, 288, 1440):
        window = max(FIT_SEASONS * m, FIT_LEAST)
        values = array("d", simulated(window, m))
        fit = Fit(m, values, EtsParams(0.1, 0.01, 0.045, 0.95), m)
        started = time.perf_counter()
        learned = 0
        while not fit.done:
            fit.advance(FIT_STEPS)
            learned += 1
        took = time.perf_counter() - started
        print(
            f"  season {m}, window {window}, horizon {m}: {took * 1e3:.0f} ms, "
            f"{fit.search.evals} passes, spread over {learned} values learned"
        )
    n, m = 20_000, 288
    y = simulated(n, m)
    for label, fitted in (("fitted", True), ("fixed", False)):
        model = HoltWinters(m, fit=fitted, horizon=m)
        started = time.perf_counter()
        for v in y:
            model.learn(v)
        took = (time.perf_counter() - started) * 1e6 / n
        print(f"learning a bucket, {label}, season {m}, {n} values: {took:.2f} µs (mean)")
    tier = 60_000_000
    for m, horizon in ((288, 12), (1440, 360)):
        for fitted in (True, False):
            rule = ForecastRule(tier, horizon, "holt_winters", "mean", season=m, fit=fitted)
            # A fit's cost per close does not depend on the horizon (FIT_STEPS a value).
            forecaster = BucketForecaster(rule)
            values = simulated(8 * m, m)
            took: list[float] = []
            for i, v in enumerate(values):
                point = Point(i * tier, 1, v, v, v, v, None, v, v, v)
                started = time.perf_counter()
                forecaster.learn(point)
                orjson.dumps(forecaster.message_fields())
                forecaster.kept()
                took.append((time.perf_counter() - started) * 1e6)
            late = sorted(took[3 * m :])  # fits under way from the third season on
            mean_us = statistics.fmean(took)
            label = "fitted" if fitted else "fixed"
            print(
                f"per closed bucket, {label}, season {m}, horizon {horizon}: mean {mean_us:.0f} "
                f"µs, p99 {late[int(0.99 * len(late))]:.0f} µs, max {late[-1]:.0f} µs -> "
                f"{int(1e6 / mean_us):,} series' closes a second on one core"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--nab", type=Path, help="a checkout of numenta/NAB")
    parser.add_argument("--only", action="append", default=[], help="files whose name has this")
    parser.add_argument("--no-statsforecast", action="store_true")
    parser.add_argument("--cost-only", action="store_true")
    args = parser.parse_args(argv)
    status = 0
    if not args.cost_only:
        if args.nab is None:
            parser.error("--nab is needed, unless --cost-only")
        status = accuracy(args)
    costs()
    return status


if __name__ == "__main__":
    sys.exit(main())
