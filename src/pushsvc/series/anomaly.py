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
   for ``learn`` points and is then fixed so that bands keep their meaning. A
   value past its ends, short of ``regrid_margin`` of its span, falls in the
   end band (with ``edge_bands``, off by default, in a band of its own beyond
   them); a value further out redraws the grid over the new range and
   forgets the sequences (they were in the old bands). The memory is a bitset
   of ``2**table_bits`` hashed sequences, so it is bounded whatever the
   series; a collision only makes a sequence look seen, erring toward
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
A value that breaks out of the range seen so far, ``wake_after`` points or
more into the rest, with a score of at least ``wake``, is reported even then
and starts the rest again: a small flag must not hide a large anomaly that
follows it closely, and the continuation of the anomaly just flagged (its
next few points, its return) does not wake it.

Each flag raises the bar for the next: a score ``s`` is reported as
``s ** (1 + calibrate * f)``, ``f`` the flags of about the last
``calibrate_horizon`` points (exponentially forgotten). One threshold then
suits both a quiet series and one that keeps scoring high (Twitter counts,
spiky CPU): a series that flagged often needs a fuller score to flag again,
and a full score (1) always flags.

Everything is plain float arithmetic in a fixed order, so the same points give
the same scores on every run (the hash is plain integer arithmetic, not
Python's ``hash``); the state is a fixed set of floats and counters, a ring of ``short``
raw scores, the last ``orders`` bands and the bitset, packed to bytes for the
aggregator's checkpoints (2,350 bytes with the defaults, at most 8,950).
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
_FORMAT_VERSION = 4
# version, learn, short, rest, n, resting, direct, levels, orders, table_bits, gridded,
# the counts of bands and of ring floats that follow the floats, then (from version 3)
# mature and age, then (from version 4) wake_after, wake_breakout, calibrate_horizon and
# edge_bands. From version 4 a band takes two bytes (edge bands go past 255).
_HEADER = struct.Struct("<BIIIII?BBB?BBIII?I?")
# Version 3 had no wake conditions, calibration nor edge bands: its states restore with
# ``wake_after`` 0, ``wake_breakout`` false, ``calibrate`` 0 and ``edge_bands`` false,
# which score exactly as version 3 did. Version 2 had no maturing novelty either: its
# states also restore with ``mature`` 0.
_HEADER_V3 = struct.Struct("<BIIIII?BBB?BBII")
_HEADER_V2 = struct.Struct("<BIIIII?BBB?BB")
_HEADERS = {2: _HEADER_V2, 3: _HEADER_V3, _FORMAT_VERSION: _HEADER}
_FLOATS = struct.Struct("<19d")
_FLOATS_V4 = struct.Struct("<2d")  # calibrate and the forgetting count of flags
_MAX_SHORT = 64
_MAX_LEVELS = 255
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
    # only). 0.7 scores best on NAB's tuning files (docs/journal/anomaly-detector.md).
    context_weight: float = 0.7
    levels: int = 6  # bands of the context grid
    orders: int = 4  # longest context, in points
    table_bits: int = 14  # the sequence memory: 2**table_bits bits (2 KB)
    regrid_margin: float = 0.1  # how far past the grid, as a share of it, redraws it
    # Values past the fixed grid (short of a redraw) get bands of their own beyond its ends
    # (at most ``levels`` on each side); else (the default) they count in the end bands. On
    # NAB it scores better, but a smooth wave growing past the grid is then flagged each
    # time it reaches a new band (docs/journal/anomaly-detector.md, round 4).
    edge_bands: bool = False
    # While resting, a score at least this high (above 1: never), ``wake_after`` points or
    # more into the rest, of a value that breaks out of the range seen so far (when
    # ``wake_breakout``; else any value), is reported and starts the rest again.
    wake: float = 0.8
    wake_after: int = 5
    wake_breakout: bool = True
    # Points after the sequence memory (re)starts (the grid fixed, or redrawn) over which the
    # novelty's share grows linearly from 0 to ``context_weight`` (0: full share at once). A
    # young memory finds every stretch of a cycle it has not been through yet new; a day of
    # buckets covers a daily cycle, as ``learn`` does, so a first unseen stretch of a smooth
    # wave is not flagged, and a memory redrawn at a breakout relearns under the surprise.
    mature: int = 288
    # Each flag raises the bar for the next: a score s is reported as s ** (1 + calibrate *
    # f), f the count of flags forgotten over ``calibrate_horizon`` points (2,016 five-minute
    # buckets = 1 week). 0: off.
    calibrate: float = 0.3
    calibrate_horizon: int = 2016

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
        if self.wake_after < 0:
            raise ValueError("wake_after must not be negative")
        if not self.calibrate >= 0.0:
            raise ValueError("calibrate must not be negative")
        if self.calibrate_horizon < 1:
            raise ValueError("calibrate_horizon must be at least 1")


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
    flags: float = 0.0  # flags of about the last ``calibrate_horizon`` points

    def __post_init__(self) -> None:
        if not self.table:
            self.table = bytearray(1 << (self.params.table_bits - 3))

    def score(self, value: float) -> float:
        """The anomaly score of ``value`` in [0, 1]; then learn from it."""
        p = self.params
        novelty = self._novelty(value) if p.context_weight else 0.0
        raw, tail, breakout = self._raw(value)
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
            if p.calibrate:
                self.flags *= 1.0 - 1.0 / p.calibrate_horizon
                scored = scored ** (1.0 + p.calibrate * self.flags)
            if self.resting > 0 and not (
                scored >= p.wake
                and p.rest - self.resting >= p.wake_after
                and (breakout or not p.wake_breakout)
            ):
                self.resting -= 1
                scored *= p.damp
            elif self.resting > 0:
                self.resting = p.rest  # reported: the rest starts again
                if p.calibrate:
                    self.flags += 1.0
            elif scored >= p.threshold and p.rest:
                self.resting = p.rest
                if p.calibrate:
                    self.flags += 1.0
        self._learn(value, short_mean)
        if self.gridded and self.age < p.mature:
            self.age += 1
        return scored

    def _novelty(self, value: float) -> float:
        """The share of context orders 0..``orders`` that never saw ``value``'s band."""
        p = self.params
        edge = False
        if self.gridded:
            edge = p.edge_bands
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
            x = (value - low) * p.levels / span
            if edge and not 0.0 <= x <= p.levels:  # past an end: a band of its own
                band = math.floor(min(2.0 * p.levels - 1.0, max(-p.levels, x)))
            else:
                band = int(min(p.levels - 1.0, max(0.0, x)))
        if p.edge_bands:
            band += p.levels  # from 0, as a checkpoint stores it
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

    def _raw(self, value: float) -> tuple[float, float, bool]:
        """The raw surprise, the two-sided tail probability it comes from, and whether the
        value breaks out of the range seen so far."""
        if self.n < 2:
            return 0.0, 1.0, False
        zx = abs(value - self.mean_x) / math.sqrt(self.var_x + _EPS)
        zd = abs(value - self.prev - self.mean_d) / math.sqrt(self.var_d + _EPS)
        tail = 2.0 * _tail(max(zx, zd))
        span = self.high - self.low
        margin = self.params.spatial_tolerance * span
        if span > 0 and (value > self.high + margin or value < self.low - margin):
            return 1.0, 0.0, True
        return 1.0 - tail, tail, False

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
            p.wake_after,
            p.wake_breakout,
            p.calibrate_horizon,
            p.edge_bands,
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
        floats += _FLOATS_V4.pack(p.calibrate, self.flags)
        ring = struct.pack(f"<{len(self.ring)}d", *self.ring)
        bands = struct.pack(f"<{len(self.bands)}H", *self.bands)
        return head + floats + ring + bands + bytes(self.table)

    @classmethod
    def from_bytes(cls, data: bytes) -> Detector:
        if not data or data[0] not in _HEADERS:
            raise ValueError(f"unknown anomaly state version {data[0] if data else None}")
        version = data[0]
        header = _HEADERS[version]
        extra = _FLOATS_V4 if version >= 4 else None
        if len(data) < header.size + _FLOATS.size + (extra.size if extra else 0):
            raise ValueError("truncated anomaly state")
        fields = header.unpack_from(data, 0)
        mature, age = fields[13:15] if version >= 3 else (0, 0)
        # Before version 4: no wake conditions, no calibration (scores as then).
        wake_after, wake_breakout, horizon, edge_bands = (
            fields[15:] if version >= 4 else (0, False, 2016, False)
        )
        calibrate, flags = (
            extra.unpack_from(data, header.size + _FLOATS.size) if extra else (0.0, 0.0)
        )
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
            wake_after=wake_after,
            wake_breakout=wake_breakout,
            mature=mature,
            calibrate=calibrate,
            calibrate_horizon=horizon,
            edge_bands=edge_bands,
        )
        offset = header.size + _FLOATS.size + (extra.size if extra else 0)
        table_size = 1 << (table_bits - 3)
        band_size = 2 if version >= 4 else 1
        end = offset + 8 * ring_count + band_size * band_count + table_size
        if ring_count > short or band_count > orders or age > mature or end != len(data):
            raise ValueError("truncated anomaly state")
        ring = list(struct.unpack_from(f"<{ring_count}d", data, offset))
        offset += 8 * ring_count
        if version >= 4:
            bands = list(struct.unpack_from(f"<{band_count}H", data, offset))
        else:
            bands = list(data[offset : offset + band_count])
        table = bytearray(data[offset + band_size * band_count : end])
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
            flags,
        )
