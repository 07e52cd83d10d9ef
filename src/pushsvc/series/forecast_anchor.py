"""`Anchor`: a fixed seasonal model a fitted one is combined with, and `ANCHORS`, which (pure).

A fitted `holt_winters` series (`pushsvc.series.forecast_holt_winters`) forecasts a mix of
three forecasts: its own fitted ETS(A,Ad,A) model's and two anchors', ETS(A,N,A) models with
fixed parameters learning the same values: a slow one, the fixed defaults (alpha 0.02, gamma
0.1: a level and a season that move slowly, no trend), and a fast one (alpha 0.5: a level that
follows half of each error). Why: a fit chases what the last few seasons did by its errors up
to the horizon, so its errors on real series are large where that was unusual; the slow
model's are large where the series moves, the fast one's further ahead. Combined, they were
more accurate than the fitted model alone on NAB's 5-minute and hourly files
(docs/performance.md), as combining forecasts usually is (the M3 and M4 competitions'
combinations of exponential smoothing models; pooling models of other smoothing parameters,
Kourentzes, Barrow and Petropoulos, 2019). How much of each, horizon by horizon, their recent
errors say (`pushsvc.series.forecast_weights`).

What a forecast keeps of them is its outlook: the fitted model's, with each anchor's level and
season over the same steps and the weights (`forecast_outlook.AnchorsOutlook`).

Cost: a level and a season (8 bytes a phase) an anchor, one update per value learned; started
from the same two seasons as the model it anchors (as a fixed model with no trend starts).
"""

from __future__ import annotations

import math
from array import array

from pushsvc.rules.forecast import DEFAULT_ALPHA, DEFAULT_GAMMA
from pushsvc.stats.state_codec import StateReader, StateWriter

__all__ = ["ANCHORS", "FAST_ALPHA", "Anchor"]

FAST_ALPHA = 0.5
"""The fast anchor's alpha (its gamma is the defaults')."""
ANCHORS = (DEFAULT_ALPHA, FAST_ALPHA)
"""The anchors' alphas, in their order in a model's state and in the combination."""


class Anchor:
    """A level and a season of `season` phases, moved by `alpha` and gamma `DEFAULT_GAMMA` of
    each one-step error. Not greenlet-safe."""

    __slots__ = ("alpha", "level", "seasonal")

    def __init__(
        self, alpha: float, level: float = 0.0, seasonal: array[float] | None = None
    ) -> None:
        self.alpha = alpha
        self.level = level
        self.seasonal = array("d") if seasonal is None else seasonal
        """By phase; empty until the start."""

    @classmethod
    def begun(cls, alpha: float, values: array[float], season: int) -> Anchor:
        """Started from the first two seasons' `values`, as a model without trend starts: the
        first season's mean, and each phase's mean deviation from it."""
        m = season
        first = math.fsum(values[:m]) / m
        seasonal = array("d", ((values[i] + values[i + m]) / 2 - first for i in range(m)))
        return cls(alpha, first, seasonal)

    def learn(self, value: float, phase: int) -> None:
        seasonal = self.seasonal
        error = value - (self.level + seasonal[phase])
        self.level += self.alpha * error
        seasonal[phase] += DEFAULT_GAMMA * error

    def to_bytes(self) -> bytes:
        out = StateWriter()
        out.double(self.level)
        out.doubles(self.seasonal)
        return bytes(out)

    @classmethod
    def from_bytes(cls, alpha: float, data: bytes, season: int) -> Anchor:
        """From `to_bytes` of an anchor of `alpha`; ValueError when it is not the anchor of a
        season of `season`."""
        read = StateReader(data)
        level = read.double()
        seasonal = read.doubles()
        read.done()
        if len(seasonal) not in (0, season):
            raise ValueError("a forecast's anchor does not fit its season")
        return cls(alpha, level, seasonal)
