"""Streaming anomaly scores for one series of closed-bucket values.

No I/O: the aggregator and the NAB benchmark (research/nab_offline.py) call this
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
4. Block context: the mean of each ``block`` points is cut into bands twice,
   in the point grid (``block_levels`` bands) and in a grid of its own over
   the range of the block means seen (``levels`` bands, fixed and redrawn as
   the point grid is), and the novelty of each grid's sequences of block
   bands (orders 0..``orders``, each in a bitset of ``2**(table_bits - 2)``)
   counts at a block's last point, when it is larger than the point's own.
   Four points of context see a few minutes; four blocks see hours, so a day
   whose shape changed inside the range (a lower peak, a flat stretch) makes
   new sequences. The block means' own grid is not widened by one extreme
   value as much as the point grid (a mean dilutes it), so it keeps telling
   the later bursts of a series apart. Block sequences need many more points
   to be all seen (a cycle whose period is no multiple of the block shows
   each phase only once in several periods), so their novelty's share grows
   over the ``block_mature`` points after their memory (re)starts.

The score is ``(1 - w) * surprise + w * novelty``, the surprise being the
larger of layers 1 and 2, the novelty the larger of layers 3 and 4. The
novelty's share ``w`` grows from 0 to ``context_weight`` over the ``mature``
points after the sequence memory (re)starts, when the grid is fixed or
redrawn: a young memory finds every stretch of a cycle it has not been
through yet new (the first descent of a slow wave, a wave grown past the
grid), and such a stretch is not an anomaly. Meanwhile the surprise, which
needs no memory of sequences, speaks.

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
raw scores, the last ``orders`` bands and the bitsets, packed to bytes for the
aggregator's checkpoints (3,499 bytes with the defaults, at most 13,219).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from typing import Any

# ln(1e-10): the log scale's floor, as in Numenta's NAB detector, so that a
# tail probability of 1e-10 or less scores 1.
_LOG_FLOOR = math.log(1e-10)
_SQRT2 = math.sqrt(2.0)
_EPS = 1e-12
_FORMAT_VERSION = 5
# version, learn, short, rest, n, resting, direct, levels, orders, table_bits, gridded,
# the counts of bands and of ring floats that follow the floats, then (from version 3)
# mature and age, then (from version 4) wake_after, wake_breakout, calibrate_horizon and
# edge_bands. From version 4 a band takes two bytes (edge bands go past 255).
_HEADER_V4 = struct.Struct("<BIIIII?BBB?BBIII?I?")
# From version 5: block, block_levels and block_mature, then for each block memory (on the
# point grid, then on its own grid) its count of points, of bands, its age and whether its
# grid is fixed; after version 4's floats, each one's five floats (_BLOCK_FLOATS), after the
# bands its bands, after the table its table.
_HEADER = struct.Struct(_HEADER_V4.format + "IBI" + "IBI?" * 2)
_BLOCK_FLOATS = struct.Struct("<5d")  # the running sum, the block means' low and high, the grid
# Version 4 had no block context: its states restore with ``block`` 0, which scores
# exactly as version 4 did. Version 3 had no wake conditions, calibration nor edge bands
# either: its states restore with ``wake_after`` 0, ``wake_breakout`` false, ``calibrate``
# 0 and ``edge_bands`` false, which score exactly as version 3 did. Version 2 had no
# maturing novelty either: its states also restore with ``mature`` 0.
_HEADER_V3 = struct.Struct("<BIIIII?BBB?BBII")
_HEADER_V2 = struct.Struct("<BIIIII?BBB?BB")
_HEADERS = {2: _HEADER_V2, 3: _HEADER_V3, 4: _HEADER_V4, _FORMAT_VERSION: _HEADER}
_FLOATS = struct.Struct("<19d")
_FLOATS_V4 = struct.Struct("<2d")  # calibrate and the forgetting count of flags
_MAX_SHORT = 64
_MAX_LEVELS = 255
_MAX_ORDERS = 16
_TABLE_BITS = range(8, 17)  # 32 bytes to 8 KB of sequences
_BLOCK_TABLE_SHRINK = 2  # a block memory has 2**(table_bits - 2) bits: a block is many points
_MAX_BLOCK = 1 << 16
_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15  # 2**64 / golden ratio, odd: spreads a band over all bits


def _mix(x: int) -> int:
    """SplitMix64's finaliser: every bit of ``x`` moves every bit of the result."""
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9 & _MASK64
    x = (x ^ (x >> 27)) * 0x94D049BB133111EB & _MASK64
    return x ^ (x >> 31)


