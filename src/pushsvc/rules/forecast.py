"""A rule's `forecast` field: which series tier's statistic is forecast, by which model, how far
ahead (pure; checked once, at start).

    forecast = { stat = "mean", tier = "1m", model = "holt_winters", season = "1d", horizon = "6h" }
    forecast = { stat = "p99", tier = "1m", model = "linear", range = "1h", horizon = "30m" }

`tier` must be a tier the rule's series keep (its own `series`, else the server's); `stat` is
one of `FORECAST_STATS` (`mean` unless given); `model` is `holt_winters` (unless given) or
`linear`. `horizon` (required) is how far ahead, a whole number of buckets of the tier, at most
`MAX_HORIZON` of them. `holt_winters` takes a `season` (`1d` unless given), 2 to `MAX_SEASON`
buckets; its smoothing parameters are fitted to each series (`fit`) unless the rule sets any
of `alpha`, `beta`, `gamma`, `phi`, which fixes them all (each not given at its fixed
default, as before fitting existed). `linear` takes a `range` (required), 2 to `MAX_RANGE`
buckets, as Prometheus' `predict_linear(v[range], ...)`. The models themselves are
`pushsvc.series.forecast_linear` and `pushsvc.series.forecast_holt_winters`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pushsvc.core.durations import duration_label
from pushsvc.rules.anomaly import ANOMALY_STATS
from pushsvc.rules.tiers import SeriesTier, field_table, kept_tier, positive_duration

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_BETA",
    "DEFAULT_GAMMA",
    "DEFAULT_PHI",
    "FORECAST_STATS",
    "MAX_HORIZON",
    "MAX_RANGE",
    "MAX_SEASON",
    "MODELS",
    "ForecastRule",
    "parse_forecast",
]

FORECAST_STATS = ANOMALY_STATS
"""The bucket statistics a rule may forecast: those it may score."""
MODELS = ("holt_winters", "linear")
MAX_SEASON = 10_080
"""The longest season, in buckets: a week of 1-minute buckets (80 KB of state per series)."""
MAX_RANGE = 10_080
"""The longest linear range, in buckets (8 bytes each per series)."""
MAX_HORIZON = 2_880
"""The furthest step ahead, in buckets: a forecast is this many points per closed bucket."""
DEFAULT_ALPHA = 0.02
DEFAULT_BETA = 0.0
DEFAULT_GAMMA = 0.1
DEFAULT_PHI = 1.0
"""Holt-Winters' fixed smoothing parameters where a rule fixes some but not all of them
(error-correction form, `pushsvc.series.forecast_holt_winters`; phi 1: an undamped trend);
chosen on NAB's 5-minute series (docs/performance.md)."""
_DEFAULT_SEASON = "1d"
_PARAMS = ("alpha", "beta", "gamma", "phi")
_FIELDS = ("stat", "tier", "model", "season", "range", "horizon", *_PARAMS)
_HW_ONLY = ("season", *_PARAMS)


@dataclass(frozen=True, slots=True)
class ForecastRule:
    """Forecast `stat` of the tier of resolution `tier_us`, `horizon` buckets ahead, by
    `model`: `season` buckets for `holt_winters`, its parameters fitted per series (`fit`) or
    (alpha, beta, gamma, phi), a line over the last `range` buckets for `linear` (the other's
    field is 0)."""

    tier_us: int
    horizon: int
    model: str = "holt_winters"
    stat: str = "mean"
    season: int = 0
    range: int = 0
    alpha: float = DEFAULT_ALPHA
    beta: float = DEFAULT_BETA
    gamma: float = DEFAULT_GAMMA
    phi: float = DEFAULT_PHI
    fit: bool = False

    @property
    def tier(self) -> str:
        """The tier's label, as points and streams name it (`1m`)."""
        return duration_label(self.tier_us)

    def describe(self) -> dict[str, Any]:
        """As `GET /rules` gives it (and as the rules' digest covers)."""
        described: dict[str, Any] = {
            "stat": self.stat,
            "tier": self.tier,
            "model": self.model,
            "horizon": duration_label(self.horizon * self.tier_us),
            "horizon_points": self.horizon,
        }
        if self.model == "linear":
            described["range"] = duration_label(self.range * self.tier_us)
            described["range_points"] = self.range
        else:
            described["season"] = duration_label(self.season * self.tier_us)
            described["season_points"] = self.season
            if self.fit:
                described["fit"] = True
            else:
                described["alpha"], described["beta"] = self.alpha, self.beta
                described["gamma"], described["phi"] = self.gamma, self.phi
        return described


