"""What a forecast needs of its model to make any of its horizon's steps, and nothing more: a
model's `outlook` (pure).

A series' model holds what it learns from (a linear fit's window of values, a seasonal model's
season or its first two seasons), which can be thousands of numbers. Its forecast, though,
depends on a few of them: a line's level, slope, residual variance and point count; a seasonal
model's level, trend, one-step variance, parameters, intervals' quantiles and the season's
values over the horizon (at most the season, at most the horizon). The outlook is those, so
that what a series keeps as its latest forecast (for `GET /topics/{topic}/forecast`, which
makes the points on read) is bounded by the horizon and not by the model's window, and costs
one copy to keep.

`at(steps)` makes the steps asked for, each on its own (no step depends on another), with the
very arithmetic of the model's own `predict`: the points made from an outlook equal the model's,
bit for bit, whichever steps are asked for. So a forecast message carries some of the horizon's
steps and the API all of them, the same numbers.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pushsvc.series.forecast import Z80, Z95, Predicted, student_t, with_intervals
from pushsvc.series.forecast_errors import LONGEST, TRACKED, Band, Quantiles
from pushsvc.series.forecast_weights import Blend, Weights
from pushsvc.stats.state_codec import StateReader, StateWriter

__all__ = [
    "AnchorsOutlook",
    "LinearOutlook",
    "Outlook",
    "SeasonalOutlook",
    "damped_steps",
    "outlook_from_bytes",
    "variance_factor",
]

_LINEAR = 1
_SEASONAL = 2
_DAMPED = 3
"""A seasonal outlook with its phi (one without is undamped: phi 1)."""
_QUANTILED = 4
"""A seasonal outlook with its phi and one pair of quantiles (as kept before the quantiles
were each horizon's): read as the one-step horizon's."""
_CALIBRATED = 5
"""A seasonal outlook with its phi and its intervals' quantiles by horizon (one without has
the normal ones)."""
_COMBINED = 6
"""A calibrated seasonal outlook (its quantiles may be none) with an `AnchorsOutlook`."""


@dataclass(frozen=True, slots=True)
class LinearOutlook:
    """A least-squares line's forecast (`pushsvc.series.forecast_linear`): `level` at the
    newest of `n` values, `slope` per bucket, `s2` the residual variance (0 below 3 values)."""

    level: float
    slope: float
    s2: float
    n: int

    @property
    def reach(self) -> int | None:
        """The last step it can make: a line reaches any."""
        return None

    def at(self, steps: Iterable[int]) -> list[Predicted]:
        n, level, slope, s2 = self.n, self.level, self.slope, self.s2
        sxx_c = n * (n * n - 1) / 12
        q80, q95 = (student_t(Z80, n - 2), student_t(Z95, n - 2)) if n > 2 else (0.0, 0.0)
        half = (n - 1) / 2  # the newest x minus the mean x
        out = []
        for h in steps:
            d = half + h
            se = math.sqrt(s2 * (1 + 1 / n + d * d / sxx_c))
            out.append(with_intervals(h, level + slope * h, se, q80, q95))
        return out

    def to_bytes(self) -> bytes:
        out = StateWriter()
        out.uint(_LINEAR)
        for value in (self.level, self.slope, self.s2):
            out.double(value)
        out.uint(self.n)
        return bytes(out)


@dataclass(frozen=True, slots=True)
class AnchorsOutlook:
    """What a fitted model's outlook mixes in (`pushsvc.series.forecast_weights`): each of its
    anchors' level and season's values for the same steps as the outlook's `ahead`, and the
    members' weights by horizon (the fitted model's first, then the anchors')."""

    levels: tuple[float, ...]
    aheads: tuple[array[float], ...]
    weights: Weights


