"""`HoltWinters`: additive Holt-Winters, level + (damped) trend + a season of `season`
buckets, learned one closed bucket at a time, its parameters fitted to the series or fixed,
with prediction intervals (pure).

The model is ETS(A,Ad,A) in its error-correction form (Hyndman, Koehler, Ord and Snyder,
"Forecasting with Exponential Smoothing", 2008, ch. 3; Hyndman and Athanasopoulos, FPP,
section 8.7), which is Holt-Winters' additive method with a damped trend, beta* = beta / alpha
and gamma* = gamma / (1 - alpha). For each value y, its one-step error and the update:

    e = y - (level + phi * trend + season[phase])
    level  <- level + phi * trend + alpha * e
    trend  <- phi * trend + beta * e
    season[phase] <- season[phase] + gamma * e

and the forecast h buckets ahead is level + (phi + phi**2 + ... + phi**h) * trend + season[phase
of that bucket] (h * trend when phi = 1: an undamped trend, ETS(A,A,A)).

Parameters. Fitted (`fit`, a rule's default): the model starts with `FIT_START`, then fits
alpha, beta, gamma and phi to its own last values by the least mean squared error of
forecasts up to the rule's horizon (`pushsvc.series.forecast_fit`), once a season, each fit
spread over the values learned (`pushsvc.series.forecast_refit`, which says why); each fit's
parameters forecast from the value at which it ends. Fixed (a rule that sets them): as given,
never refitted.

Combined. A fitted model's forecast mixes its own and those of two anchors, a slow and a fast
ETS(A,N,A) of fixed parameters learning the same values (`pushsvc.series.forecast_anchor`,
which says why), each horizon's weights from the three forecasts' recent errors there
(`pushsvc.series.forecast_weights`); its intervals keep the fitted model's variance,
calibrated by the combined forecast's own errors (below).

Start: the first two seasons are kept; then the trend is the difference of their means over
a season, the level the line through the two means at the end of the second season, and the
season the mean of each phase's two deviations from that line (a zero-sum season averaged over
two seasons: starting from one season's values, as the textbook start does, leaves one
season's noise in the season, which a small gamma takes many seasons to forget). With beta =
0 the trend can never change, so it starts at 0 rather than at what two seasons suggested: the
model is then ETS(A,N,A), level and season only (and the variance below is that model's). So
forecasts start after `2 * season` values, as statsforecast's and R's `ets` need two seasons.

Intervals: the h-step forecast variance of ETS(A,Ad,A) (the book's Table 6.1, class 1; FPP
Table 8.8): var_h = var * (1 + sum over j < h of c_j**2), c_j = alpha + beta * (phi + ... +
phi**j) + gamma * [j a whole number of seasons], in closed form
(`pushsvc.series.forecast_outlook.variance_factor`), so the intervals widen with the horizon
as fast as the parameters say. `var` is the variance of the one-step errors: their mean
square, over all errors up to `VAR_WINDOW` of them, then an exponentially weighted one of that
span (one number, and it follows a series whose noise changes). It starts from the two
seasons' differences, counted as a season's errors. The quantiles are the series' own, by
horizon: those of its recent errors 1 to `horizon` steps ahead (at a few horizons) standardised
by the standard error each forecast was made with (`pushsvc.series.forecast_errors`, which
says why: real series' errors are heavier-tailed than the model's Gaussian innovations, and
grow ahead faster or slower than its parameters say), normal ones until a horizon has a
hundred.

Cost: the season's values (8 bytes each), the level, trend, variance and counters, the
tracked horizons' forecasts in flight and windows of standardised errors
(`pushsvc.series.forecast_errors`), a fitted model's anchors' levels and seasons and the
three forecasts in flight at those horizons (`pushsvc.series.forecast_weights`); until the
start, the two seasons' values; a fitted model also its refit window and the fit under way
(`pushsvc.series.forecast_refit`). A value costs a constant amount of work, and a fitted
model's value at most `FIT_STEPS` filter steps more; the start costs one pass over two
seasons, once (amortized constant time).
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable
from dataclasses import dataclass

from pushsvc.rules.forecast import (
    DEFAULT_ALPHA,
    DEFAULT_BETA,
    DEFAULT_GAMMA,
    DEFAULT_PHI,
    MAX_SEASON,
)
from pushsvc.series.forecast import Predicted
from pushsvc.series.forecast_anchor import ANCHORS, Anchor
from pushsvc.series.forecast_errors import HorizonErrors, tracked_horizons
from pushsvc.series.forecast_fit import EtsParams
from pushsvc.series.forecast_outlook import (
    AnchorsOutlook,
    SeasonalOutlook,
    damped_steps,
    seasonal_steps,
    variance_factor,
)
from pushsvc.series.forecast_refit import MAX_FIT_SEASON, Refit
from pushsvc.series.forecast_weights import CombinationWeights
from pushsvc.stats.state_codec import StateReader, StateWriter

__all__ = ["DEFAULT_PARAMS", "FIT_START", "VAR_WINDOW", "HoltWinters", "HwParams"]

VAR_WINDOW = 200
"""The one-step error variance averages all errors up to this many, then weighs them
exponentially with this span: short enough that the larger errors of the first seasons (a
season started from one season's values) leave it within a few hundred buckets, long enough
that its own sampling error is about 10 %."""
_VERSION = 6


@dataclass(frozen=True, slots=True)
class HwParams:
    """The smoothing parameters of the error-correction form (see the module docstring):
    0 < alpha < 1, 0 <= beta <= alpha, 0 <= gamma <= 1 - alpha, 0 < phi <= 1."""

    alpha: float = DEFAULT_ALPHA
    beta: float = DEFAULT_BETA
    gamma: float = DEFAULT_GAMMA
    phi: float = DEFAULT_PHI

    def check(self) -> None:
        if not (0 < self.alpha < 1 and 0 <= self.beta <= self.alpha):
            raise ValueError("holt_winters needs 0 < alpha < 1 and 0 <= beta <= alpha")
        if not 0 <= self.gamma <= 1 - self.alpha:
            raise ValueError("holt_winters needs 0 <= gamma <= 1 - alpha")
        if not 0 < self.phi <= 1:
            raise ValueError("holt_winters needs 0 < phi <= 1")


DEFAULT_PARAMS = HwParams()
FIT_START = HwParams(0.1, 0.01, 0.045, 0.95)
"""A fitted model's parameters until its first fit ends, and where that fit starts from
(each later fit starts from the parameters before it). As R's `ets` starts its search: beta
a tenth of alpha, gamma a twentieth of 1 - alpha, a slightly damped trend; alpha a tenth
(a level that follows a tenth of each error while nothing is fitted yet)."""


class HoltWinters:
    """Additive Holt-Winters of season `season` buckets. Not greenlet-safe."""

    __slots__ = (
        "_ahead", "_learned", "_start", "anchors", "errors", "level", "params", "refit",
        "season", "seasonal", "spread", "trend", "var", "weights",
    )  # fmt: skip

    def __init__(
        self, season: int, params: HwParams = DEFAULT_PARAMS, fit: bool = False, horizon: int = 1
    ) -> None:
        """Parameters `params`, or, with `fit`, fitted from `FIT_START` on (where the season
        is at most `MAX_FIT_SEASON`; longer seasons keep `params`), for forecasts up to
        `horizon` steps ahead: what a fit aims at and which horizons' errors are tracked."""
        if not 2 <= season <= MAX_SEASON:
            raise ValueError(f"a season is 2 to {MAX_SEASON} buckets, got {season}")
        fitted = fit and season <= MAX_FIT_SEASON
        if fitted:
            params = FIT_START
        params.check()
        self.season = season
        self.params = params
        self.refit = Refit(season, horizon) if fitted else None
        """The refit schedule of a fitted model; None for fixed parameters."""
        self.anchors = tuple(Anchor(alpha) for alpha in ANCHORS) if fitted else ()
        """The fixed models a fitted one's forecasts are combined with
        (`pushsvc.series.forecast_anchor`); none for fixed parameters."""
        self.weights = self._weighing(tracked_horizons(horizon)) if fitted else None
        """With anchors, how much of each model's forecast the combined one takes by horizon
        (`pushsvc.series.forecast_weights`)."""
        self._learned = 0
        self._start: array[float] | None = array("d")
        """The first two seasons' values, until the start; then None."""
        self.seasonal = array("d")
        """The season's components by phase (learned value number mod `season`)."""
        self.level = self.trend = self.var = 0.0
        self.errors = 0
        """The errors the variance stands for (the next one's weight is 1 / min(errors + 1,
        VAR_WINDOW))."""
        self.spread = HorizonErrors(tracked_horizons(horizon))
        """The forecasts in flight and the recent errors over their standard errors at a few
        horizons: the intervals' quantiles."""
        self._ahead: tuple[tuple[int, float, float], ...] = ()
        """(k - 1, damped_steps(phi, k), sqrt(variance_factor(k))) for each tracked horizon k
        under `params` (made when first needed)."""

    @property
    def learned(self) -> int:
        return self._learned

    @property
    def started(self) -> bool:
        return self._start is None

    @property
    def fitted(self) -> bool:
        """Whether its parameters are fitted (else fixed)."""
        return self.refit is not None

    def fitting(self, horizon: int) -> None:
        """From now on, fit the parameters for forecasts `horizon` steps ahead (a model
        restored from a checkpoint made when its rule fixed them, the defaults then, now
        fitted): it goes on from its state and forecasts with its parameters until its first
        fit ends, three seasons on. Where its season is not fitted, nothing changes."""
        if self.refit is None and self.season <= MAX_FIT_SEASON:
            self.refit = Refit.after(self.season, horizon, self._learned)
            self.anchors = tuple(self._anchored(alpha) for alpha in ANCHORS)
            self.weights = self._weighing(self.spread.horizons)

    def _anchored(self, alpha: float) -> Anchor:
        """An anchor of `alpha` that goes on from this model's state (it has fixed
        parameters, as an anchor does); empty until the start."""
        return Anchor(alpha, self.level, array("d", self.seasonal))

    @staticmethod
    def _weighing(horizons: tuple[int, ...]) -> CombinationWeights:
        """The weights of a fitted model and its anchors, tracked at `horizons`."""
        return CombinationWeights(horizons, 1 + len(ANCHORS))

    def tracking(self, horizon: int) -> None:
        """From now on, track the errors of forecasts up to `horizon` steps ahead (a model
        restored from a checkpoint made for another horizon, or before they were tracked by
        horizon): the horizons tracked before keep their errors."""
        horizons = tracked_horizons(horizon)
        self.spread = self.spread.tracking(horizons)
        if self.weights is not None:
            self.weights = self.weights.tracking(horizons)
        self._ahead = ()

    def learn(self, value: float) -> None:
        refit = self.refit
        if refit is not None:
            p = self.params
            fitted = refit.learn(value, EtsParams(p.alpha, p.beta, p.gamma, p.phi))
            if fitted is not None:
                self.params = HwParams(fitted.alpha, fitted.beta, fitted.gamma, fitted.phi)
                self._ahead = ()
        start = self._start
        if start is not None:
            start.append(value)
            self._learned += 1
            if len(start) == 2 * self.season:
                self._begin(start)
                if self.anchors:
                    self.anchors = tuple(
                        Anchor.begun(alpha, start, self.season) for alpha in ANCHORS
                    )
                self._expect()
            return
        self.spread.observe(value)
        if self.weights is not None:
            self.weights.observe(value)
        self._update(value)
        self._expect()

    def _begin(self, values: array[float]) -> None:
        m = self.season
        first = math.fsum(values[:m]) / m
        second = math.fsum(values[m:]) / m
        trend = (second - first) / m if self.params.beta else 0.0
        centre = (m - 1) / 2
        # Each value's deviation from the line through the two seasons' means.
        off = [values[t] - (first + (t - centre) * trend) for t in range(2 * m)]
        self.seasonal = array("d", ((off[i] + off[i + m]) / 2 for i in range(m)))
        self.level = first + (2 * m - 1 - centre) * trend
        self.trend = trend
        # A value's error from the averaged season is half its season's difference: their
        # mean square is the first estimate of the one-step variance, worth a season's errors.
        self.var = math.fsum((off[i] - off[i + m]) ** 2 for i in range(m)) / (2 * m)
        self.errors = min(m, VAR_WINDOW)
        self._start = None

    def _update(self, value: float) -> None:
        p, seasonal = self.params, self.seasonal
        phase = self._learned % self.season
        damped = p.phi * self.trend
        error = value - (self.level + damped + seasonal[phase])
        self.level += damped + p.alpha * error
        self.trend = damped + p.beta * error
        seasonal[phase] += p.gamma * error
        for anchor in self.anchors:
            anchor.learn(value, phase)
        self.errors += 1
        self.var += (error * error - self.var) / min(self.errors, VAR_WINDOW)
        self._learned += 1

    def _expect(self) -> None:
        """The forecast of each tracked horizon, kept until its value comes."""
        ahead = self._ahead
        if not ahead:
            phi = self.params.phi
            ahead = self._ahead = tuple(
                (k - 1, damped_steps(phi, k), math.sqrt(self.variance_factor(k)))
                for k in self.spread.horizons
            )
        m, n = self.season, self._learned
        level, trend, seasonal = self.level, self.trend, self.seasonal
        sds = [math.sqrt(self.var) * se for _, _, se in ahead]
        own = [level + steps * trend + seasonal[(n + lag) % m] for lag, steps, _ in ahead]
        anchors, weights = self.anchors, self.weights
        if not anchors or weights is None:
            self.spread.expect(list(zip(own, sds, strict=True)))
            return
        members = [
            (mine, *(a.level + a.seasonal[(n + lag) % m] for a in anchors))
            for (lag, _, _), mine in zip(ahead, own, strict=True)
        ]
        blend = weights.blend()
        self.spread.expect([
            (blend.mixed(lag + 1, made[0], made[1:]), sd)
            for (lag, _, _), made, sd in zip(ahead, members, sds, strict=True)
        ])  # fmt: skip
        weights.expect(members)

    def variance_factor(self, h: int) -> float:
        """var_h / var, the h-step variance over the one-step one (module docstring)."""
        p = self.params
        return variance_factor(p.alpha, p.beta, p.gamma, self.season, h, p.phi)

    def outlook(self, horizon: int) -> SeasonalOutlook | None:
        """What the forecast's first `horizon` steps (all of them, past a season) need: the
        season's values from the next phase on, at most a season of them (None until the
        start)."""
        if self._start is not None:
            return None
        m = self.season
        phase, count = self._learned % m, max(1, min(horizon, m))
        ahead = (self.seasonal[phase:] + self.seasonal[:phase])[:count]
        others = tuple((a.seasonal[phase:] + a.seasonal[:phase])[:count] for a in self.anchors)
        return self._outlook(ahead, others)

    def predict(self, horizon: int) -> list[Predicted]:
        return self.predict_steps(range(1, horizon + 1))

    def predict_steps(self, steps: Iterable[int]) -> list[Predicted]:
        """The steps asked for, as `outlook(...).at` makes them, without copying the season."""
        if self._start is not None:
            return []
        anchors = self.anchors
        outlook = self._outlook(array("d"), tuple(array("d") for _ in anchors))
        seasons = (self.seasonal, *(a.seasonal for a in anchors))
        return seasonal_steps(outlook, seasons, self._learned, steps)

    def _outlook(
        self, ahead: array[float], anchor_aheads: tuple[array[float], ...]
    ) -> SeasonalOutlook:
        """The outlook of these season's values `ahead` (and its anchors', with some)."""
        p, anchors, weights = self.params, self.anchors, self.weights
        mixed = None
        if anchors and weights is not None:
            levels = tuple(a.level for a in anchors)
            mixed = AnchorsOutlook(levels, anchor_aheads, weights.weights())
        return SeasonalOutlook(
            self.level,
            self.trend,
            self.var,
            p.alpha,
            p.beta,
            p.gamma,
            self.season,
            ahead,
            p.phi,
            self.spread.quantiles(),
            mixed,
        )

    def to_bytes(self) -> bytes:
        """Every field bit for bit: a restored model forecasts exactly as the running one."""
        out = StateWriter()
        out.uint(_VERSION)
        out.uint(self.season)
        p = self.params
        for param in (p.alpha, p.beta, p.gamma, p.phi):
            out.double(param)
        out.uint(self._learned)
        out.uint(self.errors)
        for value in (self.level, self.trend, self.var):
            out.double(value)
        values = self._start if self._start is not None else self.seasonal
        out.uint(0 if self._start is None else 1)
        out.uint(len(values))
        for v in values:
            out.double(v)
        out.blob(b"" if self.refit is None else self.refit.to_bytes())
        out.blob(self.spread.to_bytes())
        anchors = StateWriter()
        if self.anchors:
            anchors.uint(len(self.anchors))
            for anchor in self.anchors:
                anchors.blob(anchor.to_bytes())
        out.blob(bytes(anchors))
        out.blob(b"" if self.weights is None else self.weights.to_bytes())
        return bytes(out)

    @classmethod
    def from_bytes(cls, data: bytes) -> HoltWinters:
        """From `to_bytes`; ValueError when it is not such a state."""
        read = StateReader(data)
        version = read.uint()
        if not 1 <= version <= _VERSION:
            raise ValueError("unknown holt_winters forecast state version")
        season = read.uint()
        alpha, beta, gamma = read.double(), read.double(), read.double()
        params = HwParams(alpha, beta, gamma, read.double() if version > 1 else 1.0)
        params.check()
        model = cls(season, params)
        model._learned, model.errors = read.uint(), read.uint()
        model.level, model.trend, model.var = read.double(), read.double(), read.double()
        starting = read.uint()
        values = array("d", (read.double() for _ in range(read.uint())))
        refit = read.blob() if version > 1 else b""
        # Before version 3 no errors were kept: normal quantiles until a hundred are. Version
        # 3 kept the one-step errors only; `tracking` adds the other horizons.
        errors = read.blob() if version > 2 else b""
        model.spread = (
            HorizonErrors.from_bytes(errors) if version > 3 else HorizonErrors.one_step(errors)
        )
        anchor = read.blob() if version > 4 else b""
        weights = read.blob() if version > 5 else b""
        read.done()
        if refit:
            model.refit = Refit.from_bytes(refit)
            if model.refit.season != season or model.refit.seen != model._learned:
                raise ValueError("holt_winters refit state does not fit the model")
        if starting:
            if len(values) >= 2 * season or len(values) != model._learned:
                raise ValueError("holt_winters start state does not fit its season")
            model._start = values
        else:
            if len(values) != season:
                raise ValueError("holt_winters state does not fit its season")
            model._start = None
            model.seasonal = values
        if anchor:
            if model.refit is None:
                raise ValueError("holt_winters anchor without a fit")
            model.anchors = model._read_anchors(anchor, version, starting)
        elif model.refit is not None:
            # Before version 5 a fitted model had no anchor: they go on from its state.
            model.anchors = tuple(model._anchored(alpha) for alpha in ANCHORS)
        if weights:
            if not model.anchors:
                raise ValueError("holt_winters combination weights without an anchor")
            model.weights = CombinationWeights.from_bytes(weights, 1 + len(ANCHORS))
            if model.weights.horizons != model.spread.horizons:
                raise ValueError("holt_winters combination weights do not fit its horizons")
        elif model.anchors:
            # Before version 6 a fitted model and its one anchor were combined in equal
            # shares: weights start now.
            model.weights = model._weighing(model.spread.horizons)
        return model

    def _read_anchors(self, data: bytes, version: int, starting: int) -> tuple[Anchor, ...]:
        """The anchors of a state of `version`: version 5 kept the slow one alone (the fast
        one then goes on from the model's state)."""
        if version < 6:
            blobs = [data]
        else:
            read = StateReader(data)
            if read.uint() != len(ANCHORS):
                raise ValueError("holt_winters anchors are not its anchors")
            blobs = [read.blob() for _ in ANCHORS]
            read.done()
        kept = zip(ANCHORS[: len(blobs)], blobs, strict=True)
        anchors = [Anchor.from_bytes(alpha, blob, self.season) for alpha, blob in kept]
        anchors += [self._anchored(alpha) for alpha in ANCHORS[len(anchors) :]]
        if any(len(a.seasonal) != (0 if starting else self.season) for a in anchors):
            raise ValueError("holt_winters anchor does not fit the model's start")
        return tuple(anchors)
