"""Distinct counts: exact up to 1,000 values, then a sliding HyperLogLog, sparse then dense
(pure).

A window's distinct count (`distinct_<tag>`, docs/design.md) is the number of different
values among the events a window holds. Windows that hold their events anyway (exact time
windows, count windows) count them exactly at any number of values (``tagged.py``: a count
per value held). ``SlidingDistinct`` answers it for a long window, whose content is "every
entry with a key above an edge" -- the key is the entry's sub-bucket index (so the long
window's HyperLogLog is the union of its sub-buckets' HyperLogLogs, kept as one;
``HyperLogLog.merge`` is that union).

Exact first. While the window holds at most ``EXACT_UP_TO`` values, a dict maps each value
to its newest key (a heap of keys says which leaves next): the answer is exact, and no hash is
computed. The 1,001st value turns the window into a sketch, built from that dict; the dict
then restarts (again capped at 1,000) with the values newer than the moment it restarted, and
once the edge has passed that moment it holds the whole window again: the sketch is dropped
and the answer is exact again. So a window that once held more than 1,000 values is exact
again at most one window width after it last did. (While the sketch holds more than 2,000
entries or registers, so at least as many values are held, the dict is not kept at all: it
restarts with every entry, costing nothing.)

Sparse, then dense (HLL++'s two representations, Heule et al. 2013). The sketch starts
sparse: each value's entry (``sparse_entry``: the top ``SPARSE_P`` = 25 bits of its hash and
the ``rho`` the dense sketch would give it) with its newest key, sliding as the dict does,
and the estimate is linear counting over ``2**25`` indexes: ``-2**25 ln(1 - d / 2**25)`` for
``d`` entries, which at a few thousand values is off by well under one value (two of 1,000
values share an index once in about 67 runs). Past ``SPARSE_UP_TO`` (4,096) entries, half
the dense ring's bytes (below), it becomes the dense sliding HyperLogLog of the same
entries, whose error there is about 0.6 % (and 0.81 % at large counts).

No jump at the switch (docs/design.md). Adding an entry never lowers an estimate within one
representation (the dict's length, linear counting of more entries, a register rising: each
only grows), but a change of representation may: the first sparse estimate can be below the
exact count when two values share an entry, and the dense one's 0.6 % error would often be.
So a change made by ``add`` keeps the count it had as a floor, which the answer does not go
below until something leaves the window (``expire`` dropping an entry clears it): as long as
nothing leaves, the true count cannot fall either, so the floor only holds the answer at a
count the window had reached. Past the exact range the first answer is the sparse estimate,
within 0.5 % of the exact count (``tests/unit/test_distinct_switch.py``), and an alert on a
threshold near 1,000 does not flap.

The HyperLogLog (Flajolet et al. 2007; the 64-bit hash and the exact-then-dense layout of
HLL++, Heule et al. 2013). ``P = 14``: ``M = 16384`` registers, a relative standard error of
``1.04 / sqrt(M)`` = 0.81 %. A value's 64-bit hash (BLAKE2b: stable across processes and
Python versions, which ``hash()`` is not) picks a register with its top 14 bits; the
register keeps the largest ``rho`` (leading zeros + 1 of the other 50 bits, 1..51) seen.
The estimate is Ertl's "improved raw estimator" (Ertl 2017, "New cardinality estimation
algorithms for HyperLogLog sketches", algorithm 6): from the histogram of register values,
``alpha_inf * M**2 / (M * sigma(C0 / M) + sum_k C_k 2**-k + M * tau(1 - C_51 / M) 2**-50)``.
It is unbiased from 0 to far beyond 2**50 without HLL++'s empirical bias tables (hundreds of
measured constants per precision) or the switch to linear counting. The histogram and the
middle sum are kept as registers change (the sum as an exact integer), so an estimate costs
``sigma``'s and ``tau``'s few iterations, never a pass over the 16,384 registers, and it is
cached until a register changes.

Sliding (Chabchoub & Hebrail 2010, "Sliding HyperLogLog"). For a sliding window a register
must be able to fall back when its maximum leaves, so each register keeps its *list of
possible future maxima* (LPFM): the entries ``(key, rho)`` of the window such that no later
entry has a ``rho`` as large; its head is the register's value. Here the keys are sub-bucket
indexes and the live ones span a fixed, small number of values (``span``: 62 for a long
window, ``tagged.py`` says why), so a register's LPFM is contained in the per-key maxima of
its live keys, and those are kept flat: a ring of ``span`` slots (key ``k`` in slot
``k % span``), one ``bytearray`` of ``M * span`` bytes, byte ``register * span + slot`` the
largest ``rho`` of that slot's key in that register (0: none). An entry is one comparison and
at most one byte written; the edge passing a key zeroes its column (``M`` bytes, at C speed),
and only the registers whose value that column held are recomputed, each the largest byte
of its row. Memory is ``M * span`` bytes per window (about 1 MB at span 62), fixed from the
moment a window holds more than 4,096 sparse entries, whatever the rate and the cardinality;
before, the sparse sketch's at most 4,096 entries take at most about 0.5 MB (a dict entry and a
heap entry each, about 130 bytes; tracemalloc).

The state after sliding is the one an HyperLogLog of the remaining entries has (property
tests: ``tests/unit/test_distinct.py``).

Why not a library: ``datasketch``'s ``HyperLogLog``/``HyperLogLogPlusPlus`` and Apache
DataSketches' ``hll_sketch`` only ever add: no entry leaves a register, so none can answer a
sliding window, which is what every long window asks. (DataSketches keeps a running
estimate as it adds, so the cost of reading it is no reason; sliding is.)

Not thread- or greenlet-safe; nothing here yields.
"""

