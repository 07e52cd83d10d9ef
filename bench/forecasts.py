"""Forecast accuracy on NAB's real series, and the models' cost per closed bucket.

Every real NAB file (data/real*/) whose rows are 5 minutes apart (the median spacing) is
resampled to 5-minute means (a missing bucket interpolated linearly), as a rule's `5m` tier
gives them. Each series is split into a past (the first 80 %) and a held-out future (the rest).
Forecasts are made from origins every 12 points through the future, each from everything up
to its origin, and scored at horizons 1, 12 and 48 points (5 minutes, 1 hour, 4 hours) by
sMAPE (percent, 0 to 200) and MASE (scaled by the in-sample mean absolute error of the
seasonal naive forecast on the past). A series' figure is its mean over origins; the table
gives the median over series, and how many series each model beats seasonal naive on.

Models (season: a day, 288 points):

* `pushsvc holt_winters`: `pushsvc.series.forecast_holt_winters` with its fixed default
  parameters, learning the past then each future value as it comes (what the server does per
  closed bucket);
* `pushsvc holt_winters (fitted)`: the same fitting its parameters to the series, as a rule
  without parameters makes it (`bench.forecast_heldout` reports it on series these files did
  not tune);
* `pushsvc linear 1h` / `6h`: `pushsvc.series.forecast_linear` over the last 12 / 72 points
  (Prometheus' `predict_linear(v[1h], ...)`);
* `seasonal naive`: the value one season before;
* `statsforecast HW`: statsforecast's `AutoETS(model="AAA")` (additive Holt-Winters), fitted on
  the past (its parameters and initial states by likelihood), then run forward through the
  future with those parameters (`forward`), as pushsvc's model runs forward;
* `statsforecast Holt`: `AutoETS(model="AAN")`, Holt's linear trend, fitted the same way.

statsforecast is the oracle and is used here only (`pip install statsforecast`; it is not a
dependency of pushsvc). NAB's data comes from a checkout of numenta/NAB (never copied here):

    python -m bench.forecasts --nab /path/to/NAB            # needs NAB/data/real*/
    python -m bench.forecasts --nab /path/to/NAB --no-statsforecast --only Twitter

It prints the table docs/performance.md keeps, how often pushsvc's model beats statsforecast's
per series, its interval coverage, then the cost per bucket in µs: learning alone, and what
the aggregator does per closed bucket (learn, forecast the horizon, its JSON; `--cost-only`
for these alone).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import orjson
import pandas as pd

from pushsvc.rules.forecast import ForecastRule
from pushsvc.rules.point import Point
from pushsvc.series.forecast_holt_winters import HoltWinters
from pushsvc.series.forecast_linear import LinearModel
from pushsvc.series.forecasting import BucketForecaster

SEASON = 288
HORIZONS = (1, 12, 48)
STRIDE = 12
PAST = 0.8

Forecaster = Callable[[np.ndarray, int, list[int]], dict[int, np.ndarray]]
"""(series, index of the first future point, origins) -> {origin: forecasts 1..48}."""


def load(nab: Path, only: Sequence[str]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for path in sorted(nab.glob("data/real*/*.csv")):
        name = f"{path.parent.name}/{path.name}"
        if only and not any(o in name for o in only):
            continue
        frame = pd.read_csv(path, parse_dates=["timestamp"]).set_index("timestamp")
        spacing = frame.index.to_series().diff().median()
        if spacing != pd.Timedelta(minutes=5):
            continue
        values = frame["value"].resample("5min").mean().interpolate()
        if len(values) * PAST < 3 * SEASON:
            continue  # two seasons to start from, one to learn on, then the future
        out[name] = values.to_numpy(dtype=float)
    return out


def smape(actual: float, forecast: float) -> float:
    denominator = abs(actual) + abs(forecast)
    return 0.0 if denominator == 0 else 200 * abs(actual - forecast) / denominator


def seasonal_naive(y: np.ndarray, split: int, origins: list[int]) -> dict[int, np.ndarray]:
    h = np.arange(1, max(HORIZONS) + 1)
    return {o: y[o - SEASON * ((h - 1) // SEASON + 1) + h - 1] for o in origins}


def online(make: Callable[[], HoltWinters | LinearModel]) -> Forecaster:
    def run(y: np.ndarray, split: int, origins: list[int]) -> dict[int, np.ndarray]:
        model, out, wanted = make(), {}, set(origins)
        for i, value in enumerate(y[: max(origins)]):
            model.learn(float(value))
            if i + 1 in wanted:
                out[i + 1] = np.array([p.mean for p in model.predict(max(HORIZONS))])
        return out

    return run


def statsforecast(model: str) -> Forecaster:
    def run(y: np.ndarray, split: int, origins: list[int]) -> dict[int, np.ndarray]:
        from statsforecast.models import AutoETS

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fitted = AutoETS(season_length=SEASON, model=model).fit(y[:split])
            return {
                o: np.asarray(fitted.forward(y=y[:o], h=max(HORIZONS))["mean"], dtype=float)
                for o in origins
            }

    return run


def models(with_statsforecast: bool) -> dict[str, Forecaster]:
    out: dict[str, Forecaster] = {
        "pushsvc holt_winters": online(lambda: HoltWinters(SEASON)),
        "pushsvc holt_winters (fitted)": online(
            lambda: HoltWinters(SEASON, fit=True, horizon=max(HORIZONS))
        ),
        "pushsvc linear 1h": online(lambda: LinearModel(12)),
        "pushsvc linear 6h": online(lambda: LinearModel(72)),
        "seasonal naive": seasonal_naive,
    }
    if with_statsforecast:
        out["statsforecast HW (AAA)"] = statsforecast("AAA")
        out["statsforecast Holt (AAN)"] = statsforecast("AAN")
    return out


def score(y: np.ndarray, split: int, forecasts: dict[int, np.ndarray]) -> dict[str, float]:
    past = y[:split]
    scale = float(np.mean(np.abs(past[SEASON:] - past[:-SEASON])))
    if scale == 0:
        scale = float(np.mean(np.abs(np.diff(past)))) or 1.0
    out: dict[str, float] = {}
    for h in HORIZONS:
        pairs = [(y[o + h - 1], f[h - 1]) for o, f in forecasts.items()]
        out[f"smape{h}"] = statistics.fmean(smape(a, f) for a, f in pairs)
        out[f"mase{h}"] = statistics.fmean(abs(a - f) for a, f in pairs) / scale
    return out


def coverage(y: np.ndarray, origins: list[int]) -> dict[int, tuple[float, float]]:
    """pushsvc holt_winters' interval coverage at each horizon: the share of the future
    values inside the 80 % and the 95 % intervals made at the origins."""
    model, wanted = HoltWinters(SEASON), set(origins)
    hits: dict[int, list[tuple[bool, bool]]] = {h: [] for h in HORIZONS}
    for i, value in enumerate(y[: max(origins)]):
        model.learn(float(value))
        if i + 1 in wanted:
            predicted = model.predict(max(HORIZONS))
            for h in HORIZONS:
                p, actual = predicted[h - 1], y[i + h]
                hits[h].append((p.lo80 <= actual <= p.hi80, p.lo95 <= actual <= p.hi95))
    return {
        h: (statistics.fmean(a for a, _ in v), statistics.fmean(b for _, b in v))
        for h, v in hits.items()
    }


def cost_us(make: Callable[[], HoltWinters | LinearModel], y: np.ndarray) -> float:
    model = make()
    values = [float(v) for v in y]
    started = time.perf_counter()
    for v in values:
        model.learn(v)
    return (time.perf_counter() - started) * 1e6 / len(values)


def close_cost_us(y: np.ndarray, rule: ForecastRule) -> float:
    """What the aggregator does per closed bucket of a forecast tier: learn the point, make the
    forecast's message (at most `MESSAGE_STEPS` of the horizon's steps) and its JSON, and the
    outlook the series keeps (`BucketForecaster`), in µs per bucket."""
    forecaster = BucketForecaster(rule)
    points = [
        Point(i * rule.tier_us, 1, float(v), float(v), float(v), float(v), None, v, v, v)
        for i, v in enumerate(y.tolist())
    ]
    started = time.perf_counter()
    for point in points:
        forecaster.learn(point)
        orjson.dumps(forecaster.message_fields())
        forecaster.kept()
    return (time.perf_counter() - started) * 1e6 / len(points)


def print_costs(longest: np.ndarray) -> None:
    print(f"cost per learned bucket, one series of {len(longest)} points:")
    print(
        f"  holt_winters (season {SEASON}): {cost_us(lambda: HoltWinters(SEASON), longest):.2f} µs"
    )
    print(f"  linear (window 72): {cost_us(lambda: LinearModel(72), longest):.2f} µs")
    five = 300_000_000
    for horizon in (12, 48, 360, 2880):
        rules = {
            "holt_winters": ForecastRule(five, horizon, "holt_winters", "mean", season=SEASON),
            "linear": ForecastRule(five, horizon, "linear", "mean", range=72),
        }
        for label, rule in rules.items():
            cost = close_cost_us(longest, rule)
            print(f"  per closed bucket, {label}, horizon {horizon}: {cost:.1f} µs")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nab", type=Path, required=True, help="a checkout of numenta/NAB")
    parser.add_argument("--only", action="append", default=[], help="files whose name has this")
    parser.add_argument("--no-statsforecast", action="store_true")
    parser.add_argument("--cost-only", action="store_true", help="only the cost per bucket")
    args = parser.parse_args(argv)
    series = load(args.nab, args.only)
    if not series:
        print(f"no 5-minute real series under {args.nab}/data", file=sys.stderr)
        return 1
    if args.cost_only:
        print_costs(max(series.values(), key=len))
        return 0
    table: dict[str, dict[str, list[float]]] = {}
    covered: dict[int, list[tuple[float, float]]] = {h: [] for h in HORIZONS}
    for name, y in series.items():
        split = int(len(y) * PAST)
        origins = list(range(split, len(y) - max(HORIZONS) + 1, STRIDE))
        for h, shares in coverage(y, origins).items():
            covered[h].append(shares)
        for label, forecaster in models(not args.no_statsforecast).items():
            scored = score(y, split, forecaster(y, split, origins))
            for key, value in scored.items():
                table.setdefault(label, {}).setdefault(key, []).append(value)
        print(f"{name}: {len(y)} points, {len(origins)} origins", file=sys.stderr)
    naive = table["seasonal naive"]
    keys = [f"{m}{h}" for m in ("smape", "mase") for h in HORIZONS]
    print(f"{len(series)} series; median over series (beats seasonal naive on n series)")
    print("| model | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for label, figures in table.items():
        cells = []
        for key in keys:
            wins = sum(a < b for a, b in zip(figures[key], naive[key], strict=True))
            cells.append(f"{statistics.median(figures[key]):.3f} ({wins})")
        print(f"| {label} | " + " | ".join(cells) + " |")
    reference = "statsforecast HW (AAA)"
    if reference in table:
        ours = table["pushsvc holt_winters"]
        beaten = [
            f"{key} {sum(a < b for a, b in zip(ours[key], table[reference][key], strict=True))}"
            for key in keys
        ]
        print(f"pushsvc holt_winters better than {reference} on n series: {', '.join(beaten)}")
    print("pushsvc holt_winters interval coverage, median over series (80 % / 95 %):")
    for h, per_series in covered.items():
        print(
            f"  h={h}: {statistics.median(a for a, _ in per_series):.3f} / "
            f"{statistics.median(b for _, b in per_series):.3f}"
        )
    print_costs(max(series.values(), key=len))
    return 0 if all(math.isfinite(v) for f in table.values() for x in f.values() for v in x) else 1


if __name__ == "__main__":
    sys.exit(main())