DEFAULT_THRESHOLD = 0.5
_BLOCK_LEVELS = 8
_BLOCK_MATURE = 1728  # 6 days of 5-minute buckets


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
    # only). 0.75 scores best on NAB's tuning files with the block context (0.7 without it;
    # docs/journal/anomaly-detector.md, rounds 4 and 6).
    context_weight: float = 0.75
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
    # The block context (0: off): the mean of each ``block`` points, banded in the point grid
    # (``block_levels`` bands) and in a grid of the block means' own range (``levels`` bands);
    # the novelty of their block sequences counts at a block's last point when larger than
    # the point's, its share growing over ``block_mature`` points (0: at once) after its
    # memory (re)starts. 12 points (an hour of 5-minute buckets), 8 bands and 6 days score
    # best on NAB's tuning files (docs/journal/anomaly-detector.md, round 6).
    block: int = 12
    block_levels: int = _BLOCK_LEVELS
    block_mature: int = _BLOCK_MATURE

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
        if not 0 <= self.block <= _MAX_BLOCK:
            raise ValueError(f"block must be in 0..{_MAX_BLOCK}")
        if not 2 <= self.block_levels <= _MAX_LEVELS:
            raise ValueError(f"block_levels must be in 2..{_MAX_LEVELS}")
        if self.block_mature < 0:
            raise ValueError("block_mature must not be negative")


def _tail(z: float) -> float:
    """P(Z > z) for a standard normal Z."""
    return 0.5 * math.erfc(z / _SQRT2)