from __future__ import annotations

import heapq
import math
import zlib
from array import array
from hashlib import blake2b
from typing import Generic, TypeVar

from pushsvc.stats.state_codec import StateReader, StateWriter

__all__ = [
    "EXACT_UP_TO",
    "SPARSE_P",
    "SPARSE_UP_TO",
    "DistinctSet",
    "HyperLogLog",
    "M",
    "P",
    "SlidingDistinct",
    "SlidingHyperLogLog",
    "hash64",
    "linear_count",
    "place",
    "sparse_entry",
]

P = 14
M = 1 << P
Q = 64 - P
"""Bits left for ``rho``: register values run from 0 (empty) to ``Q + 1``."""
EXACT_UP_TO = 1000
# With more registers in use than this many times the cap, a window holds at least as many
# values (each register in use holds the rho of a live value): its dict is not kept.
_TRACK_BELOW = 2
_ALPHA_INF = 1 / (2 * math.log(2))
_LOW = (1 << Q) - 1
_VERSION = 3
# What follows a distinct state's dict: no sketch, the dense one, the sparse one.
_NO_SKETCH, _DENSE, _SPARSE = 0, 1, 2
SPARSE_P = 25
"""The sparse sketch's precision: ``2**25`` indexes, as HLL++'s (its ``p'``)."""
SPARSE_M = 1 << SPARSE_P
SPARSE_UP_TO = 4096
"""Entries the sparse sketch holds before it becomes the dense one."""
_ZEROS = bytes(M)
T = TypeVar("T", str, int)
_IS_ZERO = bytes([1] + [0] * 255)  # a ``translate`` table: 1 where a byte is 0, else 0
# Register bytes side by side as one integer: 0x80 and 0x01 in every byte, and all ones; what
# compares M bytes with M bytes at once (``_dominant``).
_HIGH = int.from_bytes(b"\x80" * M, "little")
_ONES = int.from_bytes(b"\x01" * M, "little")
_ALL = (1 << (8 * M)) - 1


def hash64(value: str) -> int:
    """A value's 64-bit hash, the same in every process."""
    return int.from_bytes(blake2b(value.encode(), digest_size=8).digest(), "little")


def place(h: int) -> tuple[int, int]:
    """``(register, rho)`` of a 64-bit hash."""
    return h >> Q, Q + 1 - (h & _LOW).bit_length()


def _sigma(x: float) -> float:
    if x == 1.0:
        return math.inf
    y = 1.0
    z = x
    while True:
        x *= x
        previous = z
        z += x * y
        y += y
        if z == previous:
            return z


