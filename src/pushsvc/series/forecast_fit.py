"""`Fit`: the smoothing parameters of ETS(A,Ad,A) estimated from a window of one series' own
history, by the least mean squared error of its forecasts up to a horizon, a bounded number of
steps at a time (pure).

The model (`pushsvc.series.forecast_holt_winters`) in its error-correction form, with a damped
trend (Hyndman, Koehler, Ord and Snyder, "Forecasting with Exponential Smoothing", 2008,
ch. 3 and Table 2.1):

    e = y - (level + phi * trend + season[phase])
    level  <- level + phi * trend + alpha * e
    trend  <- phi * trend + beta * e
    season[phase] <- season[phase] + gamma * e

The criterion is the one R's `ets` offers as `opt.crit = "amse"` (the average of the mean
squared errors of the forecasts 1 to `nmse` steps ahead from each point), thinned to three
steps: 1, h/2 and h, h the rule's horizon (at most a season), so a pass costs three times a
filter's and not h times. Not the one-step error alone (the likelihood's criterion, `ets`'
and `AutoETS`' default): on real series that buys the next bucket with a level that chases
noise hours ahead (docs/performance.md). Within the usual bounds: 1e-4 <= alpha <= 1 - 1e-4,
1e-4 <= beta <= alpha, 1e-4 <= gamma <= 1 - alpha, 0.8 <= phi <= 0.98. The search is
Nelder-Mead (as `ets`' is) in the unit cube those bounds map onto (a point outside it is
projected onto it), from a given start, for at most `MAX_EVALS` evaluations. Unlike those
libraries it does not estimate the initial states: they are the model's own start over the
window's first two seasons (level, trend and the season averaged over them), and the errors
counted are those after it, so each evaluation is one pass over the rest of the window.

Why it is shaped so: a fit is thousands of passes' worth of work (an evaluation is one pass
over up to `window` values), far more than a bucket may cost. So a fit is a state machine that
`advance(steps)` moves at most `steps` filter steps on, with everything it holds (its window,
the search's simplex, the pass under way) in plain numbers that `to_bytes` writes bit for bit:
the model advances it a fixed number of steps per bucket learned, so its result, and when it
is applied, depend on the values learned alone, through a checkpoint and a restart too.
Nelder-Mead is written ask-and-tell (the next point to evaluate, then its value) so that it
can stop and resume between any two steps.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass

from pushsvc.series.forecast_outlook import damped_steps
from pushsvc.stats.state_codec import StateReader, StateWriter

__all__ = [
    "LOWER", "MAX_EVALS", "PHI_MAX", "PHI_MIN", "EtsParams", "Fit", "NelderMead",
]  # fmt: skip

LOWER = 1e-4
"""The least alpha, beta and gamma a fit gives (and 1 - LOWER the greatest alpha)."""
PHI_MIN = 0.8
PHI_MAX = 0.98
MAX_EVALS = 150
"""The most evaluations (passes over the window) a fit makes."""
TOLERANCE = 1e-6
"""A fit stops once its simplex' values are within this share of the best."""
START_STEP = 0.1
"""The initial simplex' edge in the unit cube."""


@dataclass(frozen=True, slots=True)
class EtsParams:
    """alpha, beta, gamma and phi of ETS(A,Ad,A) (phi 1: an undamped trend)."""

    alpha: float
    beta: float
    gamma: float
    phi: float


def params_of(u: list[float]) -> EtsParams:
    """The parameters at the unit-cube point `u` (each coordinate already within [0, 1])."""
    alpha = LOWER + u[0] * (1 - 2 * LOWER)
    # min(): within the bounds exactly, whatever the rounding.
    beta = min(LOWER + u[1] * (alpha - LOWER), alpha)
    gamma = min(LOWER + u[2] * (1 - alpha - LOWER), 1 - alpha)
    return EtsParams(alpha, beta, gamma, min(PHI_MIN + u[3] * (PHI_MAX - PHI_MIN), PHI_MAX))


def unit_of(p: EtsParams) -> list[float]:
    """The unit-cube point of `p`, projected onto the cube (`params_of`'s inverse within)."""
    alpha = min(max(p.alpha, LOWER), 1 - LOWER)
    u = [
        (alpha - LOWER) / (1 - 2 * LOWER),
        _share(p.beta - LOWER, alpha - LOWER),
        _share(p.gamma - LOWER, 1 - alpha - LOWER),
        (p.phi - PHI_MIN) / (PHI_MAX - PHI_MIN),
    ]
    return _clamp(u)


def _share(part: float, whole: float) -> float:
    """part / whole, 0 for an empty range."""
    return part / whole if whole > 0 else 0.0


def _clamp(u: list[float]) -> list[float]:
    return [min(max(x, 0.0), 1.0) for x in u]


_INIT, _REFLECT, _EXPAND, _OUTSIDE, _INSIDE, _SHRINK, _DONE = range(7)


