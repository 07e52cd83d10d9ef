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
twice, in thousandths of a standard error as 2-byte counts (a quantile's rounding is below
any interval's sampling error): in arrival order (to drop the oldest) and sorted (a quantile
is one index); a new error is one binary search and two moves of at most the window in
memory. A value learned costs `TRACKED` of those. The checkpoint keeps each window's arrival
order only, and the sorted copy is rebuilt from it exactly.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left, insort
from collections.abc import Callable, Iterable, Sequence

from pushsvc.series.forecast import Z80, Z95
from pushsvc.stats.state_codec import StateReader, StateWriter, little_endian

__all__ = [
    "LEAST", "LONGEST", "MILLI", "TRACKED", "WINDOW", "Band", "ErrorWindow", "HorizonErrors",
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
MILLI = 1000
"""A window keeps each error in thousandths of a standard error, as a 2-byte count."""
_MOST = 65_535
"""The largest count: an error beyond 65.5 standard errors is kept as 65.5 (it moves a
quantile only if a twentieth of the window is that far out)."""

Quantiles = tuple[tuple[int, float, float], ...]
"""(k, q80, q95) for each tracked horizon k with enough errors, k ascending."""


def tracked_horizons(horizon: int) -> tuple[int, ...]:
    """The horizons tracked for forecasts up to `horizon` steps ahead."""
    last = max(1, min(horizon, LONGEST))
    return tuple(sorted({round(last ** (j / (TRACKED - 1))) for j in range(TRACKED)}))


class Band:
    """The intervals' half-widths at any step, from a table of quantiles by horizon and the
    model's standard errors `se(h)` (increasing in h, as an ETS model's are): on each stretch
    between two tracked horizons a half-width is a line in the standard error, `lines[i]` =
    (a80, b80, a95, b95) for the steps h with `edges[i - 1] < h <= edges[i]` (i = 0: up to the
    first; i = len(edges): past the last), w = a + b * se."""

    __slots__ = ("edges", "lines")

    def __init__(self, table: Quantiles, se: Callable[[int], float]) -> None:
        self.edges = [k for k, _, _ in table]
        if not table:
            self.lines = [(0.0, Z80, 0.0, Z95)]
            return
        ses = [se(k) for k in self.edges]
        widths: list[tuple[float, float]] = []
        for (_, q80, q95), s in zip(table, ses, strict=True):
            w80, w95 = q80 * s, q95 * s
            if widths:  # never narrower further ahead
                w80, w95 = max(w80, widths[-1][0]), max(w95, widths[-1][1])
            widths.append((w80, w95))
        # Up to the first and past the last: the quantile times the standard error.
        lines = [_through(widths[0], ses[0])]
        for i in range(1, len(widths)):
            (a80, a95), (b80, b95) = widths[i - 1], widths[i]
            rise = ses[i] - ses[i - 1]
            if rise > 0:
                slope80, slope95 = (b80 - a80) / rise, (b95 - a95) / rise
                lines.append(
                    (a80 - slope80 * ses[i - 1], slope80, a95 - slope95 * ses[i - 1], slope95)
                )
            else:  # a standard error that does not grow: the further horizon's width
                lines.append((b80, 0.0, b95, 0.0))
        lines.append(_through(widths[-1], ses[-1]))
        self.lines = lines

    def at(self, h: int, se: float) -> tuple[float, float]:
        """(half-width of the 80 % interval, of the 95 %) `h` steps ahead, where the model's
        standard error is `se`."""
        a80, b80, a95, b95 = self.lines[bisect_left(self.edges, h)]
        return a80 + b80 * se, a95 + b95 * se


def _through(widths: tuple[float, float], se: float) -> tuple[float, float, float, float]:
    """The line through the origin and (se, widths): the widths' quantiles at any se."""
    if se > 0:
        return 0.0, widths[0] / se, 0.0, widths[1] / se
    return widths[0], 0.0, widths[1], 0.0


class ErrorWindow:
    """The last `WINDOW` standardised absolute errors, in thousandths of a standard error
    (`MILLI`), and their conformal quantiles."""

    __slots__ = ("_next", "_ring", "_sorted")

    def __init__(self) -> None:
        self._ring = array("H")
        """In arrival order, as a ring once full: `_next` is the oldest."""
        self._sorted = array("H")
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
        self._add(min(round(z * MILLI), _MOST))

    def _add(self, stored: int) -> None:
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
        return ordered[_rank(80, n)] / MILLI, ordered[_rank(95, n)] / MILLI

    def to_bytes(self) -> bytes:
        """The window's counts of `MILLI`, oldest first (`StateWriter.counts`)."""
        ring = self._ring
        out = StateWriter()
        out.counts(ring[self._next :] + ring[: self._next])
        return bytes(out)

    @classmethod
    def from_bytes(cls, data: bytes) -> ErrorWindow:
        """From `to_bytes`; ValueError when it is not such a window."""
        try:
            read = StateReader(data)
            counts = read.counts()
            read.done()
        except ValueError as error:
            raise ValueError(f"a forecast's error window does not read: {error}") from None
        if len(counts) > WINDOW or any(c > _MOST for c in counts):
            raise ValueError("a forecast's error window does not fit")
        out = cls()
        out._ring = array("H", counts)
        out._sorted = array("H", sorted(out._ring))
        return out

    @classmethod
    def from_floats(cls, data: bytes) -> ErrorWindow:
        """From the 4-byte floats an older state kept, oldest first (the last `WINDOW` of
        them); ValueError when they are not such a window."""
        if len(data) % 4:
            raise ValueError("a forecast's error window does not fit")
        floats = array("f")
        floats.frombytes(data)
        floats = little_endian(floats)
        if not all(math.isfinite(z) and z >= 0 for z in floats):
            raise ValueError("a forecast's error window holds a bad value")
        out = cls()
        for z in floats[-WINDOW:]:
            out._add(min(round(z * MILLI), _MOST))
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
            out.doubles(means)
            out.blob(little_endian(sds).tobytes())
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
            mean, sd = read.doubles(), array("f")
            sd.frombytes(read.blob())
            if not 1 <= k <= LONGEST or len(mean) != len(sd) or len(mean) > k:
                raise ValueError("a forecast's errors in flight do not fit their horizon")
            horizons.append(k)
            means.append(mean)
            sds.append(little_endian(sd))
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
        out.windows[0] = ErrorWindow.from_floats(window)
        return out


def _rank(percent: int, n: int) -> int:
    """The index of the conformal quantile of n sorted values: ceil((n + 1) * percent / 100)
    - 1 (in integers), at most the largest's."""
    return min(n, -(-(n + 1) * percent // 100)) - 1