def _tau(x: float) -> float:
    if x == 0.0 or x == 1.0:
        return 0.0
    y = 1.0
    z = 1.0 - x
    while True:
        x = math.sqrt(x)
        previous = z
        y *= 0.5
        z -= (1.0 - x) ** 2 * y
        if z == previous:
            return z / 3.0


class _Registers:
    """The registers, their histogram and ``sum_k C_k 2**(Q - k)`` over 1 <= k <= Q."""

    __slots__ = ("_estimate", "hist", "total", "values")

    def __init__(self) -> None:
        self.values = bytearray(M)
        self.hist = [0] * (Q + 2)
        self.hist[0] = M
        self.total = 0
        self._estimate: float | None = 0.0

    def set(self, register: int, rho: int) -> bool:
        old = self.values[register]
        if old == rho:
            return False
        self.values[register] = rho
        hist = self.hist
        hist[old] -= 1
        hist[rho] += 1
        if 0 < old <= Q:
            self.total -= 1 << (Q - old)
        if 0 < rho <= Q:
            self.total += 1 << (Q - rho)
        self._estimate = None
        return True

    def estimate(self) -> float:
        cached = self._estimate
        if cached is None:
            hist = self.hist
            tail = M * _tau(1.0 - hist[Q + 1] / M)
            z = M * _sigma(hist[0] / M) + (self.total + tail) / (1 << Q)
            cached = self._estimate = _ALPHA_INF * M * M / z
        return cached


class HyperLogLog:
    """A plain (dense) HyperLogLog: what a sliding one equals once the edge has passed, and
    the union of sub-buckets (``merge``)."""

    __slots__ = ("_registers",)

    def __init__(self) -> None:
        self._registers = _Registers()

    @property
    def registers(self) -> bytes:
        return bytes(self._registers.values)

    def add(self, value: str) -> None:
        register, rho = place(hash64(value))
        if rho > self._registers.values[register]:
            self._registers.set(register, rho)

    def merge(self, other: HyperLogLog) -> None:
        """Become the HyperLogLog of both sets of values."""
        mine = self._registers
        for register, rho in enumerate(other._registers.values):
            if rho > mine.values[register]:
                mine.set(register, rho)

    def estimate(self) -> float:
        return self._registers.estimate()


