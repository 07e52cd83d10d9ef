"""Streaming anomaly scores for one series of closed-bucket values.

No I/O: the aggregator and the NAB benchmark (bench/nab_offline.py) call this
same code, so the benchmark measures what users get.

The detector, chosen by measurement on the Numenta Anomaly Benchmark
(docs/journal/, docs/performance.md), has two layers, both O(1) per point:

1. A raw surprise in [0, 1) for each value: how far the value and its first
   difference lie from their own slowly forgetting mean, in standard
   deviations, through the normal CDF. A value outside the range seen so far
   (by a margin of that range) is fully surprising: NAB's streams and real
   metrics often break out of their range at the onset of a fault.
2. Numenta's "anomaly likelihood": the mean raw surprise of the last few
   points compared with the long-run distribution of that mean. One noisy
   point in a noisy series is not rare; a run of surprise is. The tail
   probability is mapped to [0, 1] on a log scale, so 0.5 means one in 1e5.

After a point is flagged, the next ``rest`` points are damped (silenced by
default): NAB (and a person paged) credits only the first detection of an
anomaly, and each repeated flag outside its window costs a false positive.

Everything is plain float arithmetic in a fixed order, so the same points give
the same scores on every run; the state is a fixed set of floats plus a ring
of ``short`` raw scores, packed to bytes for the aggregator's checkpoints.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field

# ln(1e-10): the log scale's floor, as in Numenta's NAB detector, so that a
# tail probability of 1e-10 or less scores 1.
_LOG_FLOOR = math.log(1e-10)
_SQRT2 = math.sqrt(2.0)
_EPS = 1e-12
_FORMAT_VERSION = 1
_HEADER = struct.Struct("<BIIIII?")  # version, learn, short, rest, n, resting, direct
_FLOATS = struct.Struct("<12d")
_MAX_SHORT = 64
DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True)
class Params:
    """How one series is scored; every field is part of a checkpoint's meaning."""

    learn: int = 288  # points before any flag (288 five-minute buckets = 1 day)
    short: int = 10  # points averaged by the likelihood layer
    rest: int = 200  # points damped after a flag (about one NAB window)
    threshold: float = DEFAULT_THRESHOLD
    spatial_tolerance: float = 0.05  # margin, as a share of the seen range
    var_floor: float = 3e-4  # the likelihood layer's least variance
    direct: bool = True  # also score one value's own tail probability
    damp: float = 0.0  # the factor on scores while resting: silent

    def __post_init__(self) -> None:
        if self.learn < 2:
            raise ValueError("learn must cover at least 2 points")
        if not 1 <= self.short <= _MAX_SHORT:
            raise ValueError(f"short must be in 1..{_MAX_SHORT}")
        if self.rest < 0:
            raise ValueError("rest must not be negative")
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError("threshold must be in (0, 1]")


def _tail(z: float) -> float:
    """P(Z > z) for a standard normal Z."""
    return 0.5 * math.erfc(z / _SQRT2)


