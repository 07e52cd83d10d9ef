"""`CombinationWeights`: how much of each member's forecast a fitted model's combined forecast
takes at each horizon, from the members' recent errors there (pure).

Why. A fitted `holt_winters` series forecasts a mix of three (`pushsvc.series.forecast_anchor`,
which says why these): its fitted ETS(A,Ad,A) model's forecast and two anchors', a slow and a
fast fixed model. Which is the better differs by series and by horizon: the fast model is often
the best one step ahead and the worst a day ahead, the fitted one the other way round, or
neither. So each horizon's weights are the members' own recent record there: the two with the
smaller mean squared errors, each weighted by the other's, mse_b / (mse_a + mse_b) for a (the
inverse of its mean squared error, normalised: Bates and Granger, "The Combination of
Forecasts", 1969), and the worst none (a trimmed combination: Timmermann, "Forecast
Combinations", 2006). Equal weights until a horizon has an error. On NAB's 5-minute and hourly
files, where this was chosen, the three so weighted were more accurate one step ahead than the
fitted and the slow model combined in equal or in such weights, and about as accurate further
ahead; all three weighted, without the trim, were less accurate a day ahead
(docs/performance.md). How fast the mean squares forget (`SPAN`) mattered little there.

Which horizons: those whose intervals' errors are tracked (`forecast_errors.tracked_horizons`,
evenly spaced in log steps from 1 to the forecast's horizon, at most `LONGEST`). Between two,
each weight is a line in the step; past the last, the last's.

A mean square averages all errors up to `SPAN` of them, then weighs them exponentially with that
span (as a model's one-step variance does).

Cost: per tracked horizon k, each member's forecasts in flight (k doubles a member) and its mean
square; a value learned costs `TRACKED` of those updates.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Sequence

from pushsvc.series.forecast_errors import LONGEST, TRACKED
from pushsvc.stats.state_codec import StateReader, StateWriter

__all__ = ["SPAN", "Blend", "CombinationWeights", "Shares", "Weights"]

SPAN = 100
"""Errors a mean square averages, then the span it weighs them with."""

Shares = tuple[float, ...]
"""Each member's weight, in the members' order; they sum to 1."""
Weights = tuple[tuple[int, Shares], ...]
"""(k, the members' weights k steps ahead) for each tracked horizon k with an error, k
ascending; empty: equal weights at every step."""


class Blend:
    """The members' combined forecast at any step, from a table of their weights by horizon:
    on each stretch between two tracked horizons each weight is a line in the step,
    `lines[i]` = ((a, b) for each member but the first) for the steps h with `edges[i - 1] < h
    <= edges[i]` (i = 0: up to the first; i = len(edges): past the last), w = a + b * h, the
    first member's weight the rest."""

    __slots__ = ("edges", "lines")

    def __init__(self, weights: Weights, members: int) -> None:
        self.edges = edges = [k for k, _ in weights]
        if not weights:
            self.lines = [((1 / members, 0.0),) * (members - 1)]
            return
        before, then = edges[0], weights[0][1][1:]
        lines = [tuple([(w, 0.0) for w in then])]
        for k, (_, shares) in zip(edges[1:], weights[1:], strict=True):
            at, span = shares[1:], k - before
            line = []
            for v, w in zip(then, at, strict=True):
                slope = (w - v) / span
                line.append((v - slope * before, slope))
            lines.append(tuple(line))
            before, then = k, at
        lines.append(tuple([(w, 0.0) for w in then]))
        self.lines = lines

    def mixed(self, h: int, first: float, others: Iterable[float]) -> float:
        """The combined forecast `h` steps ahead of the first member's `first` and the others'
        `others`: the first's plus each other's weighted difference from it (so members that
        agree give their forecast exactly, as a model whose anchors start from its own state
        does)."""
        total = first
        for (a, b), other in zip(self.lines[bisect_left(self.edges, h)], others, strict=True):
            total += (a + b * h) * (other - first)
        return total


def _trimmed(squares: Sequence[float]) -> Shares:
    """The weights of members of these mean squared errors: the better two's, each the
    other's share of their sum; the others' none (equal where both are 0)."""
    order = sorted(range(len(squares)), key=squares.__getitem__)
    out = [0.0] * len(squares)
    if len(order) == 1:
        return (1.0,)
    a, b = order[0], order[1]
    total = squares[a] + squares[b]
    if total > 0 and math.isfinite(total):
        out[a], out[b] = squares[b] / total, squares[a] / total
    else:
        out[a] = out[b] = 0.5
    return tuple(out)


class CombinationWeights:
    """The members' forecasts in flight and mean squared errors at each tracked horizon."""

    __slots__ = ("_blend", "_weights", "counts", "flight", "horizons", "members", "squares")

    def __init__(self, horizons: Iterable[int], members: int) -> None:
        self.horizons = tuple(horizons)
        self.members = members
        self.flight = [[array("d") for _ in range(members)] for _ in self.horizons]
        """Per horizon k, each member's forecasts made k steps ahead whose value has not come,
        oldest first (at most k)."""
        self.squares = [array("d", [0.0] * members) for _ in self.horizons]
        """Per horizon, each member's mean squared error."""
        self.counts = [0] * len(self.horizons)
        """The errors each horizon's mean squares have seen (up to `SPAN`)."""
        self._weights: Weights | None = None
        """`weights()`, until the next error."""
        self._blend: Blend | None = None
        """`blend()`, until the next error."""

    def observe(self, value: float) -> None:
        """The value each horizon's oldest forecasts in flight were for."""
        self._weights = self._blend = None
        for i, k in enumerate(self.horizons):
            flight = self.flight[i]
            if len(flight[0]) < k:
                continue
            errors = [value - made.pop(0) for made in flight]
            if not all(map(math.isfinite, errors)):
                continue
            n = self.counts[i] = min(self.counts[i] + 1, SPAN)
            squares = self.squares[i]
            for j, e in enumerate(errors):
                squares[j] += (e * e - squares[j]) / n

    def expect(self, forecasts: Sequence[Sequence[float]]) -> None:
        """Each tracked horizon's members' forecasts, made now."""
        for made, flight in zip(forecasts, self.flight, strict=True):
            for forecast, member in zip(made, flight, strict=True):
                member.append(forecast)

    def weights(self) -> Weights:
        """The members' weights at each tracked horizon with an error."""
        if self._weights is None:
            self._weights = tuple(
                (k, _trimmed(squares))
                for k, n, squares in zip(self.horizons, self.counts, self.squares, strict=True)
                if n
            )
        return self._weights

    def blend(self) -> Blend:
        """The combination of these weights at any step."""
        if self._blend is None:
            self._blend = Blend(self.weights(), self.members)
        return self._blend

    def tracking(self, horizons: tuple[int, ...]) -> CombinationWeights:
        """These weights, tracking `horizons`: a horizon kept keeps its forecasts and mean
        squares, a new one starts with none."""
        if horizons == self.horizons:
            return self
        out = CombinationWeights(horizons, self.members)
        for i, k in enumerate(horizons):
            if k in self.horizons:
                j = self.horizons.index(k)
                out.flight[i], out.squares[i], out.counts[i] = (
                    self.flight[j], self.squares[j], self.counts[j]
                )  # fmt: skip
        return out

    def to_bytes(self) -> bytes:
        out = StateWriter()
        out.uint(self.members)
        out.uint(len(self.horizons))
        for i, k in enumerate(self.horizons):
            out.uint(k)
            out.uint(self.counts[i])
            for values in (self.squares[i], *self.flight[i]):
                out.doubles(values)
        return bytes(out)

    @classmethod
    def from_bytes(cls, data: bytes, members: int) -> CombinationWeights:
        """From `to_bytes`; ValueError when it is not such a state of `members` members."""
        read = StateReader(data)
        if read.uint() != members:
            raise ValueError("a forecast's combination weights are not of its members")
        count = read.uint()
        if count > TRACKED:
            raise ValueError("a forecast's combination horizons do not fit")
        out = cls([], members)
        for _ in range(count):
            k, n = read.uint(), read.uint()
            squares = read.doubles()
            flight = [read.doubles() for _ in range(members)]
            if not 1 <= k <= LONGEST or not 0 <= n <= SPAN or len(squares) != members:
                raise ValueError("a forecast's combination weights do not fit")
            if len({len(made) for made in flight}) != 1 or len(flight[0]) > k:
                raise ValueError("a forecast's combined forecasts in flight do not fit")
            if not all(s >= 0 for s in squares):
                raise ValueError("a forecast's combination weights hold a bad value")
            out.horizons += (k,)
            out.counts.append(n)
            out.squares.append(squares)
            out.flight.append(flight)
        read.done()
        if list(out.horizons) != sorted(set(out.horizons)):
            raise ValueError("a forecast's combination horizons are not ascending")
        return out
