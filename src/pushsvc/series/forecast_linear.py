"""`LinearModel`: Prometheus' `predict_linear` over a series' last buckets, with prediction
intervals (pure).

`predict_linear(v[range], t)` fits a least-squares line to the samples of the range and
extrapolates it `t` ahead of the evaluation time. Here the samples are the last `window`
closed buckets' values, one bucket apart, and step h is h buckets after the last one: the
line's value at x = last + h. Fewer than two values learned: no forecast (Prometheus returns
nothing either).

Intervals: the classical ones of a simple regression's new observation: standard error
s * sqrt(1 + 1/n + (x0 - mean x)**2 / Sxx), s**2 the residual variance SSE / (n - 2), with
Student t quantiles of n - 2 degrees of freedom (`pushsvc.series.forecast.student_t`). They
assume the points scatter independently around a line; a series that swings around its trend
(a daily cycle seen through a window of hours) gets intervals too narrow far ahead, which is
what the seasonal model is for. With two points there is no residual: the intervals are the
line itself.

Cost: the window's values in a ring buffer (8 bytes each) and the sums the fit needs
(n, sum y, sum x*y, sum y*y, the x sums being exact integers); a new value adds its terms and
removes the oldest's, in constant time. The sums are of values minus a reference and at x
counted from a base, and are recomputed from the ring every `window` values (amortized
constant time), so rounding cannot accumulate and a long-running fit equals a fresh fit of
the same points (to about 1e-12 relative).
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable

from pushsvc.series.forecast import Predicted
from pushsvc.series.forecast_outlook import LinearOutlook
from pushsvc.stats.state_codec import StateReader, StateWriter

__all__ = ["MIN_WINDOW", "LinearModel"]

MIN_WINDOW = 2
"""A line needs two points."""
_VERSION = 1


class LinearModel:
    """A least-squares line over the last `window` values learned. Not greenlet-safe."""

    __slots__ = (
        "_head",
        "_learned",
        "_ref",
        "_since",
        "_sxy",
        "_sy",
        "_syy",
        "_x0",
        "ring",
        "window",
    )  # fmt: skip

    def __init__(self, window: int) -> None:
        if window < MIN_WINDOW:
            raise ValueError(f"a linear fit needs a window of at least {MIN_WINDOW} values")
        self.window = window
        self.ring = array("d")
        """The window's values, oldest at `_head` once full."""
        self._head = 0
        self._learned = 0
        self._ref = 0.0
        """The sums are of value - `_ref` (the oldest value at the last recompute)."""
        self._x0 = 0
        """The x of the oldest value in the window (the newest's is `_x0 + len(ring) - 1`)."""
        self._since = 0
        """Values learned since the sums were recomputed."""
        self._sy = self._sxy = self._syy = 0.0

    @property
    def learned(self) -> int:
        return self._learned

    def learn(self, value: float) -> None:
        ring, n = self.ring, len(self.ring)
        self._learned += 1
        if n < self.window:
            ring.append(value)
            x = self._x0 + n
        else:
            old = ring[self._head] - self._ref
            self._sy -= old
            self._sxy -= self._x0 * old
            self._syy -= old * old
            ring[self._head] = value
            self._head = (self._head + 1) % n
            self._x0 += 1
            x = self._x0 + n - 1
        y = value - self._ref
        self._sy += y
        self._sxy += x * y
        self._syy += y * y
        self._since += 1
        if self._since >= self.window:
            self._recompute()

    def _recompute(self) -> None:
        """The sums afresh from the ring, x from 0 at the oldest value, y about the oldest."""
        values = self.values()
        self._head = 0
        self.ring = array("d", values)
        self._x0 = 0
        self._since = 0
        ref = self._ref = values[0] if values else 0.0
        self._sy = math.fsum(v - ref for v in values)
        self._sxy = math.fsum(i * (v - ref) for i, v in enumerate(values))
        self._syy = math.fsum((v - ref) * (v - ref) for v in values)

    def values(self) -> list[float]:
        """The window's values, oldest first."""
        ring, head = self.ring, self._head
        return list(ring[head:]) + list(ring[:head])

    def line(self) -> tuple[float, float] | None:
        """(intercept at the newest value, slope per bucket), None below two values."""
        n = len(self.ring)
        if n < MIN_WINDOW:
            return None
        x0 = self._x0
        # The x's are x0 .. x0 + n - 1: their sums are exact integers.
        sx = n * x0 + n * (n - 1) // 2
        sxx_c = n * (n * n - 1) / 12  # sum (x - mean x)**2 of n consecutive integers
        sxy_c = self._sxy - sx * self._sy / n
        slope = sxy_c / sxx_c
        mean_y = self._sy / n + self._ref
        newest = x0 + n - 1
        return mean_y + slope * (newest - sx / n), slope

    def outlook(self, horizon: int) -> LinearOutlook | None:
        """The fitted line, what every step of a forecast needs (None below two values)."""
        fit = self.line()
        if fit is None:
            return None
        level, slope = fit
        n = len(self.ring)
        s2 = 0.0
        if n > 2:
            sxx_c = n * (n * n - 1) / 12
            sxy_c = self._sxy - (n * self._x0 + n * (n - 1) // 2) * self._sy / n
            syy_c = self._syy - self._sy * self._sy / n
            s2 = max(syy_c - sxy_c * sxy_c / sxx_c, 0.0) / (n - 2)
        return LinearOutlook(level, slope, s2, n)

    def predict(self, horizon: int) -> list[Predicted]:
        return self.predict_steps(range(1, horizon + 1))

    def predict_steps(self, steps: Iterable[int]) -> list[Predicted]:
        outlook = self.outlook(0)
        return [] if outlook is None else outlook.at(steps)

    def to_bytes(self) -> bytes:
        """Every field as it is (the ring as stored, the running sums bit for bit), so a
        restored model forecasts exactly as the running one would have."""
        out = StateWriter()
        for field in (_VERSION, self.window, self._learned, self._head, self._since):
            out.uint(field)
        out.sint(self._x0)
        for value in (self._ref, self._sy, self._sxy, self._syy):
            out.double(value)
        out.uint(len(self.ring))
        for v in self.ring:
            out.double(v)
        return bytes(out)

    @classmethod
    def from_bytes(cls, data: bytes) -> LinearModel:
        """From `to_bytes`; ValueError when it is not such a state."""
        read = StateReader(data)
        if read.uint() != _VERSION:
            raise ValueError("unknown linear forecast state version")
        model = cls(read.uint())
        model._learned, model._head, model._since = read.uint(), read.uint(), read.uint()
        model._x0 = read.sint()
        model._ref, model._sy, model._sxy, model._syy = (read.double() for _ in range(4))
        count = read.uint()
        if count > model.window or model._head >= max(count, 1):
            raise ValueError("linear forecast state does not fit its window")
        model.ring = array("d", (read.double() for _ in range(count)))
        read.done()
        return model