class SlidingHyperLogLog:
    """A HyperLogLog over the entries ``(key, value)`` with a key above the last edge given
    to ``expire``, the live keys spanning at most ``span`` values (see the module doc: the
    lists of possible future maxima, kept as a ring of per-key maxima).

    Flat, because every event of a window with many values comes through here: one
    ``bytearray`` of ``M * span`` bytes, byte ``register * span + key % span`` the largest
    ``rho`` of that key in that register (0: none), so an event costs a few index operations
    and allocates nothing."""

    __slots__ = ("_registers", "_ring", "_slot_key", "_span")

    def __init__(self, span: int) -> None:
        if span < 1:
            raise ValueError(f"a sliding HyperLogLog needs a span of at least 1, got {span}")
        self._span = span
        self._registers = _Registers()
        self._ring = bytearray(M * span)
        self._slot_key: list[int | None] = [None] * span  # the key each slot holds now

    @property
    def registers(self) -> bytes:
        return bytes(self._registers.values)

    @property
    def used(self) -> int:
        """Registers with a value: the window holds at least this many values."""
        return M - self._registers.hist[0]

    def estimate(self) -> float:
        return self._registers.estimate()

    def add(self, h: int, key: int) -> None:
        """The entry of a value whose hash is ``h``, at ``key`` (above the edge, and less than
        ``span`` above the oldest live key)."""
        span = self._span
        slot = key % span
        held = self._slot_key[slot]
        if held != key:
            if held is not None:
                raise ValueError(
                    f"sliding HyperLogLog: key {key} needs the slot of live key {held}: "
                    f"the live keys span more than the ring's {span}"
                )
            self._slot_key[slot] = key
        register = h >> Q
        rho = Q + 1 - (h & _LOW).bit_length()
        i = register * span + slot
        ring = self._ring
        if rho > ring[i]:
            ring[i] = rho
            registers = self._registers
            if rho > registers.values[register]:
                registers.set(register, rho)

    def put(self, register: int, rho: int, key: int) -> None:
        """``add``, of a hash already placed (``place``)."""
        self.add((register << Q) | ((1 << (Q + 1 - rho)) >> 1), key)

    def expire(self, edge: int) -> bool:
        """Drop every entry with a key at or below ``edge``; True iff a register changed."""
        slot_key = self._slot_key
        gone = [slot for slot, key in enumerate(slot_key) if key is not None and key <= edge]
        if not gone:
            return False
        span = self._span
        ring = self._ring
        registers = self._registers
        values = registers.values
        for slot in gone:
            slot_key[slot] = None
        if all(key is None for key in slot_key):
            # Nothing left: every register is empty.
            changed = registers.hist[0] != M
            self._registers = _Registers()
            self._ring = bytearray(M * span)
            return changed
        # The registers whose value one of the dropped columns held (a column's byte is
        # at most its register's value, the largest of its row): only they may fall.
        falling: set[int] = set()
        old = int.from_bytes(values, "little")
        for slot in gone:
            column = ring[slot::span]
            ring[slot::span] = _ZEROS
            # A zero byte in `at` where the column is nonzero and equals the register.
            at = (
                (int.from_bytes(column, "little") ^ old)
                | int.from_bytes(column.translate(_IS_ZERO), "little")
            ).to_bytes(M, "little")
            register = at.find(0)
            while register >= 0:
                falling.add(register)
                register = at.find(0, register + 1)
        changed = False
        for register in falling:
            row = register * span
            changed |= registers.set(register, max(ring[row : row + span]))
        return changed

    def write(self, out: StateWriter) -> None:
        """The span, the live keys (newest first), then their columns, each only its
        possible future maxima (a byte that a newer key's byte in its register matches or
        exceeds can never be the register's value again: zero), compressed together.

        The columns are mostly such bytes, so the ring writes as a small part of its size
        (measured: docs/performance.md, 'Distinct counts and top values')."""
        span = self._span
        live = sorted(
            ((key, slot) for slot, key in enumerate(self._slot_key) if key is not None),
            reverse=True,
        )
        out.uint(span)
        out.uint(len(live))
        newer = 0  # the largest byte of the newer keys, per register, as one integer
        columns = []
        for key, slot in live:
            out.sint(key)
            column = int.from_bytes(self._ring[slot::span], "little")
            kept, where = _dominant(column, newer)
            newer = kept | (newer & (_ALL ^ where))
            columns.append(kept.to_bytes(M, "little"))
        out.blob(zlib.compress(b"".join(columns), 1))

    @classmethod
    def read(cls, source: StateReader, span: int) -> SlidingHyperLogLog:
        """What ``write`` wrote, into a ring of ``span`` keys (ValueError if they do not fit)."""
        self = cls(span)
        source.uint()  # the writer's span: its keys are checked against this one's
        keys = [source.sint() for _ in range(source.uint())]
        inflate = zlib.decompressobj()
        try:
            columns = inflate.decompress(source.blob(), len(keys) * M + 1)
        except zlib.error as error:
            raise ValueError(f"distinct state: columns not readable ({error})") from None
        if len(columns) != len(keys) * M or not inflate.eof:
            raise ValueError("distinct state: columns of another size")
        if max(columns, default=0) > Q + 1:
            raise ValueError("distinct state: a register value out of range")
        ring = self._ring
        for i, key in enumerate(keys):
            ring[self._take(key) :: span] = columns[i * M : (i + 1) * M]
        self._recompute()
        return self

    @classmethod
    def read_lists(cls, source: StateReader, span: int) -> SlidingHyperLogLog:
        """A version 1 state: each register's list of possible future maxima, entries
        ``(key, rho)``; each goes into its key's slot (the register's values are the same)."""
        self = cls(span)
        ring = self._ring
        seen = bytearray(M)
        for _ in range(source.uint()):
            register = source.uint()
            if register >= M or seen[register]:
                raise ValueError("distinct state: a register out of range or twice")
            seen[register] = 1
            last: tuple[int, int] | None = None
            for _ in range(source.uint()):
                key = source.sint()
                rho = source.uint()
                if not 0 < rho <= Q + 1:
                    raise ValueError("distinct state: a register value out of range")
                # Keys ascending (two events of one time may both stand), values descending.
                if last is not None and (key < last[0] or rho >= last[1]):
                    raise ValueError("distinct state: a register's list is out of order")
                last = key, rho
                i = register * span + self._take(key)
                if rho > ring[i]:
                    ring[i] = rho
            if last is None:
                raise ValueError("distinct state: an empty register list")
        self._recompute()
        return self

    def _take(self, key: int) -> int:
        """The slot of ``key`` (reading a state), ValueError if another key holds it."""
        slot = key % self._span
        held = self._slot_key[slot]
        if held is not None and held != key:
            raise ValueError(f"distinct state: its keys span more than the ring's {self._span}")
        self._slot_key[slot] = key
        return slot

    def _recompute(self) -> None:
        span = self._span
        ring = self._ring
        for register in range(M):
            rho = max(ring[register * span : (register + 1) * span])
            if rho:
                self._registers.set(register, rho)