@dataclass
class Blocks:
    """One block memory's state: the block being summed, the last ``orders`` bands of block
    means, their sequences seen, and (for the memory on a grid of its own) that grid."""

    count: int = 0  # points summed into the current block
    total: float = 0.0
    bands: list[int] = field(default_factory=list)
    age: int = 0  # blocks since the memory (re)started, until it has matured
    table: bytearray = field(default_factory=bytearray)
    gridded: bool = False
    low: float = math.inf  # the block means seen so far
    high: float = -math.inf
    grid_low: float = 0.0
    grid_high: float = 0.0

    def restart(self) -> None:
        """Forget the sequences (their bands meant other values)."""
        self.table = bytearray(len(self.table))
        self.bands.clear()
        self.age = 0


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
    # The block memories: on the point grid, and on a grid of the block means' own.
    on_grid: Blocks = field(default_factory=Blocks)
    own_grid: Blocks = field(default_factory=Blocks)

    def __post_init__(self) -> None:
        p = self.params
        if not self.table:
            self.table = bytearray(1 << (p.table_bits - 3))
        if p.block:
            size = 1 << (p.table_bits - _BLOCK_TABLE_SHRINK - 3)
            for blocks in (self.on_grid, self.own_grid):
                if not blocks.table:
                    blocks.table = bytearray(size)

    def score(self, value: float) -> float:
        """The anomaly score of ``value`` in [0, 1]; then learn from it."""
        p = self.params
        novelty = 0.0
        if p.context_weight:
            novelty = self._novelty(value)
            if p.block:
                novelty = max(
                    novelty,
                    self._block_novelty(self.on_grid, value, False),
                    self._block_novelty(self.own_grid, value, True),
                )
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
            # At least 0: a tail of 1 logs a hair above 0 (its 1e-10), and a negative score
            # raised to a fractional power below is a complex number.
            scored = max(0.0, (1.0 - weight) * scored + weight * novelty)
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
                # The block memory on this grid starts again too, its blocks from here.
                self.on_grid.restart()
                self.on_grid.count, self.on_grid.total = 0, 0.0
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
        return self._sequences(self.table, p.table_bits, self.bands, band)

    def _sequences(self, table: bytearray, bits: int, bands: list[int], band: int) -> float:
        """The share of orders 0..``orders`` whose sequence (the last k ``bands`` and
        ``band``) ``table`` never saw; marks them seen and appends ``band`` to ``bands``."""
        orders = self.params.orders
        mask = (1 << bits) - 1
        novel = 0
        key = band + 1
        for k in range(orders + 1):
            # The sequence of the last k bands and this one; an order longer
            # than the history since the last redraw is new by definition.
            if k:
                if k > len(bands):
                    novel += orders + 1 - k
                    break
                key = (key ^ (bands[-k] + 1)) * _GOLDEN & _MASK64
            key = _mix(key)
            slot = key & mask
            if not table[slot >> 3] >> (slot & 7) & 1:
                novel += 1
                table[slot >> 3] |= 1 << (slot & 7)
        bands.append(band)
        if len(bands) > orders:
            del bands[0]
        return novel / (orders + 1)

    def _block_novelty(self, blocks: Blocks, value: float, own: bool) -> float:
        """The novelty of the block that ``value`` ends (0 inside a block): its mean's band
        in the point grid or (``own``) in the block means' own grid, in sequence."""
        p = self.params
        blocks.total += value
        blocks.count += 1
        if blocks.count < p.block:
            return 0.0
        mean = blocks.total / p.block
        blocks.count, blocks.total = 0, 0.0
        novelty = 0.0
        if self.gridded:
            if own:
                if not blocks.gridded:
                    blocks.gridded = True
                    blocks.grid_low = min(blocks.low, mean)
                    blocks.grid_high = max(blocks.high, mean)
                margin = p.regrid_margin * (blocks.grid_high - blocks.grid_low)
                if mean < blocks.grid_low - margin or mean > blocks.grid_high + margin:
                    blocks.grid_low = min(blocks.low, mean)
                    blocks.grid_high = max(blocks.high, mean)
                    blocks.restart()
                low, high, levels = blocks.grid_low, blocks.grid_high, p.levels
            else:
                low, high, levels = self.grid_low, self.grid_high, p.block_levels
            band = 0
            if high > low:
                band = int(min(levels - 1.0, max(0.0, (mean - low) * levels / (high - low))))
            bits = p.table_bits - _BLOCK_TABLE_SHRINK
            novelty = self._sequences(blocks.table, bits, blocks.bands, band)
            if blocks.age * p.block < p.block_mature:  # the age stops once it has matured
                blocks.age += 1
                if blocks.age * p.block < p.block_mature:
                    novelty *= blocks.age * p.block / p.block_mature
        blocks.low = min(blocks.low, mean)
        blocks.high = max(blocks.high, mean)
        return novelty

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
            p.block,
            p.block_levels,
            p.block_mature,
            *(
                x
                for b in (self.on_grid, self.own_grid)
                for x in (b.count, len(b.bands), b.age, b.gridded)
            ),
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
        blocks = (self.on_grid, self.own_grid)
        for b in blocks:
            floats += _BLOCK_FLOATS.pack(b.total, b.low, b.high, b.grid_low, b.grid_high)
        ring = struct.pack(f"<{len(self.ring)}d", *self.ring)
        bands = b"".join(
            struct.pack(f"<{len(x)}H", *x) for x in (self.bands, *(b.bands for b in blocks))
        )
        tables = b"".join(bytes(x) for x in (self.table, *(b.table for b in blocks)))
        return head + floats + ring + bands + tables

    @classmethod
    def from_bytes(cls, data: bytes) -> Detector:
        version, header, fields, extra = _unpacked_header(data)
        floats = _FLOATS.unpack_from(data, header.size)
        calibrate, flags = (
            _FLOATS_V4.unpack_from(data, header.size + _FLOATS.size) if version >= 4 else (0.0, 0.0)
        )
        params = _params(version, fields, floats, calibrate)
        blocks, block_bands = _blocks(version, fields, data, header.size)
        n, resting, gridded, band_count, ring_count = (*fields[4:6], *fields[10:13])
        age = fields[14] if version >= 3 else 0
        offset = header.size + _FLOATS.size + extra
        table_size = 1 << (params.table_bits - 3)
        block_table = 1 << (params.table_bits - _BLOCK_TABLE_SHRINK - 3) if params.block else 0
        band_size = 2 if version >= 4 else 1
        end = (
            offset
            + 8 * ring_count
            + band_size * (band_count + sum(block_bands))
            + table_size
            + 2 * block_table
        )
        if (
            ring_count > params.short
            or max(band_count, *block_bands) > params.orders
            or age > params.mature
            or max(b.count for b in blocks) >= max(params.block, 1)
            or end != len(data)
        ):
            raise ValueError("truncated anomaly state")
        ring = list(struct.unpack_from(f"<{ring_count}d", data, offset))
        offset += 8 * ring_count
        if version >= 4:
            bands = list(struct.unpack_from(f"<{band_count}H", data, offset))
        else:
            bands = list(data[offset : offset + band_count])
        offset += band_size * band_count
        for b, count in zip(blocks, block_bands, strict=True):
            b.bands = list(struct.unpack_from(f"<{count}H", data, offset))
            offset += 2 * count
        table = bytearray(data[offset : offset + table_size])
        offset += table_size
        for b in blocks:
            b.table = bytearray(data[offset : offset + block_table])
            offset += block_table
        moments = floats[7:]
        prev, mean_x, var_x, mean_d, var_d, low, high, mean_r, var_r, ring_sum = moments[:10]
        grid_low, grid_high = moments[10:]
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
            *blocks,
        )