class NelderMead:
    """Nelder-Mead minimisation in the unit cube, ask-and-tell: `ask` is the point to evaluate
    next, `tell` its value; `done` once converged or after `MAX_EVALS` values. Reflection 1,
    expansion 2, contraction and shrink 1/2 (the standard coefficients)."""

    __slots__ = ("evals", "phase", "points", "saved", "saved_value", "shrink", "trial", "values")

    def __init__(self, start: list[float]) -> None:
        start = _clamp(start)
        self.points = [start]
        for i in range(len(start)):
            vertex = list(start)
            # Step into the cube: up, unless that leaves it.
            vertex[i] += START_STEP if start[i] + START_STEP <= 1 else -START_STEP
            self.points.append(vertex)
        self.values: list[float] = []
        self.phase = _INIT
        self.trial = list(start)
        self.saved: list[float] = []
        self.saved_value = math.inf
        self.shrink = 0
        self.evals = 0

    @property
    def done(self) -> bool:
        return self.phase == _DONE

    def best(self) -> tuple[list[float], float]:
        """The best point evaluated and its value."""
        i = min(range(len(self.values)), key=self.values.__getitem__)
        return self.points[i], self.values[i]

    def ask(self) -> list[float]:
        return self.trial

    def tell(self, value: float) -> None:
        if not value < math.inf:  # nan or inf: no better than anything
            value = math.inf
        self.evals += 1
        phase, worst = self.phase, len(self.points) - 1
        if phase == _INIT:
            self.values.append(value)
            if len(self.values) < len(self.points):
                self.trial = self.points[len(self.values)]
                return
        elif phase == _REFLECT:
            if value < self.values[0]:
                self.saved, self.saved_value = self.trial, value
                self._try(_EXPAND, 2.0)
                return
            if value < self.values[worst - 1]:
                self._replace(self.trial, value)
            elif value < self.values[worst]:
                self.saved, self.saved_value = self.trial, value
                self._try(_OUTSIDE, 0.5)
                return
            else:
                self._try(_INSIDE, -0.5)
                return
        elif phase == _EXPAND:
            if value < self.saved_value:
                self._replace(self.trial, value)
            else:
                self._replace(self.saved, self.saved_value)
        elif phase in (_OUTSIDE, _INSIDE):
            bound = self.saved_value if phase == _OUTSIDE else self.values[worst]
            if value <= bound:
                self._replace(self.trial, value)
            else:
                self._shrink_next(0)
                return
        elif phase == _SHRINK:
            self.values[self.shrink] = value
            self._shrink_next(self.shrink)
            return
        self._next()

    def _shrink_next(self, done: int) -> None:
        """Move vertex `done + 1` halfway to the best and evaluate it; then go on."""
        if done + 1 < len(self.points):
            best = self.points[0]
            vertex = [b + 0.5 * (x - b) for b, x in zip(best, self.points[done + 1], strict=True)]
            self.points[done + 1] = vertex
            self.phase, self.shrink, self.trial = _SHRINK, done + 1, vertex
            return
        self._next()

    def _replace(self, point: list[float], value: float) -> None:
        self.points[-1], self.values[-1] = point, value

    def _next(self) -> None:
        """Order the simplex, stop if converged or out of evaluations, else reflect."""
        order = sorted(range(len(self.points)), key=self.values.__getitem__)  # stable
        self.points = [self.points[i] for i in order]
        self.values = [self.values[i] for i in order]
        low, high = self.values[0], self.values[-1]
        if self.evals >= MAX_EVALS or high - low <= TOLERANCE * (abs(low) + 1e-300):
            self.phase = _DONE
            return
        self._try(_REFLECT, 1.0)

    def _try(self, phase: int, coefficient: float) -> None:
        """Evaluate the centroid of all but the worst plus `coefficient` times its distance
        from the worst (1: reflection, 2: expansion, 1/2: outside, -1/2: inside contraction)."""
        n = len(self.points) - 1
        worst = self.points[-1]
        centroid = [math.fsum(p[i] for p in self.points[:-1]) / n for i in range(n)]
        self.trial = _clamp(
            [c + coefficient * (c - w) for c, w in zip(centroid, worst, strict=True)]
        )
        self.phase = phase

    def write(self, out: StateWriter) -> None:
        out.uint(self.phase)
        out.uint(self.evals)
        out.uint(self.shrink)
        out.uint(len(self.values))
        for value in self.values:
            out.double(value)
        out.double(self.saved_value)
        for point in (*self.points, self.trial, self.saved):
            out.uint(len(point))
            for x in point:
                out.double(x)

    @classmethod
    def read(cls, read: StateReader, n: int) -> NelderMead:
        search = cls([0.0] * n)
        search.phase, search.evals, search.shrink = read.uint(), read.uint(), read.uint()
        search.values = [read.double() for _ in range(read.uint())]
        search.saved_value = read.double()
        vectors = [[read.double() for _ in range(read.uint())] for _ in range(n + 3)]
        search.points, search.trial, search.saved = vectors[: n + 1], vectors[n + 1], vectors[n + 2]
        if search.phase > _DONE or len(search.values) > n + 1 or search.shrink > n:
            raise ValueError("a fit's search state does not hold together")
        if any(len(v) != n for v in vectors[: n + 2]) or len(search.saved) not in (0, n):
            raise ValueError("a fit's search state does not hold together")
        return search


