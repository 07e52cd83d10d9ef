"""`HorizonErrors`: the 80 % and 95 % quantiles of a seasonal model's recent standardised
errors at a few horizons, each from a fixed window of that horizon's own errors, and `Band`,
the intervals' half-widths they give at every step (pure).

Why. Holt-Winters' intervals are its forecast's standard error h steps ahead, sqrt(var_h),
times a quantile (`pushsvc.series.forecast_holt_winters`). Normal quantiles suit a model that
is the process. On real series it is not: their errors are heavier-tailed than Gaussian (the
normal 80 % interval too wide one step ahead), and ahead they grow as the series does, not as
the parameters say (a model fitted for its point forecasts has a variance that grows too
slowly or too fast; docs/performance.md has the coverage on real series). So the quantiles
come from the series itself, horizon by horizon: each forecast made k steps ahead is kept
until its value comes, its error standardised by the standard error it was made with,
|e| / sqrt(var_k), and the quantile q_p at k is the conformal one of the last `WINDOW` of
them, the ceil((n + 1) * p)-th smallest of n (split conformal prediction: for exchangeable
errors a value falls within q_p standard errors with probability at least p, whatever their
distribution). Symmetric: the absolute errors pool both tails, twice the sample of either.

Which horizons. `TRACKED` of them, evenly spaced in log h from 1 to the forecast's horizon
(at most `LONGEST`): for a horizon of a day, 1, 2, 4, 7, 13 and 24 hourly steps, or 1, 3, 10,
30, 93 and 288 five-minute ones. At a tracked horizon the half-width is its quantile times
the standard error; between two, it moves from one's to the other's as the model's standard
error does (so the interval widens as the model says between them, and matches each tracked
horizon's errors at it); past the last, it grows from the last's as the standard error does.
It is never narrower than a nearer tracked horizon's: a forecast further ahead is never more
certain. A horizon whose window holds fewer than `LEAST` errors is left out (a day ahead, for
the first day), and with none the quantiles are normal. The spacing and the window were
chosen on NAB's 5-minute and hourly files (docs/performance.md).

Cost: per tracked horizon k, the forecasts in flight (k of them, 12 bytes each) and the window
twice, as 4-byte floats: in arrival order (to drop the oldest) and sorted (a quantile is one
index); a new error is one binary search and two moves of at most the window in memory. A
value learned costs `TRACKED` of those. The checkpoint keeps each window's arrival order only,
and the sorted copy is rebuilt from it exactly (the same floats).
"""

from __future__ import annotations

import math
import sys
from array import array
from bisect import bisect_left, insort
from collections.abc import Callable, Iterable, Sequence

from pushsvc.series.forecast import Z80, Z95
from pushsvc.stats.state_codec import StateReader, StateWriter

__all__ = [
    "LEAST", "LONGEST", "TRACKED", "WINDOW", "Band", "ErrorWindow", "HorizonErrors",
    "Quantiles", "tracked_horizons",
]  # fmt: skip

WINDOW = 500
"""Standardised errors kept per horizon: the 5 % beyond the 95 % quantile are 25 of them,
and the window forgets a series' older behaviour within a few hundred buckets."""
LEAST = 100
"""Errors a horizon needs before its quantiles count."""
TRACKED = 6
"""Horizons whose errors are kept."""
LONGEST = 288
"""The furthest horizon tracked (a day of 5-minute buckets): further ahead, its quantiles."""

Quantiles = tuple[tuple[int, float, float], ...]
"""(k, q80, q95) for each tracked horizon k with enough errors, k ascending."""


def tracked_horizons(horizon: int) -> tuple[int, ...]:
    """The horizons tracked for forecasts up to `horizon` steps ahead."""
    last = max(1, min(horizon, LONGEST))
    return tuple(sorted({round(last ** (j / (TRACKED - 1))) for j in range(TRACKED)}))