def _dominant(column: int, newer: int) -> tuple[int, int]:
    """``column``'s bytes that exceed ``newer``'s, the others zero, and the mask of those
    bytes (0xFF each); M bytes each, as integers, every byte below 0x80.
    ``(c | 0x80) - n - 1`` has its top bit set exactly where ``c > n``, and no byte borrows
    from the next."""
    where = ((((column | _HIGH) - newer - _ONES) >> 7) & _ONES) * 0xFF
    return column & where, where


class _Newest(Generic[T]):
    """Items with the newest key each carries, and a heap of ``(key, item)`` (stale where the
    item has a newer key) saying which leaves next: a set that slides exactly."""

    __slots__ = ("latest", "order")

    def __init__(self) -> None:
        self.latest: dict[T, int] = {}
        self.order: list[tuple[int, T]] = []

    def __len__(self) -> int:
        return len(self.latest)

    def put(self, item: T, key: int) -> None:
        """``item`` at ``key``: the caller checked it is new or newer than the one held."""
        latest = self.latest
        latest[item] = key
        order = self.order
        heapq.heappush(order, (key, item))
        if len(order) > 2 * len(latest) + 64:
            self.order = [(k, v) for v, k in latest.items()]
            heapq.heapify(self.order)

    def expire(self, edge: int) -> bool:
        """Drop the items whose newest key is at or below ``edge``; True iff one left."""
        order = self.order
        if not order or order[0][0] > edge:
            return False
        latest = self.latest
        changed = False
        while order and order[0][0] <= edge:
            key, item = heapq.heappop(order)
            if latest.get(item) == key:
                del latest[item]
                changed = True
        return changed

    def clear(self) -> None:
        if self.latest:
            self.latest.clear()
            self.order.clear()

    def restore(self, items: dict[T, int]) -> None:
        self.latest = items
        self.order = [(k, v) for v, k in items.items()]
        heapq.heapify(self.order)


def sparse_entry(h: int) -> int:
    """A hash's entry in the sparse sketch: its ``SPARSE_P``-bit index, then (6 bits) the
    ``rho`` the dense sketch gives it. Values with one index share ``rho`` unless the index's
    last ``SPARSE_P - P`` bits are all zero (1 in 2,048): those keep one entry per ``rho``,
    so that the dense sketch built from the entries is the one of the values."""
    return ((h >> (64 - SPARSE_P)) << 6) | (Q + 1 - (h & _LOW).bit_length())


def linear_count(entries: int) -> float:
    """Linear counting over ``SPARSE_M`` registers of which ``entries`` are in use: the
    sparse sketch's estimate, never below ``entries`` and rising with it."""
    return -SPARSE_M * math.log1p(-entries / SPARSE_M)


