"""Streaming anomaly scores for one series of closed-bucket values.

No I/O: the aggregator and the NAB benchmark (bench/nab_offline.py) call this
same code, so the benchmark measures what users get.

The detector, chosen by measurement on the Numenta Anomaly Benchmark
(docs/journal/, docs/performance.md), blends two scores, both O(1) per point:
a value's surprise (layers 1 and 2) and its context novelty (layer 3).

1. A raw surprise in [0, 1) for each value: how far the value and its first
   difference lie from their own slowly forgetting mean, in standard
   deviations, through the normal CDF. A value outside the range seen so far
   (by a margin of that range) is fully surprising: NAB's streams and real
   metrics often break out of their range at the onset of a fault.
2. Numenta's "anomaly likelihood": the mean raw surprise of the last few
   points compared with the long-run distribution of that mean. One noisy
   point in a noisy series is not rare; a run of surprise is. The tail
   probability is mapped to [0, 1] on a log scale, so 0.5 means one in 1e5.
3. Context novelty (after the idea of Smirnov's CAD OSE, not its code): the
   value is cut into one of ``levels`` bands of a grid over the range, and for
   each order k in 0..``orders`` the detector asks whether the sequence of the
   last k bands and this one was ever seen. The share of orders never seen is
   the novelty: a daily cycle, however spiky, repeats its sequences; an
   anomaly makes new ones. The range is learnt online (pushsvc never knows a
   series' min and max in advance): the grid follows the range seen so far
   for ``learn`` points and is then fixed so that bands keep their meaning; a
   value beyond it by ``regrid_margin`` of its span redraws it over the new
   range and forgets the sequences (they were in the old bands). The memory is
   a bitset of ``2**table_bits`` hashed sequences, so it is bounded whatever
   the series; a collision only makes a sequence look seen, erring toward
   silence.

The score is ``(1 - w) * surprise + w * novelty``, the surprise being the
larger of layers 1 and 2. The novelty's share ``w`` grows from 0 to
``context_weight`` over the ``mature`` points after the sequence memory
(re)starts, when the grid is fixed or redrawn: a young memory finds every
stretch of a cycle it has not been through yet new (the first descent of a
slow wave, a wave grown past the grid), and such a stretch is not an
anomaly. Meanwhile the surprise, which needs no memory of sequences, speaks.

After a point is flagged, the next ``rest`` points are damped (silenced by
default): NAB (and a person paged) credits only the first detection of an
anomaly, and each repeated flag outside its window costs a false positive.
A score of at least ``wake`` is reported even then (off by default).

Everything is plain float arithmetic in a fixed order, so the same points give
the same scores on every run (the hash is plain integer arithmetic, not
Python's ``hash``); the state is a fixed set of floats and counters, a ring of ``short``
raw scores, the last ``orders`` bands and the bitset, packed to bytes for the
aggregator's checkpoints (2,320 bytes with the defaults, at most 8,908).
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
_FORMAT_VERSION = 3
# version, learn, short, rest, n, resting, direct, levels, orders, table_bits, gridded,
# the counts of bands and of ring floats that follow the floats, then (from version 3)
# mature and age
_HEADER = struct.Struct("<BIIIII?BBB?BBII")
# Version 2 had no maturing novelty: its states restore with ``mature`` 0, which scores
# exactly as version 2 did.
_HEADER_V2 = struct.Struct("<BIIIII?BBB?BB")
_FLOATS = struct.Struct("<19d")
_MAX_SHORT = 64
_MAX_LEVELS = 255  # a band is one byte in a checkpoint
_MAX_ORDERS = 16
_TABLE_BITS = range(8, 17)  # 32 bytes to 8 KB of sequences
_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15  # 2**64 / golden ratio, odd: spreads a band over all bits


def _mix(x: int) -> int:
    """SplitMix64's finaliser: every bit of ``x`` moves every bit of the result."""
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9 & _MASK64
    x = (x ^ (x >> 27)) * 0x94D049BB133111EB & _MASK64
    return x ^ (x >> 31)


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
    # The novelty's share of the score once the sequence memory has matured (0: surprise
    # only). 0.65 scores best on NAB's tuning files.
    context_weight: float = 0.65
    levels: int = 6  # bands of the context grid
    orders: int = 4  # longest context, in points
    table_bits: int = 14  # the sequence memory: 2**table_bits bits (2 KB)
    regrid_margin: float = 0.1  # how far past the grid, as a share of it, redraws it
    wake: float = 2.0  # a score at least this high is reported while resting (above 1: never)
    # Points after the sequence memory (re)starts (the grid fixed, or redrawn) over which the
    # novelty's share grows linearly from 0 to ``context_weight`` (0: full share at once). A
    # young memory finds every stretch of a cycle it has not been through yet new; a day of
    # buckets covers a daily cycle, as ``learn`` does, so a first unseen stretch of a smooth
    # wave is not flagged, and a memory redrawn at a breakout relearns under the surprise.
    mature: int = 288

    def __post_init__(self) -> None:
        if self.learn < 2:
            raise ValueError("learn must cover at least 2 points")
        if not 1 <= self.short <= _MAX_SHORT:
            raise ValueError(f"short must be in 1..{_MAX_SHORT}")
        if self.rest < 0:
            raise ValueError("rest must not be negative")
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError("threshold must be in (0, 1]")
        if not 0.0 <= self.context_weight <= 1.0:
            raise ValueError("context_weight must be in [0, 1]")
        if not 2 <= self.levels <= _MAX_LEVELS:
            raise ValueError(f"levels must be in 2..{_MAX_LEVELS}")
        if not 0 <= self.orders <= _MAX_ORDERS:
            raise ValueError(f"orders must be in 0..{_MAX_ORDERS}")
        if self.table_bits not in _TABLE_BITS:
            raise ValueError(f"table_bits must be in {_TABLE_BITS.start}..{_TABLE_BITS.stop - 1}")
        if not self.regrid_margin >= 0.0:
            raise ValueError("regrid_margin must not be negative")
        if self.mature < 0:
            raise ValueError("mature must not be negative")


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
    gridded: bool = False  # the grid is fixed (after ``learn`` points)
    grid_low: float = 0.0
    grid_high: float = 0.0
    bands: list[int] = field(default_factory=list)  # the last ``orders`` bands, oldest first
    table: bytearray = field(default_factory=bytearray)
    age: int = 0  # points since the sequence memory (re)started, at most ``mature``

    def __post_init__(self) -> None:
        if not self.table:
            self.table = bytearray(1 << (self.params.table_bits - 3))

    def score(self, value: float) -> float:
        """The anomaly score of ``value`` in [0, 1]; then learn from it."""
        p = self.params
        novelty = self._novelty(value) if p.context_weight else 0.0
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
            weight = p.context_weight
            if self.age < p.mature:
                weight *= self.age / p.mature
            scored = (1.0 - weight) * scored + weight * novelty
            if self.resting > 0 and scored < p.wake:
                self.resting -= 1
                scored *= p.damp
            elif self.resting > 0:
                self.resting = p.rest  # reported: the rest starts again
            elif scored >= p.threshold and p.rest:
                self.resting = p.rest
        self._learn(value, short_mean)
        if self.gridded and self.age < p.mature:
            self.age += 1
        return scored

    def _novelty(self, value: float) -> float:
        """The share of context orders 0..``orders`` that never saw ``value``'s band."""
        p = self.params
        if self.gridded:
            span = self.grid_high - self.grid_low
            margin = p.regrid_margin * span
            if value < self.grid_low - margin or value > self.grid_high + margin:
                # Redraw over the new range: old bands mean other values now.
                self.grid_low = min(self.low, value)
                self.grid_high = max(self.high, value)
                self.table = bytearray(len(self.table))
                self.bands.clear()
                self.age = 0
            low, high = self.grid_low, self.grid_high
        elif self.n:
            low, high = self.low, self.high
        else:
            low = high = value
        span = high - low
        band = 0
        if span > 0:
            # Clamped as a float first: a tiny span could make the ratio infinite.
            band = int(min(p.levels - 1.0, max(0.0, (value - low) * p.levels / span)))
        table = self.table
        mask = (1 << p.table_bits) - 1
        novel = 0
        key = band + 1
        for k in range(p.orders + 1):
            # The sequence of the last k bands and this one; an order longer
            # than the history since the last redraw is new by definition.
            if k:
                if k > len(self.bands):
                    novel += p.orders + 1 - k
                    break
                key = (key ^ (self.bands[-k] + 1)) * _GOLDEN & _MASK64
            key = _mix(key)
            slot = key & mask
            if not table[slot >> 3] >> (slot & 7) & 1:
                novel += 1
                table[slot >> 3] |= 1 << (slot & 7)
        self.bands.append(band)
        if len(self.bands) > p.orders:
            del self.bands[0]
        return novel / (p.orders + 1)

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
            if self.n >= self.params.learn and not self.gridded:
                self.gridded = True
                self.grid_low, self.grid_high = self.low, self.high
            dr = short_mean - self.mean_r
            self.mean_r += w * dr
            self.var_r = (1 - w) * (self.var_r + w * dr * dr)
        self.prev = value

    def to_bytes(self) -> bytes:
        """The state, for a checkpoint; ``from_bytes`` restores it exactly."""
        p = self.params
        head = _HEADER.pack(
            _FORMAT_VERSION,
            p.learn,
            p.short,
            p.rest,
            self.n,
            self.resting,
            p.direct,
            p.levels,
            p.orders,
            p.table_bits,
            self.gridded,
            len(self.bands),
            len(self.ring),
            p.mature,
            self.age,
        )
        floats = _FLOATS.pack(
            p.threshold,
            p.spatial_tolerance,
            p.var_floor,
            p.damp,
            p.context_weight,
            p.regrid_margin,
            p.wake,
            self.prev,
            self.mean_x,
            self.var_x,
            self.mean_d,
            self.var_d,
            self.low,
            self.high,
            self.mean_r,
            self.var_r,
            self.ring_sum,
            self.grid_low,
            self.grid_high,
        )
        ring = struct.pack(f"<{len(self.ring)}d", *self.ring)
        return head + floats + ring + bytes(self.bands) + bytes(self.table)

    @classmethod
    def from_bytes(cls, data: bytes) -> Detector:
        if not data or data[0] not in (2, _FORMAT_VERSION):
            raise ValueError(f"unknown anomaly state version {data[0] if data else None}")
        header = _HEADER if data[0] == _FORMAT_VERSION else _HEADER_V2
        if len(data) < header.size + _FLOATS.size:
            raise ValueError("truncated anomaly state")
        fields = header.unpack_from(data, 0)
        mature, age = fields[13:] if header is _HEADER else (0, 0)
        (
            _version,
            learn,
            short,
            rest,
            n,
            resting,
            direct,
            levels,
            orders,
            table_bits,
            gridded,
            band_count,
            ring_count,
        ) = fields[:13]
        (
            threshold,
            tolerance,
            var_floor,
            damp,
            context_weight,
            regrid_margin,
            wake,
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
            grid_low,
            grid_high,
        ) = _FLOATS.unpack_from(data, header.size)
        params = Params(
            learn=learn,
            short=short,
            rest=rest,
            threshold=threshold,
            spatial_tolerance=tolerance,
            var_floor=var_floor,
            direct=direct,
            damp=damp,
            context_weight=context_weight,
            levels=levels,
            orders=orders,
            table_bits=table_bits,
            regrid_margin=regrid_margin,
            wake=wake,
            mature=mature,
        )
        offset = header.size + _FLOATS.size
        table_size = 1 << (table_bits - 3)
        end = offset + 8 * ring_count + band_count + table_size
        if ring_count > short or band_count > orders or age > mature or end != len(data):
            raise ValueError("truncated anomaly state")
        ring = list(struct.unpack_from(f"<{ring_count}d", data, offset))
        offset += 8 * ring_count
        bands = list(data[offset : offset + band_count])
        table = bytearray(data[offset + band_count : end])
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
            ring,
            gridded,
            grid_low,
            grid_high,
            bands,
            table,
            age,
        )