@dataclass
class Detector:
    """Scores a series point by point, each from the points before it only."""

    params: Params = field(default_factory=Params)
    n: int = 0
    resting: int = 0
    prev: float = 0.0
    mean_x: float = 0.0
    var_x: float = 0.0
    mean_d: float = 0.0
    var_d: float = 0.0
    low: float = 0.0
    high: float = 0.0
    mean_r: float = 0.0
    var_r: float = 0.0
    ring_sum: float = 0.0
    ring: list[float] = field(default_factory=list)

    def score(self, value: float) -> float:
        """The anomaly score of ``value`` in [0, 1]; then learn from it."""
        p = self.params
        raw, tail = self._raw(value)
        if len(self.ring) == p.short:
            self.ring_sum -= self.ring.pop(0)
        self.ring.append(raw)
        self.ring_sum += raw
        short_mean = self.ring_sum / len(self.ring)
        scored = 0.0
        if self.n >= p.learn:
            z = (short_mean - self.mean_r) / math.sqrt(max(self.var_r, p.var_floor))
            scored = min(1.0, math.log(_tail(z) + 1e-10) / _LOG_FLOOR)
            if p.direct:
                scored = max(scored, min(1.0, math.log(tail + 1e-10) / _LOG_FLOOR))
            if self.resting > 0:
                self.resting -= 1
                scored *= p.damp
            elif scored >= p.threshold and p.rest:
                self.resting = p.rest
        self._learn(value, short_mean)
        return scored

    def _raw(self, value: float) -> tuple[float, float]:
        """The raw surprise and the two-sided tail probability it comes from."""
        if self.n < 2:
            return 0.0, 1.0
        zx = abs(value - self.mean_x) / math.sqrt(self.var_x + _EPS)
        zd = abs(value - self.prev - self.mean_d) / math.sqrt(self.var_d + _EPS)
        tail = 2.0 * _tail(max(zx, zd))
        span = self.high - self.low
        margin = self.params.spatial_tolerance * span
        if span > 0 and (value > self.high + margin or value < self.low - margin):
            return 1.0, 0.0
        return 1.0 - tail, tail

    def _learn(self, value: float, short_mean: float) -> None:
        # Equal weights while learning, then a slow exponential forgetting, so
        # the statistics follow a drifting series at a bounded cost.
        self.n += 1
        w = max(1.0 / self.n, 1.0 / self.params.learn)
        if self.n == 1:
            self.mean_x, self.low, self.high = value, value, value
        else:
            d = value - self.prev
            dd = d - self.mean_d
            if self.n == 2:
                self.mean_d = d
            else:
                self.mean_d += w * dd
                self.var_d = (1 - w) * (self.var_d + w * dd * dd)
            dx = value - self.mean_x
            self.mean_x += w * dx
            self.var_x = (1 - w) * (self.var_x + w * dx * dx)
            self.low = min(self.low, value)
            self.high = max(self.high, value)
            dr = short_mean - self.mean_r
            self.mean_r += w * dr
            self.var_r = (1 - w) * (self.var_r + w * dr * dr)
        self.prev = value

    def to_bytes(self) -> bytes:
        """The state, for a checkpoint; ``from_bytes`` restores it exactly."""
        p = self.params
        head = _HEADER.pack(
            _FORMAT_VERSION, p.learn, p.short, p.rest, self.n, self.resting, p.direct
        )
        floats = _FLOATS.pack(
            p.threshold,
            p.spatial_tolerance,
            p.var_floor,
            p.damp,
            self.prev,
            self.mean_x,
            self.var_x,
            self.mean_d,
            self.var_d,
            self.low,
            self.high,
            self.mean_r,
        )
        tail = struct.pack(f"<2d{len(self.ring)}d", self.var_r, self.ring_sum, *self.ring)
        return head + floats + tail

    @classmethod
    def from_bytes(cls, data: bytes) -> Detector:
        version, learn, short, rest, n, resting, direct = _HEADER.unpack_from(data, 0)
        if version != _FORMAT_VERSION:
            raise ValueError(f"unknown anomaly state version {version}")
        (
            threshold,
            tolerance,
            var_floor,
            damp,
            prev,
            mean_x,
            var_x,
            mean_d,
            var_d,
            low,
            high,
            mean_r,
        ) = _FLOATS.unpack_from(data, _HEADER.size)
        offset = _HEADER.size + _FLOATS.size
        count = (len(data) - offset) // 8 - 2
        if count < 0 or count > short or offset + (count + 2) * 8 != len(data):
            raise ValueError("truncated anomaly state")
        var_r, ring_sum, *ring = struct.unpack_from(f"<2d{count}d", data, offset)
        params = Params(
            learn=learn,
            short=short,
            rest=rest,
            threshold=threshold,
            spatial_tolerance=tolerance,
            var_floor=var_floor,
            direct=direct,
            damp=damp,
        )
        return cls(
            params,
            n,
            resting,
            prev,
            mean_x,
            var_x,
            mean_d,
            var_d,
            low,
            high,
            mean_r,
            var_r,
            ring_sum,
            list(ring),
        )