class _SparseSliding:
    """HLL++'s sparse representation, sliding: each entry (``sparse_entry``) with the newest
    key it came at; the estimate is linear counting over its ``2**SPARSE_P`` indexes."""

    __slots__ = ("entries",)

    def __init__(self) -> None:
        self.entries = _Newest[int]()

    @property
    def used(self) -> int:
        """Entries held: the window holds at least this many values."""
        return len(self.entries)

    def add(self, h: int, key: int) -> None:
        # sparse_entry, inlined: every event of a window in this range comes through here.
        entry = ((h >> (64 - SPARSE_P)) << 6) | (Q + 1 - (h & _LOW).bit_length())
        old = self.entries.latest.get(entry)
        if old is None or key > old:
            self.entries.put(entry, key)

    def expire(self, edge: int) -> bool:
        return self.entries.expire(edge)

    def estimate(self) -> float:
        # Linear counting counts indexes: the rare entries that share one (an index with
        # its last 11 bits zero, values of different rho) count as one each, an expected
        # excess of about n**2 / 2**38 values (under 1e-4 at 4,096): far below one.
        return linear_count(len(self.entries))

    def dense(self, span: int) -> SlidingHyperLogLog:
        """The dense sketch of the same entries."""
        hll = SlidingHyperLogLog(span)
        shift = 6 + SPARSE_P - P
        for entry, key in self.entries.latest.items():
            hll.put(entry >> shift, entry & 63, key)
        return hll