def _unpacked_header(data: bytes) -> tuple[int, struct.Struct, tuple[Any, ...], int]:
    """A detector state's version, its header's layout and fields, and the bytes its version
    adds after the floats; ValueError for an unknown version or a state too short."""
    if not data or data[0] not in _HEADERS:
        raise ValueError(f"unknown anomaly state version {data[0] if data else None}")
    version = data[0]
    header = _HEADERS[version]
    extra = _FLOATS_V4.size if version >= 4 else 0
    extra += 2 * _BLOCK_FLOATS.size if version >= 5 else 0
    if len(data) < header.size + _FLOATS.size + extra:
        raise ValueError("truncated anomaly state")
    return version, header, header.unpack_from(data, 0), extra


def _params(
    version: int, fields: tuple[Any, ...], floats: tuple[float, ...], calibrate: float
) -> Params:
    """The parameters a state was made with; those its version did not have yet as they
    were then (before 3: no maturity; before 4: no wake conditions, no calibration; before 5:
    no block context), so that it scores as it did."""
    _version, learn, short, rest, _n, _resting, direct, levels, orders, table_bits = fields[:10]
    threshold, tolerance, var_floor, damp, context_weight, regrid_margin, wake = floats[:7]
    mature = fields[13] if version >= 3 else 0
    wake_after, wake_breakout, horizon, edge_bands = (
        fields[15:19] if version >= 4 else (0, False, 2016, False)
    )
    block, block_levels, block_mature = (
        fields[19:22] if version >= 5 else (0, _BLOCK_LEVELS, _BLOCK_MATURE)
    )
    return Params(
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
        block=block,
        block_levels=block_levels,
        block_mature=block_mature,
    )


def _blocks(
    version: int, fields: tuple[Any, ...], data: bytes, header_size: int
) -> tuple[list[Blocks], list[int]]:
    """The two block memories of a state (empty before version 5), and their band counts."""
    blocks = [Blocks(), Blocks()]
    block_bands = [0, 0]
    if version >= 5:
        at = header_size + _FLOATS.size + _FLOATS_V4.size
        for i, b in enumerate(blocks):
            b.count, block_bands[i], b.age, b.gridded = fields[22 + 4 * i : 26 + 4 * i]
            b.total, b.low, b.high, b.grid_low, b.grid_high = _BLOCK_FLOATS.unpack_from(
                data, at + i * _BLOCK_FLOATS.size
            )
    return blocks, block_bands