class Fit:
    """One fit of a season-`season` model to `values` (at least three seasons: two to start
    from, the rest counted), from the start `start`, for forecasts `horizon` steps ahead. Not
    greenlet-safe."""

    __slots__ = (
        "_level", "_pos", "_season", "_sse", "_trend", "ahead", "search", "season", "values",
    )  # fmt: skip

    def __init__(
        self, season: int, values: array[float], start: EtsParams, horizon: int = 1
    ) -> None:
        if len(values) < 3 * season:
            raise ValueError("a fit needs three seasons of values")
        if horizon < 1:
            raise ValueError("a fit's horizon is a step or more")
        self.season = season
        self.values = values
        h = min(horizon, season)
        self.ahead = sorted({1, (h + 1) // 2, h})
        """The steps ahead whose errors count."""
        self.search = NelderMead(unit_of(start))
        self._pos = 0
        """The next value of the pass under way (0: none under way)."""
        self._level = self._trend = 0.0
        self._sse = [0.0] * len(self.ahead)
        self._season = array("d")

    @property
    def done(self) -> bool:
        return self.search.done

    def result(self) -> tuple[EtsParams, float]:
        """The fitted parameters and their criterion (once `done`)."""
        point, value = self.search.best()
        return params_of(point), value

    def advance(self, steps: int) -> None:
        """Move the fit on by at most `steps` filter steps (a value counts one per step ahead
        whose error counts; a pass's start counts its two seasons), or until it is done."""
        m, values, ahead = self.season, self.values, self.ahead
        n, width = len(values), len(self.ahead)
        while steps > 0 and not self.search.done:
            if self._pos == 0:
                self._begin()
                steps -= 2 * m
                continue
            p = params_of(self.search.ask())
            alpha, beta, gamma, phi = p.alpha, p.beta, p.gamma, p.phi
            # (step - 1, its trend's weight, its sum of squares) for each step ahead but 1.
            further = [(k - 1, damped_steps(phi, k)) for k in ahead[1:]]
            sse = self._sse
            level, trend, season, pos = self._level, self._trend, self._season, self._pos
            end = min(n, pos + -(-steps // width))
            steps -= (end - pos) * width
            for t in range(pos, end):
                for i, (lag, weight) in enumerate(further, 1):
                    if t + lag < n:
                        miss = values[t + lag] - (level + weight * trend + season[(t + lag) % m])
                        sse[i] += miss * miss
                phase = t % m
                damped = phi * trend
                error = values[t] - (level + damped + season[phase])
                level += damped + alpha * error
                trend = damped + beta * error
                season[phase] += gamma * error
                sse[0] += error * error
            if not math.isfinite(math.fsum(sse)):
                end = n
            if end == n:
                counted = n - 2 * m
                self.search.tell(
                    math.fsum(
                        total / (counted - k + 1) for k, total in zip(ahead, sse, strict=True)
                    )
                    / width
                )
                self._pos = 0
            else:
                self._level, self._trend, self._pos = level, trend, end

    def _begin(self) -> None:
        """A pass's start: the state after the window's first two seasons (the trend from
        their means, the season averaged over both), as the model starts."""
        m, values = self.season, self.values
        first = math.fsum(values[:m]) / m
        second = math.fsum(values[m : 2 * m]) / m
        trend = (second - first) / m
        centre = (m - 1) / 2
        off = [values[t] - (first + (t - centre) * trend) for t in range(2 * m)]
        self._season = array("d", ((off[i] + off[i + m]) / 2 for i in range(m)))
        self._level = first + (2 * m - 1 - centre) * trend
        self._trend = trend
        self._sse = [0.0] * len(self.ahead)
        self._pos = 2 * m

    def to_bytes(self) -> bytes:
        out = StateWriter()
        out.uint(self.season)
        out.uint(self.ahead[-1])
        out.doubles(self.values)
        self.search.write(out)
        out.uint(self._pos)
        for value in (self._level, self._trend, *self._sse):
            out.double(value)
        out.doubles(self._season)
        return bytes(out)

    @classmethod
    def from_bytes(cls, data: bytes) -> Fit:
        """From `to_bytes`; ValueError when it is not such a state."""
        read = StateReader(data)
        season, horizon = read.uint(), read.uint()
        values = read.doubles()
        if season < 2 or len(values) < 3 * season or not 1 <= horizon <= season:
            raise ValueError("a fit's window does not fit its season")
        fit = cls(season, values, EtsParams(0.5, 0.1, 0.1, 0.9), horizon)
        fit.search = NelderMead.read(read, 4)
        fit._pos = read.uint()
        fit._level, fit._trend = read.double(), read.double()
        fit._sse = [read.double() for _ in fit.ahead]
        fit._season = read.doubles()
        read.done()
        if fit._pos and not (2 * season <= fit._pos < len(values) and len(fit._season) == season):
            raise ValueError("a fit's pass does not fit its window")
        return fit