class SlidingDistinct:
    """The number of different values among the entries with a key above the edge: exact up
    to ``exact_up_to`` values, then a sparse sketch up to ``sparse_up_to`` entries, then a
    dense sliding HyperLogLog (module doc).

    ``add`` takes an entry whose key is above the current edge, the live keys spanning at
    most ``span`` values (the sketch's ring); ``expire`` moves the edge forward (never
    back)."""

    __slots__ = ("_cap", "_exact", "_floor", "_newest", "_since", "_sketch", "_span", "_sparse_cap")

    def __init__(
        self, span: int, exact_up_to: int = EXACT_UP_TO, sparse_up_to: int = SPARSE_UP_TO
    ) -> None:
        self._span = span
        self._cap = exact_up_to
        self._sparse_cap = sparse_up_to
        self._exact = _Newest[str]()  # value -> its newest key
        # None: the dict holds every value of the window. Else it holds the values of the
        # entries with a key above this, and the sketch answers.
        self._since: int | None = None
        self._sketch: _SparseSliding | SlidingHyperLogLog | None = None
        self._newest: int | None = None
        # The count may not fall below this until something leaves the window: the answer
        # when the representation last changed (module doc, "No jump at the switch").
        self._floor = 0

    @property
    def exact(self) -> bool:
        return self._since is None

    @property
    def sparse(self) -> bool:
        return isinstance(self._sketch, _SparseSliding)

    def count(self) -> int:
        sketch = self._sketch
        n = len(self._exact) if sketch is None else round(sketch.estimate())
        return n if n >= self._floor else self._floor

    def is_empty(self) -> bool:
        return not self._exact and (self._sketch is None or not self._sketch.used)

    def add(self, value: str, key: int) -> None:
        if self._newest is None or key > self._newest:
            self._newest = key
        sketch = self._sketch
        if sketch is not None:
            # hash64, inlined: every event of a window with many values comes through here.
            sketch.add(
                int.from_bytes(blake2b(value.encode(), digest_size=8).digest(), "little"), key
            )
            if isinstance(sketch, _SparseSliding) and sketch.used > self._sparse_cap:
                self._floor = self.count()
                sketch = self._sketch = sketch.dense(self._span)
            if sketch.used > _TRACK_BELOW * self._cap:
                # More entries (or registers) in use than twice the cap: at least that many
                # values, so the dict would only overflow again. It restarts here instead, at
                # no cost.
                self._since = self._newest
                self._exact.clear()
                return
        since = self._since
        if since is not None and key <= since:
            return
        exact = self._exact
        old = exact.latest.get(value)
        if old is None:
            if len(exact) >= self._cap:
                self._overflow(value, key)
                return
        elif key <= old:
            return
        exact.put(value, key)

    def _overflow(self, value: str, key: int) -> None:
        """One value more than the dict may hold: count with the sketch from now on, and
        restart the dict at the newest key."""
        if self._sketch is None:
            self._floor = self.count()
            sparse = _SparseSliding()
            for known, at in self._exact.latest.items():
                sparse.add(hash64(known), at)
            sparse.add(hash64(value), key)
            self._sketch = sparse if sparse.used <= self._sparse_cap else sparse.dense(self._span)
        assert self._newest is not None
        self._since = self._newest
        self._exact.clear()

    def expire(self, edge: int) -> bool:
        """Drop the entries with a key at or below ``edge``; True iff the count may have
        changed."""
        changed = self._exact.expire(edge)
        sketch = self._sketch
        if sketch is not None:
            changed |= sketch.expire(edge)
            if self._since is not None and self._since <= edge:
                # Every entry the dict missed has left: it holds the whole window again.
                self._since = None
                self._sketch = None
                changed = True
        if changed:
            self._floor = 0
        return changed

    def write(self, out: StateWriter) -> None:
        out.uint(_VERSION)
        out.uint(self._cap)
        out.uint(self._sparse_cap)
        _optional(out, self._newest)
        _optional(out, self._since)
        out.uint(self._floor)
        items = sorted(self._exact.latest.items(), key=lambda item: (item[1], item[0]))
        out.uint(len(items))
        for value, key in items:
            out.text(value)
            out.sint(key)
        sketch = self._sketch
        if sketch is None:
            out.uint(_NO_SKETCH)
        elif isinstance(sketch, _SparseSliding):
            out.uint(_SPARSE)
            entries = sorted(sketch.entries.latest.items(), key=lambda item: (item[1], item[0]))
            out.uint(len(entries))
            for entry, key in entries:
                out.uint(entry)
                out.sint(key)
        else:
            out.uint(_DENSE)
            sketch.write(out)

    @classmethod
    def read(cls, source: StateReader, span: int) -> SlidingDistinct:
        """A state ``write`` wrote, or one of version 1 (the dense sketch as lists of possible
        future maxima) or 2 (no sparse sketch, no floor), into a counter whose sketch holds
        ``span`` keys."""
        version = source.uint()
        if version not in (1, 2, _VERSION):
            raise ValueError("distinct state of another version")
        cap = source.uint()
        # Versions 1 and 2 have no sparse sketch; from now on they pass through one too.
        sparse_cap = source.uint() if version == _VERSION else SPARSE_UP_TO
        self = cls(span, cap, sparse_cap)
        self._newest = _read_optional(source)
        self._since = _read_optional(source)
        if version == _VERSION:
            self._floor = source.uint()
        items = {}
        for _ in range(source.uint()):
            value = source.text()
            items[value] = source.sint()
        if len(items) > self._cap:
            raise ValueError("distinct state holds more values than its cap")
        self._exact.restore(items)
        kind = source.uint()
        if kind == _SPARSE and version == _VERSION:
            self._sketch = _read_sparse(source, sparse_cap)
        elif kind == _DENSE:
            read = SlidingHyperLogLog.read_lists if version == 1 else SlidingHyperLogLog.read
            self._sketch = read(source, span)
        elif kind != _NO_SKETCH:
            raise ValueError("distinct state: a sketch of another kind")
        if (self._sketch is None) != (self._since is None):
            raise ValueError("distinct state: a sketch without a restart, or the reverse")
        return self


def _read_sparse(source: StateReader, cap: int) -> _SparseSliding:
    sparse = _SparseSliding()
    items = {}
    for _ in range(source.uint()):
        entry = source.uint()
        if entry >> (6 + SPARSE_P) or not 0 < entry & 63 <= Q + 1 or entry in items:
            raise ValueError("distinct state: a sparse entry out of range or twice")
        items[entry] = source.sint()
    if len(items) > cap:
        raise ValueError("distinct state: more sparse entries than its cap")
    sparse.entries.restore(items)
    return sparse


def _optional(out: StateWriter, value: int | None) -> None:
    if value is None:
        out.uint(0)
    else:
        out.uint(1)
        out.sint(value)


def _read_optional(source: StateReader) -> int | None:
    return source.sint() if source.uint() else None