class Band:
    """The intervals' half-widths at any step, from a table of quantiles by horizon and the
    model's standard errors `se(h)` (non-decreasing in h, as an ETS model's are)."""

    __slots__ = ("_horizons", "_ses", "_widths")

    def __init__(self, table: Quantiles, se: Callable[[int], float]) -> None:
        self._horizons = [k for k, _, _ in table]
        self._ses = [se(k) for k in self._horizons]
        widths: list[tuple[float, float]] = []
        for (_, q80, q95), s in zip(table, self._ses, strict=True):
            w80, w95 = q80 * s, q95 * s
            if widths:  # never narrower further ahead
                w80, w95 = max(w80, widths[-1][0]), max(w95, widths[-1][1])
            widths.append((w80, w95))
        self._widths = widths

    def at(self, h: int, se: float) -> tuple[float, float]:
        """(half-width of the 80 % interval, of the 95 %) `h` steps ahead, where the model's
        standard error is `se` (module docstring)."""
        horizons, ses, widths = self._horizons, self._ses, self._widths
        if not horizons:
            return Z80 * se, Z95 * se
        i = bisect_left(horizons, h)
        if i == 0 or i == len(horizons):  # up to the first, or past the last: as the model
            j = min(i, len(horizons) - 1)
            ratio = se / ses[j] if ses[j] > 0 else 1.0
            return widths[j][0] * ratio, widths[j][1] * ratio
        a, b = horizons[i - 1], horizons[i]
        if ses[i] > ses[i - 1]:
            t = (se - ses[i - 1]) / (ses[i] - ses[i - 1])
        else:
            t = math.log(h / a) / math.log(b / a)
        (a80, a95), (b80, b95) = widths[i - 1], widths[i]
        return a80 + t * (b80 - a80), a95 + t * (b95 - a95)


class ErrorWindow:
    """The last `WINDOW` standardised absolute errors and their conformal quantiles."""

    __slots__ = ("_next", "_ring", "_sorted")

    def __init__(self) -> None:
        self._ring = array("f")
        """In arrival order, as a ring once full: `_next` is the oldest."""
        self._sorted = array("f")
        self._next = 0

    def __len__(self) -> int:
        return len(self._ring)

    def add(self, error: float, var: float) -> None:
        """An error `error` of a forecast of variance `var` (ignored when var is not positive,
        or the ratio not finite)."""
        if not var > 0:
            return
        z = abs(error) / math.sqrt(var)
        if not math.isfinite(z):
            return
        stored = array("f", (z,))[0]  # as the window holds it
        ring, ordered = self._ring, self._sorted
        if len(ring) < WINDOW:
            ring.append(stored)
        else:
            old = ring[self._next]
            del ordered[bisect_left(ordered, old)]
            ring[self._next] = stored
            self._next = (self._next + 1) % WINDOW
        insort(ordered, stored)

    def quantiles(self) -> tuple[float, float] | None:
        """(q80, q95): the interval's half-widths in standard errors; None below `LEAST`."""
        ordered = self._sorted
        n = len(ordered)
        if n < LEAST:
            return None
        return ordered[_rank(80, n)], ordered[_rank(95, n)]

    def to_bytes(self) -> bytes:
        """The window, oldest first, as little-endian 4-byte floats."""
        ring = self._ring
        return _little(ring[self._next :] + ring[: self._next]).tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> ErrorWindow:
        """From `to_bytes` (the last `WINDOW` of a longer one); ValueError when it is not
        such a window."""
        if len(data) % 4:
            raise ValueError("a forecast's error window does not fit")
        ring = array("f")
        ring.frombytes(data)
        ring = _little(ring)[-WINDOW:]
        if not all(math.isfinite(z) and z >= 0 for z in ring):
            raise ValueError("a forecast's error window holds a bad value")
        out = cls()
        out._ring = ring
        out._sorted = array("f", sorted(ring))
        return out