def parse_forecast(given: object, tiers: Sequence[SeriesTier]) -> ForecastRule:
    """The `forecast` field of a rule keeping `tiers`; ValueError saying what is wrong."""
    given = field_table(
        given,
        "forecast",
        '{ tier = "1m", model = "holt_winters", season = "1d", horizon = "6h" }',
        _FIELDS,
    )
    tier_us = kept_tier("tier", given, tiers, "forecast")
    stat = given.get("stat", "mean")
    if stat not in FORECAST_STATS:
        raise ValueError(f"unknown stat {stat!r}; known: {', '.join(FORECAST_STATS)}")
    model = given.get("model", "holt_winters")
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; known: {', '.join(MODELS)}")
    if "horizon" not in given:
        raise ValueError('horizon is missing: say how far ahead, e.g. horizon = "6h"')
    horizon = _buckets("horizon", given["horizon"], tier_us, 1, MAX_HORIZON)
    if model == "linear":
        for key in _HW_ONLY:
            if key in given:
                raise ValueError(f"{key} is for model = 'holt_winters', not 'linear'")
        if "range" not in given:
            raise ValueError('range is missing: linear fits a line over it, e.g. range = "1h"')
        window = _buckets("range", given["range"], tier_us, 2, MAX_RANGE)
        return ForecastRule(tier_us, horizon, model, str(stat), range=window)
    if "range" in given:
        raise ValueError("range is for model = 'linear'; holt_winters learns from every bucket")
    season = _buckets("season", given.get("season", _DEFAULT_SEASON), tier_us, 2, MAX_SEASON)
    if not any(key in given for key in _PARAMS):
        return ForecastRule(tier_us, horizon, model, str(stat), season, fit=True)
    alpha = _number("alpha", given.get("alpha", DEFAULT_ALPHA))
    beta = _number("beta", given.get("beta", DEFAULT_BETA))
    gamma = _number("gamma", given.get("gamma", DEFAULT_GAMMA))
    phi = _number("phi", given.get("phi", DEFAULT_PHI))
    if not 0 < alpha < 1:
        raise ValueError(f"alpha {alpha!r} is not in (0, 1)")
    if not 0 <= beta <= alpha:
        raise ValueError(f"beta {beta!r} is not in [0, alpha]")
    if not 0 <= gamma <= 1 - alpha:
        raise ValueError(f"gamma {gamma!r} is not in [0, 1 - alpha]")
    if not 0 < phi <= 1:
        raise ValueError(f"phi {phi!r} is not in (0, 1]")
    return ForecastRule(tier_us, horizon, model, str(stat), season, 0, alpha, beta, gamma, phi)


def _buckets(key: str, given: object, tier_us: int, least: int, most: int) -> int:
    """A duration that is a whole number of `least` to `most` buckets of the tier."""
    width = positive_duration(key, given)
    tier = duration_label(tier_us)
    if width % tier_us:
        raise ValueError(f"{key} = {given!r} is not a whole number of {tier} buckets")
    count = width // tier_us
    if not least <= count <= most:
        raise ValueError(
            f"{key} = {given!r} is {count} buckets of {tier}; it may be {least} to {most}"
        )
    return count


def _number(key: str, given: object) -> float:
    if not isinstance(given, int | float) or isinstance(given, bool):
        raise ValueError(f"{key} is a number, got {type(given).__name__} {given!r}")
    return float(given)