def _dense(entries: set[int]) -> HyperLogLog:
    """The dense sketch of a set of sparse entries."""
    hll = HyperLogLog()
    registers = hll._registers
    shift = 6 + SPARSE_P - P
    for entry in entries:
        register, rho = entry >> shift, entry & 63
        if rho > registers.values[register]:
            registers.set(register, rho)
    return hll


class DistinctSet:
    """A mergeable distinct count of a closed set of values (a series bucket): exact up to
    ``exact_up_to`` values, then sparse (a set of ``sparse_entry``, linear counting) up to
    ``SPARSE_UP_TO`` entries, then a dense ``HyperLogLog``; merging two gives the count of
    the union. No one reads a bucket while it fills, so no floor is kept."""

    __slots__ = ("_cap", "_entries", "_hll", "_values")

    def __init__(self, exact_up_to: int = EXACT_UP_TO) -> None:
        self._cap = exact_up_to
        self._values: set[str] | None = set()
        self._entries: set[int] | None = None
        self._hll: HyperLogLog | None = None

    def add(self, value: str) -> None:
        values = self._values
        if values is not None:
            values.add(value)
            if len(values) > self._cap:
                self._to_sparse()
        elif self._entries is not None:
            self._entries.add(sparse_entry(hash64(value)))
            if len(self._entries) > SPARSE_UP_TO:
                self._to_dense()
        else:
            assert self._hll is not None
            self._hll.add(value)

    def _to_sparse(self) -> None:
        self._entries = {sparse_entry(hash64(value)) for value in self._values or ()}
        self._values = None
        if len(self._entries) > SPARSE_UP_TO:
            self._to_dense()

    def _to_dense(self) -> None:
        if self._values is not None:
            self._to_sparse()
        if self._entries is not None:
            self._hll = _dense(self._entries)
            self._entries = None

    def merge(self, other: DistinctSet) -> None:
        if other._values is not None:
            for value in other._values:
                self.add(value)
            return
        if other._entries is not None:
            if self._values is not None:
                self._to_sparse()
            if self._entries is not None:
                self._entries |= other._entries
                if len(self._entries) > SPARSE_UP_TO:
                    self._to_dense()
                return
            assert self._hll is not None
            self._hll.merge(_dense(other._entries))
            return
        assert other._hll is not None
        self._to_dense()
        assert self._hll is not None
        self._hll.merge(other._hll)

    def count(self) -> int:
        if self._values is not None:
            return len(self._values)
        if self._entries is not None:
            return round(linear_count(len(self._entries)))
        assert self._hll is not None
        return round(self._hll.estimate())

    def write(self, out: StateWriter) -> None:
        if self._values is not None:
            out.uint(_NO_SKETCH)
            out.uint(len(self._values))
            for value in sorted(self._values):
                out.text(value)
        elif self._entries is not None:
            out.uint(_SPARSE)
            out.uint(len(self._entries))
            for entry in sorted(self._entries):
                out.uint(entry)
        else:
            assert self._hll is not None
            out.uint(_DENSE)
            out.counts(array("B", self._hll.registers))  # one register a byte

    @classmethod
    def read(cls, source: StateReader, sparse: bool = True) -> DistinctSet:
        """What ``write`` wrote; ``sparse=False`` for a state from before the sparse form
        (whose kind 2 is no set of this)."""
        self = cls()
        kind = source.uint()
        if kind == _NO_SKETCH:
            assert self._values is not None
            for _ in range(source.uint()):
                self._values.add(source.text())
            return self
        if kind == _SPARSE and sparse:
            entries = {source.uint() for _ in range(source.uint())}
            if len(entries) > SPARSE_UP_TO or any(
                entry >> (6 + SPARSE_P) or not 0 < entry & 63 <= Q + 1 for entry in entries
            ):
                raise ValueError("distinct state: sparse entries out of range or too many")
            self._values, self._entries = None, entries
            return self
        if kind != _DENSE:
            raise ValueError("distinct state: a set of another kind")
        registers = source.counts()
        if len(registers) != M or any(not 0 <= r <= Q + 1 for r in registers):
            raise ValueError("distinct state: registers of another size or out of range")
        self._values = None
        hll = self._hll = HyperLogLog()
        for register, rho in enumerate(registers):
            if rho:
                hll._registers.set(register, rho)
        return self
