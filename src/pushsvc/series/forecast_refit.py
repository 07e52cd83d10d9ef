"""`Refit`: when a fitted seasonal model refits its parameters, on which values, and how much
of the fit each bucket learned pays for (pure).

A model whose rule sets no smoothing parameters (`pushsvc.rules.forecast`) fits them to its
own series (`pushsvc.series.forecast_fit`). `Refit` keeps the series' last `window` values
(`FIT_SEASONS` seasons, at least `FIT_LEAST` values) and starts a fit on them once it holds
three seasons, then once a season (or, when a fit takes longer, as soon as it ends), for the
rule's horizon (at most a season). A fit moves on by `FIT_STEPS` filter steps per value
learned, and its parameters apply from the value at which it ends.

Why so: a fit costs up to `MAX_EVALS` passes over the window, which no single close may pay
(a thousand series refitting on one tick would stall the aggregator for seconds). Spread over
the values learned, it costs each series at most `FIT_STEPS` steps per close (a few hundred
µs, docs/performance.md), whatever the season and however many series close together; and
since how far a fit has got is counted in values learned, not in time, which parameters
forecast a bucket depends on the series' values alone: a restart from a checkpoint (which
holds the window and the fit under way, `to_bytes`) forecasts as the uninterrupted run did.

Cost in bytes: the window (8 bytes a value) and, during a fit, its copy and one season.
Seasons longer than `MAX_FIT_SEASON` buckets are not fitted (their window would be too
large to keep per series): such a model keeps its rule's parameters.
"""

from __future__ import annotations

from array import array

from pushsvc.series.forecast_fit import EtsParams, Fit
from pushsvc.stats.state_codec import StateReader, StateWriter

__all__ = ["FIT_LEAST", "FIT_SEASONS", "FIT_STEPS", "MAX_FIT_SEASON", "Refit"]

FIT_STEPS = 256
"""Filter steps of a fit per value learned."""
FIT_SEASONS = 4
"""The window a fit is made on, in seasons (two to start from, two counted)."""
FIT_LEAST = 1008
"""The least window, in values, for short seasons (six weeks of hours)."""
MAX_FIT_SEASON = 2880
"""The longest season fitted (two days of 1-minute buckets: a window of 11,520 values)."""


class Refit:
    """The refit schedule and window of one model of season `season`. Not greenlet-safe."""

    __slots__ = ("fit", "head", "horizon", "next_at", "ring", "season", "seen", "window")

    def __init__(self, season: int, horizon: int = 1) -> None:
        """Fits for forecasts up to `horizon` steps ahead (`pushsvc.series.forecast_fit`)."""
        if not 2 <= season <= MAX_FIT_SEASON:
            raise ValueError(f"a fitted season is 2 to {MAX_FIT_SEASON} buckets")
        self.season = season
        self.horizon = max(1, min(horizon, season))
        self.window = max(FIT_SEASONS * season, FIT_LEAST)
        self.ring = array("d")
        """The last values learned, at most `window`; the oldest at `head` once full."""
        self.head = 0
        self.seen = 0
        self.next_at = 3 * season
        """How many values learned the next fit waits for."""
        self.fit: Fit | None = None

    @classmethod
    def after(cls, season: int, horizon: int, learned: int) -> Refit:
        """For a model that has learned `learned` values with fixed parameters (a checkpoint
        of before its rule was fitted): its window starts empty, its first fit once it holds
        three seasons."""
        refit = cls(season, horizon)
        refit.seen = refit.next_at = learned
        return refit

    def learn(self, value: float, current: EtsParams) -> EtsParams | None:
        """`value` learned by a model now forecasting with `current`: the fitted parameters
        when a fit ends with this value, else None."""
        ring = self.ring
        if len(ring) < self.window:
            ring.append(value)
        else:
            ring[self.head] = value
            self.head = (self.head + 1) % self.window
        self.seen += 1
        fit = self.fit
        if fit is None:
            if self.seen < self.next_at or len(ring) < 3 * self.season:
                return None
            window = ring[self.head :] + ring[: self.head]
            fit = self.fit = Fit(self.season, window, current, self.horizon)
            self.next_at = self.seen + self.season
        fit.advance(FIT_STEPS)
        if not fit.done:
            return None
        self.fit = None
        return fit.result()[0]

    def to_bytes(self) -> bytes:
        out = StateWriter()
        out.uint(self.season)
        out.uint(self.horizon)
        out.uint(self.seen)
        out.uint(self.next_at)
        ordered = self.ring[self.head :] + self.ring[: self.head]
        out.doubles(ordered)
        out.blob(b"" if self.fit is None else self.fit.to_bytes())
        return bytes(out)

    @classmethod
    def from_bytes(cls, data: bytes) -> Refit:
        """From `to_bytes`; ValueError when it is not such a state."""
        read = StateReader(data)
        season, horizon = read.uint(), read.uint()
        refit = cls(season, horizon)
        if refit.horizon != horizon:
            raise ValueError("a refit's horizon does not fit its season")
        refit.seen, refit.next_at = read.uint(), read.uint()
        ring = read.doubles()
        fit = read.blob()
        read.done()
        if len(ring) > min(refit.seen, refit.window):
            raise ValueError("a refit's window does not fit what it has seen")
        refit.ring = ring
        if fit:
            refit.fit = Fit.from_bytes(fit)
            if refit.fit.season != refit.season or refit.fit.ahead[-1] != refit.horizon:
                raise ValueError("a refit's fit is of another season or horizon")
        return refit
