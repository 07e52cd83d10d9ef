"""`CombinationWeights`: how much of a fitted model's forecast, against its anchor's, a
combined forecast takes at each horizon, from the two models' recent errors there (pure).

Why. A fitted `holt_winters` series forecasts a mix of its fitted ETS(A,Ad,A) model's forecast
and its anchor's, the slow fixed-default model (`pushsvc.series.forecast_anchor`, which says
why two). Which of the two is the better differs by series and by horizon: a fit that follows
the last few seasons is often the better one step ahead and the worse a day ahead, or the
other way round. So each horizon's weights are the two models' own recent record there: each
model's weight is inversely proportional to its mean squared error (Bates and Granger, "The
Combination of Forecasts", 1969), the fitted model's mse_anchor / (mse_fitted + mse_anchor).
Equal weights until a horizon has an error. On NAB's 5-minute and hourly files, where they were
chosen, these weights were more accurate than equal ones at every horizon by MASE and sMAPE,
on most series (docs/performance.md); how fast the mean squares forget (`SPAN`) mattered little
there between 25 and 500.

Which horizons: those whose intervals' errors are tracked (`forecast_errors.tracked_horizons`,
evenly spaced in log steps from 1 to the forecast's horizon, at most `LONGEST`). Between two,
the weight is a line in the step; past the last, the last's.

A mean square averages all errors up to `SPAN` of them, then weighs them exponentially with that
span (as a model's one-step variance does).

Cost: per tracked horizon k, both models' forecasts in flight (k pairs of doubles) and the two
mean squares; a value learned costs `TRACKED` of those updates.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Sequence

from pushsvc.series.forecast_errors import LONGEST, TRACKED
from pushsvc.stats.state_codec import StateReader, StateWriter, little_endian

__all__ = ["SPAN", "CombinationWeights", "Weights", "combined", "fitted_share"]

SPAN = 100
"""Errors a mean square averages, then the span it weighs them with."""

Weights = tuple[tuple[int, float], ...]
"""(k, the fitted model's weight) for each tracked horizon k, k ascending; empty: equal."""


def fitted_share(weights: Weights, h: int) -> float:
    """The fitted model's weight `h` steps ahead: a tracked horizon's, a line between two, the
    last's past it (0.5 with none)."""
    if not weights:
        return 0.5
    i = bisect_left(weights, (h,))
    if i == len(weights):
        return weights[-1][1]
    k, w = weights[i]
    if k == h or i == 0:
        return w
    before, v = weights[i - 1]
    return v + (w - v) * (h - before) / (k - before)


def combined(share: float, fitted: float, anchor: float) -> float:
    """The combined forecast of the fitted model's `fitted` and the anchor's `anchor`, the
    fitted one's weight `share`."""
    return share * fitted + (1 - share) * anchor


class CombinationWeights:
    """Both models' forecasts in flight and mean squared errors at each tracked horizon."""

    __slots__ = ("anchored", "counts", "fitted", "horizons", "squares")

    def __init__(self, horizons: Iterable[int]) -> None:
        self.horizons = tuple(horizons)
        self.fitted = [array("d") for _ in self.horizons]
        """Per horizon k, the fitted model's forecasts made k steps ahead whose value has not
        come, oldest first (at most k)."""
        self.anchored = [array("d") for _ in self.horizons]
        """The anchor's, alongside."""
        self.squares = [array("d", (0.0, 0.0)) for _ in self.horizons]
        """Per horizon, the fitted model's and the anchor's mean squared errors."""
        self.counts = [0] * len(self.horizons)
        """The errors each horizon's mean squares have seen (up to `SPAN`)."""

    def observe(self, value: float) -> None:
        """The value each horizon's oldest forecasts in flight were for."""
        for i, k in enumerate(self.horizons):
            fitted, anchored = self.fitted[i], self.anchored[i]
            if len(fitted) < k:
                continue
            own, other = value - fitted.pop(0), value - anchored.pop(0)
            if not (math.isfinite(own) and math.isfinite(other)):
                continue
            n = self.counts[i] = min(self.counts[i] + 1, SPAN)
            squares = self.squares[i]
            squares[0] += (own * own - squares[0]) / n
            squares[1] += (other * other - squares[1]) / n

    def expect(self, forecasts: Sequence[tuple[float, float]]) -> None:
        """Each tracked horizon's (fitted, anchor) forecast, made now."""
        for (own, other), fitted, anchored in zip(
            forecasts, self.fitted, self.anchored, strict=True
        ):
            fitted.append(own)
            anchored.append(other)

    def weights(self) -> Weights:
        """The fitted model's weight at each tracked horizon with an error."""
        out = []
        for k, n, (own, other) in zip(self.horizons, self.counts, self.squares, strict=True):
            if n:
                total = own + other
                out.append((k, other / total if total > 0 and math.isfinite(total) else 0.5))
        return tuple(out)

    def tracking(self, horizons: tuple[int, ...]) -> CombinationWeights:
        """These weights, tracking `horizons`: a horizon kept keeps its forecasts and mean
        squares, a new one starts with none."""
        if horizons == self.horizons:
            return self
        out = CombinationWeights(horizons)
        for i, k in enumerate(horizons):
            if k in self.horizons:
                j = self.horizons.index(k)
                out.fitted[i], out.anchored[i] = self.fitted[j], self.anchored[j]
                out.squares[i], out.counts[i] = self.squares[j], self.counts[j]
        return out

    def to_bytes(self) -> bytes:
        out = StateWriter()
        out.uint(len(self.horizons))
        for i, k in enumerate(self.horizons):
            out.uint(k)
            out.uint(self.counts[i])
            for blob in (self.squares[i], self.fitted[i], self.anchored[i]):
                out.blob(little_endian(blob).tobytes())
        return bytes(out)

    @classmethod
    def from_bytes(cls, data: bytes) -> CombinationWeights:
        """From `to_bytes`; ValueError when it is not such a state."""
        read = StateReader(data)
        count = read.uint()
        if count > TRACKED:
            raise ValueError("a forecast's combination horizons do not fit")
        horizons, rows = [], []
        for _ in range(count):
            k, n = read.uint(), read.uint()
            squares, fitted, anchored = (_doubles(read.blob()) for _ in range(3))
            if not 1 <= k <= LONGEST or not 0 <= n <= SPAN or len(squares) != 2:
                raise ValueError("a forecast's combination weights do not fit")
            if len(fitted) != len(anchored) or len(fitted) > k:
                raise ValueError("a forecast's combined forecasts in flight do not fit")
            if not all(s >= 0 for s in squares):
                raise ValueError("a forecast's combination weights hold a bad value")
            horizons.append(k)
            rows.append((n, squares, fitted, anchored))
        read.done()
        if horizons != sorted(set(horizons)):
            raise ValueError("a forecast's combination horizons are not ascending")
        out = cls(horizons)
        for i, (n, squares, fitted, anchored) in enumerate(rows):
            out.counts[i], out.squares[i] = n, squares
            out.fitted[i], out.anchored[i] = fitted, anchored
        return out


def _doubles(raw: bytes) -> array[float]:
    if len(raw) % 8:
        raise ValueError("a forecast's combination weights are not whole doubles")
    out = array("d")
    out.frombytes(raw)
    return little_endian(out)