@dataclass(frozen=True, slots=True)
class SeasonalOutlook:
    """A Holt-Winters forecast (`pushsvc.series.forecast_holt_winters`): `ahead[h - 1]` is the
    season's value for step h, for the first `len(ahead)` steps (the whole season, which then
    repeats, or the horizon where it is shorter); `phi` damps the trend (1: undamped);
    `quantiles` are the intervals' half-widths in standard errors by horizon
    (`pushsvc.series.forecast_errors`; none: the normal ones); `anchors`, a fitted model's,
    are mixed into the mean (None: a fixed model's)."""

    level: float
    trend: float
    var: float
    alpha: float
    beta: float
    gamma: float
    season: int
    ahead: array[float]
    phi: float = 1.0
    quantiles: Quantiles = ()
    anchors: AnchorsOutlook | None = None

    @property
    def reach(self) -> int | None:
        """The last step it can make: any once it holds the whole season."""
        return None if len(self.ahead) == self.season else len(self.ahead)

    def at(self, steps: Iterable[int]) -> list[Predicted]:
        others = () if self.anchors is None else self.anchors.aheads
        return seasonal_steps(self, (self.ahead, *others), 0, steps)

    def to_bytes(self) -> bytes:
        out = StateWriter()
        anchors = self.anchors
        normal = not self.quantiles and anchors is None
        kind = _SEASONAL if self.phi == 1 else _DAMPED
        out.uint(_COMBINED if anchors is not None else _CALIBRATED if not normal else kind)
        for value in (self.level, self.trend, self.var, self.alpha, self.beta, self.gamma):
            out.double(value)
        if self.phi != 1 or not normal:
            out.double(self.phi)
        if not normal:
            out.uint(len(self.quantiles))
            for k, q80, q95 in self.quantiles:
                out.uint(k)
                out.double(q80)
                out.double(q95)
        out.uint(self.season)
        out.doubles(self.ahead)
        if anchors is not None:
            out.uint(len(anchors.levels))
            for level, ahead in zip(anchors.levels, anchors.aheads, strict=True):
                out.double(level)
                out.doubles(ahead)
            out.uint(len(anchors.weights))
            for k, shares in anchors.weights:
                out.uint(k)
                for share in shares:
                    out.double(share)
        return bytes(out)


Outlook = LinearOutlook | SeasonalOutlook


def damped_steps(phi: float, h: int) -> float:
    """phi + phi**2 + ... + phi**h: how many buckets' trend a forecast h ahead adds (h when
    phi is 1)."""
    return h if phi == 1 else phi * (1 - phi**h) / (1 - phi)


def variance_factor(a: float, b: float, g: float, m: int, h: int, phi: float = 1.0) -> float:
    """var_h / var of ETS(A,Ad,A) with alpha `a`, beta `b`, gamma `g`, damping `phi` and a
    season of `m` (`pushsvc.series.forecast_holt_winters`' module docstring): 1 plus the sum
    over j = 1 .. h - 1 of c_j**2, c_j = a + b * damped_steps(phi, j) + g * [m divides j],
    in closed form."""
    k = (h - 1) // m
    if phi == 1:
        return (
            1
            + (h - 1) * (a * a + a * b * h + b * b * h * (2 * h - 1) / 6)
            + g * k * (2 * a + g + b * m * (k + 1))
        )
    n = h - 1
    r = phi / (1 - phi)
    tail = phi * (1 - phi**n) / (1 - phi)  # phi + ... + phi**n
    steps = r * (n - tail)  # the sum of damped_steps(phi, j) for j = 1 .. n
    squares = r * r * (n - 2 * tail + phi * phi * (1 - phi ** (2 * n)) / (1 - phi * phi))
    pm = phi**m
    seasons = r * (k - (pm * (1 - pm**k) / (1 - pm) if k else 0.0))
    return (
        1
        + n * a * a
        + 2 * a * b * steps
        + b * b * squares
        + g * k * (2 * a + g)
        + 2 * g * b * seasons
    )


def outlook_from_bytes(data: bytes) -> Outlook:
    """From an outlook's `to_bytes`; ValueError when it is not one."""
    read = StateReader(data)
    kind = read.uint()
    if kind == _LINEAR:
        level, slope, s2 = read.double(), read.double(), read.double()
        n = read.uint()
        read.done()
        if n < 2:
            raise ValueError("a line's outlook needs two values")
        return LinearOutlook(level, slope, s2, n)
    if kind not in (_SEASONAL, _DAMPED, _QUANTILED, _CALIBRATED, _COMBINED):
        raise ValueError("unknown forecast outlook")
    level, trend, var, alpha, beta, gamma = (read.double() for _ in range(6))
    phi = read.double() if kind != _SEASONAL else 1.0
    quantiles = _read_quantiles(read, kind)
    season = read.uint()
    ahead = read.doubles()
    if not 0 < len(ahead) <= season:
        raise ValueError("a seasonal outlook's values do not fit its season")
    anchors = _read_anchors(read, len(ahead)) if kind == _COMBINED else None
    read.done()
    return SeasonalOutlook(
        level, trend, var, alpha, beta, gamma, season, ahead, phi, quantiles, anchors
    )


