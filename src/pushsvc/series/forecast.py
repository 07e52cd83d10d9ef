"""What a forecast model gives: the predicted points ahead of a series, each with its 80 % and
95 % prediction intervals (pure).

Both models (`pushsvc.series.forecast_linear`, `pushsvc.series.forecast_holt_winters`) learn
one value per closed bucket and answer `predict(horizon)` with one `Predicted` per bucket ahead
(step 1 is the bucket after the last one learned). An interval is the point forecast plus or
minus a quantile times the forecast's standard error at that step: for Holt-Winters the
quantile of the series' own recent standardised errors that far ahead
(`pushsvc.series.forecast_errors`: real errors are heavier-tailed than normal, and grow ahead
as the series does, not as the model says), a Student t quantile for the linear fit (a
regression on a few points: its residual variance is itself an estimate). Each model's
docstring says where its standard error comes from.

`Model` is the small interface both implement, so the series stage, the checkpoint and the
tests handle either the same way.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

__all__ = ["Z80", "Z95", "Model", "Outlook", "Predicted", "student_t", "with_intervals"]

Z80 = 1.2815515655446004
"""The standard normal's 90th percentile: a central 80 % interval is +- Z80 standard errors."""
Z95 = 1.959963984540054
"""The standard normal's 97.5th percentile: a central 95 % interval."""


@dataclass(frozen=True, slots=True)
class Predicted:
    """The forecast `step` buckets after the last one learned: its mean and its central 80 %
    and 95 % prediction intervals (`lo80 <= mean <= hi80`, and the 95 % one around it)."""

    step: int
    mean: float
    lo80: float
    hi80: float
    lo95: float
    hi95: float


def with_intervals(step: int, mean: float, se: float, q80: float, q95: float) -> Predicted:
    """`mean` with the intervals of standard error `se` and quantiles `q80`, `q95`."""
    return Predicted(step, mean, mean - q80 * se, mean + q80 * se, mean - q95 * se, mean + q95 * se)


def student_t(z: float, dof: int) -> float:
    """The Student t quantile with `dof` degrees of freedom matching the normal quantile `z`:
    the Cornish-Fisher expansion to the 1/dof**3 term (Abramowitz and Stegun 26.7.5), within
    1 % of the exact quantile from 3 degrees of freedom on, 0.5 % from 5 (3.5 % at 2), at 80
    and 95 %."""
    if dof <= 0:
        return math.inf
    z2 = z * z
    g1 = (z2 + 1) * z / 4
    g2 = ((5 * z2 + 16) * z2 + 3) * z / 96
    g3 = (((3 * z2 + 19) * z2 + 17) * z2 - 15) * z / 384
    return z + g1 / dof + g2 / dof**2 + g3 / dof**3


class Outlook(Protocol):
    """What a model's forecast over its horizon needs, kept in a series' place of the model
    (`pushsvc.series.forecast_outlook` has the two kinds; a protocol here, which that module
    imports this one for)."""

    def at(self, steps: Iterable[int]) -> list[Predicted]:
        """The steps asked for (each from 1 up), as the model made them."""
        ...

    def to_bytes(self) -> bytes:
        """Its stored form."""
        ...


class Model(Protocol):
    """A forecast model of one series: learns one value per closed bucket, in order."""

    @property
    def learned(self) -> int:
        """How many values it has learned."""
        ...

    def learn(self, value: float) -> None:
        """The statistic of the bucket that just closed (amortized constant time)."""
        ...

    def predict(self, horizon: int) -> list[Predicted]:
        """Steps 1 to `horizon` after the last value learned; empty until the model has
        learned enough to forecast."""
        ...

    def predict_steps(self, steps: Iterable[int]) -> list[Predicted]:
        """The steps asked for (each from 1 up), as `predict` makes them, in their order: a
        step costs the same whatever the horizon (empty while learning)."""
        ...

    def outlook(self, horizon: int) -> Outlook | None:
        """What the forecast's first `horizon` steps need (`pushsvc.series.forecast_outlook`):
        a few numbers, and a seasonal model's season over at most the horizon; None while
        learning."""
        ...

    def to_bytes(self) -> bytes:
        """The state, for a checkpoint; the class's `from_bytes` restores it exactly."""
        ...