class HorizonErrors:
    """The forecasts in flight and the error windows of each tracked horizon."""

    __slots__ = ("horizons", "means", "sds", "windows")

    def __init__(self, horizons: Iterable[int]) -> None:
        self.horizons = tuple(horizons)
        self.means = [array("d") for _ in self.horizons]
        """Per horizon k, the forecasts made k steps ahead whose value has not come, oldest
        first (at most k)."""
        self.sds = [array("f") for _ in self.horizons]
        """Their standard errors."""
        self.windows = [ErrorWindow() for _ in self.horizons]

    def observe(self, value: float) -> None:
        """The value a forecast of each horizon made that many steps before was for."""
        for k, means, sds, window in zip(
            self.horizons, self.means, self.sds, self.windows, strict=True
        ):
            if len(means) == k:
                sd = sds.pop(0)
                window.add(value - means.pop(0), sd * sd)

    def expect(self, forecasts: Sequence[tuple[float, float]]) -> None:
        """Each tracked horizon's forecast (mean, standard error), made now."""
        for (mean, sd), means, sds in zip(forecasts, self.means, self.sds, strict=True):
            means.append(mean)
            sds.append(sd)

    def quantiles(self) -> Quantiles:
        """The table `quantiles_at` reads."""
        out = []
        for k, window in zip(self.horizons, self.windows, strict=True):
            q = window.quantiles()
            if q is not None:
                out.append((k, *q))
        return tuple(out)

    def tracking(self, horizons: tuple[int, ...]) -> HorizonErrors:
        """These errors, tracking `horizons`: a horizon kept keeps its forecasts and window,
        a new one starts empty."""
        if horizons == self.horizons:
            return self
        out = HorizonErrors(horizons)
        for i, k in enumerate(horizons):
            if k in self.horizons:
                j = self.horizons.index(k)
                out.means[i], out.sds[i] = self.means[j], self.sds[j]
                out.windows[i] = self.windows[j]
        return out

    def to_bytes(self) -> bytes:
        out = StateWriter()
        out.uint(len(self.horizons))
        for k, means, sds, window in zip(
            self.horizons, self.means, self.sds, self.windows, strict=True
        ):
            out.uint(k)
            out.blob(_little(means).tobytes())
            out.blob(_little(sds).tobytes())
            out.blob(window.to_bytes())
        return bytes(out)

    @classmethod
    def from_bytes(cls, data: bytes) -> HorizonErrors:
        """From `to_bytes`; ValueError when it is not such a state."""
        read = StateReader(data)
        count = read.uint()
        if count > TRACKED:
            raise ValueError("a forecast's error horizons do not fit")
        horizons, means, sds, windows = [], [], [], []
        for _ in range(count):
            k = read.uint()
            mean, sd = array("d"), array("f")
            mean.frombytes(read.blob())
            sd.frombytes(read.blob())
            if not 1 <= k <= LONGEST or len(mean) != len(sd) or len(mean) > k:
                raise ValueError("a forecast's errors in flight do not fit their horizon")
            horizons.append(k)
            means.append(_little(mean))
            sds.append(_little(sd))
            windows.append(ErrorWindow.from_bytes(read.blob()))
        read.done()
        if horizons != sorted(set(horizons)):
            raise ValueError("a forecast's error horizons are not ascending")
        out = cls(horizons)
        out.means, out.sds, out.windows = means, sds, windows
        return out

    @classmethod
    def one_step(cls, window: bytes) -> HorizonErrors:
        """From the one-step window an older state kept (`ErrorWindow.to_bytes`)."""
        out = cls((1,))
        out.windows[0] = ErrorWindow.from_bytes(window)
        return out


def _rank(percent: int, n: int) -> int:
    """The index of the conformal quantile of n sorted values: ceil((n + 1) * percent / 100)
    - 1 (in integers), at most the largest's."""
    return min(n, -(-(n + 1) * percent // 100)) - 1


def _little(values: array[float]) -> array[float]:
    """`values` in little-endian order, both ways (a copy on a big-endian machine)."""
    if sys.byteorder == "little":
        return values
    swapped = array(values.typecode, values)
    swapped.byteswap()
    return swapped