_MOST_ANCHORS = 4
"""More anchors than an outlook is read with (a model has `forecast_anchor.ANCHORS`)."""


def _read_anchors(read: StateReader, count: int) -> AnchorsOutlook:
    """The anchors of an outlook of `count` steps."""
    anchors = read.uint()
    if not 0 < anchors <= _MOST_ANCHORS:
        raise ValueError("a seasonal outlook's anchors do not fit")
    levels, aheads = [], []
    for _ in range(anchors):
        levels.append(read.double())
        aheads.append(read.doubles())
        if len(aheads[-1]) != count:
            raise ValueError("a seasonal outlook's anchor does not fit its steps")
    rows = read.uint()
    if rows > TRACKED:
        raise ValueError("a seasonal outlook's weights do not fit")
    weights = tuple(
        (read.uint(), tuple(read.double() for _ in range(anchors + 1))) for _ in range(rows)
    )
    horizons = [k for k, _ in weights]
    if horizons != sorted(set(horizons)) or not all(1 <= k <= LONGEST for k in horizons):
        raise ValueError("a seasonal outlook's weights are not by ascending horizon")
    if not all(0 <= share <= 1 for _, shares in weights for share in shares):
        raise ValueError("a seasonal outlook's weights are not shares")
    return AnchorsOutlook(tuple(levels), tuple(aheads), weights)


def _read_quantiles(read: StateReader, kind: int) -> Quantiles:
    if kind == _QUANTILED:
        rows = [(1, read.double(), read.double())]
    elif kind in (_CALIBRATED, _COMBINED):
        count = read.uint()
        if not (kind == _COMBINED or count) or count > TRACKED:
            raise ValueError("a seasonal outlook's quantiles do not fit")
        rows = [(read.uint(), read.double(), read.double()) for _ in range(count)]
        if not rows:
            return ()
    else:
        return ()
    horizons = [k for k, _, _ in rows]
    if horizons != sorted(set(horizons)) or not 1 <= horizons[0] <= horizons[-1] <= LONGEST:
        raise ValueError("a seasonal outlook's quantiles are not by ascending horizon")
    if not all(0 <= q80 <= q95 and math.isfinite(q95) for _, q80, q95 in rows):
        raise ValueError("a seasonal outlook's quantiles are not ordered")
    return tuple(rows)


def seasonal_steps(
    model: SeasonalOutlook, seasons: Sequence[array[float]], offset: int, steps: Iterable[int]
) -> list[Predicted]:
    """The forecast `h` steps ahead for each of `steps`: the damped trend and the season's
    value, `seasons[0][(offset + h - 1) % season]`; with a fitted model's `anchors`, each
    one's level and season's value (from `seasons[1:]`, alike) mixed in by the members'
    weights `h` steps ahead (`pushsvc.series.forecast_weights.Blend`); with intervals from the
    h-step variance (`variance_factor`) and the errors of the horizons tracked
    (`pushsvc.series.forecast_errors.Band`)."""
    level, trend, var, phi, m = model.level, model.trend, model.var, model.phi, model.season
    a, b, g = model.alpha, model.beta, model.gamma
    own, anchors = seasons[0], model.anchors
    blend: Blend | None = None
    levels: tuple[float, ...] = ()
    if anchors is not None:
        blend, levels = Blend(anchors.weights, len(anchors.levels) + 1), anchors.levels
    others = list(zip(levels, seasons[1:], strict=True))

    def se(h: int) -> float:
        return math.sqrt(var * variance_factor(a, b, g, m, h, phi))

    band = Band(model.quantiles, se)
    out = []
    for h in steps:
        phase = (offset + h - 1) % m
        mean = level + damped_steps(phi, h) * trend + own[phase]
        if blend is not None:
            mean = blend.mixed(h, mean, [lv + season[phase] for lv, season in others])
        w80, w95 = band.at(h, se(h))
        out.append(Predicted(h, mean, mean - w80, mean + w80, mean - w95, mean + w95))
    return out
