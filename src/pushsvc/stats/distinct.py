"""Distinct counts: exact up to 1,000 values, then a sliding HyperLogLog (pure).

A window's distinct count (`distinct_<tag>`, docs/design.md) is the number of different
values among the events a window holds. Windows that hold their events anyway (exact time
windows, count windows) count them exactly at any number of values (``tagged.py``: a count
per value held). ``SlidingDistinct`` answers it for a long window, whose content is "every
entry with a key above an edge" -- the key is the entry's sub-bucket index (so the long
window's HyperLogLog is the union of its sub-buckets' HyperLogLogs, kept as one;
``HyperLogLog.merge`` is that union).

Exact first. While the window holds at most ``EXACT_UP_TO`` values, a dict maps each value
to its newest key (a heap of keys says which leaves next): the answer is exact, and no hash is
computed. The 1,001st value turns the window into a HyperLogLog, built from that dict; the dict
then restarts (again capped at 1,000) with the values newer than the moment it restarted, and
once the edge has passed that moment it holds the whole window again: the HyperLogLog is
dropped and the answer is exact again. So a window that once held more than 1,000 values is
exact again at most one window width after it last did. (While more than 2,000 registers
are in use, so at least as many values are held, the dict is not kept at all: it restarts
with every entry, costing nothing.)

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
possible future maxima* (LPFM): the entries ``(key, rho)`` of the window, keys ascending, such
that no later entry has a ``rho`` as large -- ``rho`` strictly decreasing along the list. Its
head is the register's value. An entry joins by dropping the entries before it with a
``rho`` at most its own; one dominated by a later entry is not kept; the edge passing a head
drops it. A list holds at most 51 entries (one per ``rho``), about ``ln(n / M)`` on average,
so a window's sketch is bounded whatever the rate and the cardinality: at most 16,384 x 51
entries. A heap of the registers' head keys (one live entry per register) says which
register loses its head next, so sliding costs only the registers that change.

The state after sliding is the one an HyperLogLog of the remaining entries has (property
tests: ``tests/unit/test_distinct.py``).

Why not a library: ``datasketch``'s ``HyperLogLog``/``HyperLogLogPlusPlus`` and Apache
DataSketches' ``hll_sketch`` only ever add (no entry leaves a register, so no sliding window)
and compute an estimate from all the registers on each call (O(16,384) per update here, where
every event's update carries the count); their registers could not be serialised into the
checkpoint format the other statistics share (``state_codec.py``) without copying them out
either.

Not thread- or greenlet-safe; nothing here yields.
"""

from __future__ import annotations

import heapq
import math
from array import array
from hashlib import blake2b

from pushsvc.stats.state_codec import StateReader, StateWriter

__all__ = [
    "EXACT_UP_TO",
    "DistinctSet",
    "HyperLogLog",
    "M",
    "P",
    "SlidingDistinct",
    "SlidingHyperLogLog",
    "hash64",
    "place",
]

P = 14
M = 1 << P
Q = 64 - P
"""Bits left for ``rho``: register values run from 0 (empty) to ``Q + 1``."""
EXACT_UP_TO = 1000
# With more registers in use than this many times the cap, a window holds at least as many
# values (each register in use has an entry in it): its dict is not kept.
_TRACK_BELOW = 2
_ALPHA_INF = 1 / (2 * math.log(2))
_LOW = (1 << Q) - 1
_VERSION = 1


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
    to ``expire`` (see the module doc: lists of possible future maxima).

    Flat, because every event of a window with many values comes through here: registers
    index plain lists, an entry is one int (``key << 6 | rho``) and a heap entry one int
    (``key << P | register``), so no tuple or dict is made per event."""

    __slots__ = ("_due", "_heap", "_lists", "_registers", "_used")

    def __init__(self) -> None:
        self._registers = _Registers()
        # register -> its entries, each ``key << 6 | rho`` (rho < 64), keys ascending.
        self._lists: list[list[int] | None] = [None] * M
        self._used = 0  # registers with entries
        # ``key << P | register``: when a register's head may leave. One live entry per
        # register with entries (its key in _due); others are stale and skipped.
        self._heap: list[int] = []
        self._due: list[int | None] = [None] * M

    @property
    def registers(self) -> bytes:
        return bytes(self._registers.values)

    def entries(self) -> int:
        """Entries held over every register (what memory grows with)."""
        return sum(len(entries) for entries in self._lists if entries)

    @property
    def used(self) -> int:
        """Registers with an entry: the window holds at least this many values."""
        return self._used

    def estimate(self) -> float:
        return self._registers.estimate()

    def add(self, h: int, key: int) -> None:
        """The entry of a value whose hash is ``h``, at ``key`` (above the edge)."""
        register = h >> Q
        rho = Q + 1 - (h & _LOW).bit_length()
        entry = key << 6 | rho
        entries = self._lists[register]
        if entries is None:
            self._lists[register] = [entry]
            self._used += 1
            self._due[register] = key
            heapq.heappush(self._heap, key << P | register)
            self._registers.set(register, rho)
            return
        i = len(entries)
        while i and entries[i - 1] >> 6 > key:
            i -= 1
        if i < len(entries) and entries[i] & 63 >= rho:
            return  # a later entry is as large: this one can never be the maximum
        j = i
        while j and entries[j - 1] & 63 <= rho:
            j -= 1
        entries[j:i] = [entry]
        if j == 0:
            self._registers.set(register, rho)
            due = self._due[register]
            if due is not None and key < due:  # a late entry became the head: due sooner
                self._due[register] = key
                heapq.heappush(self._heap, key << P | register)

    def expire(self, edge: int) -> bool:
        """Drop every entry with a key at or below ``edge``; True iff a register changed."""
        heap = self._heap
        if not heap or heap[0] >> P > edge:
            return False
        due = self._due
        lists = self._lists
        changed = False
        while heap and heap[0] >> P <= edge:
            packed = heapq.heappop(heap)
            key, register = packed >> P, packed & (M - 1)
            if due[register] != key:
                continue  # stale
            entries = lists[register]
            assert entries is not None
            cut = 0
            while cut < len(entries) and entries[cut] >> 6 <= edge:
                cut += 1
            del entries[:cut]
            if entries:
                head = entries[0] >> 6
                due[register] = head
                heapq.heappush(heap, head << P | register)
                rho = entries[0] & 63
            else:
                lists[register] = due[register] = None
                self._used -= 1
                rho = 0
            changed |= self._registers.set(register, rho)
        return changed

    def write(self, out: StateWriter) -> None:
        out.uint(self._used)
        for register, entries in enumerate(self._lists):
            if not entries:
                continue
            out.uint(register)
            out.uint(len(entries))
            for entry in entries:
                out.sint(entry >> 6)
                out.uint(entry & 63)

    @classmethod
    def read(cls, source: StateReader) -> SlidingHyperLogLog:
        self = cls()
        for _ in range(source.uint()):
            register = source.uint()
            if register >= M or self._lists[register] is not None:
                raise ValueError("distinct state: a register out of range or twice")
            entries: list[int] = []
            for _ in range(source.uint()):
                key = source.sint()
                rho = source.uint()
                if not 0 < rho <= Q + 1:
                    raise ValueError("distinct state: a register value out of range")
                # Keys ascending (two events of one time may both stand), values descending.
                if entries and (key < entries[-1] >> 6 or rho >= entries[-1] & 63):
                    raise ValueError("distinct state: a register's list is out of order")
                entries.append(key << 6 | rho)
            if not entries:
                raise ValueError("distinct state: an empty register list")
            self._lists[register] = entries
            self._used += 1
            self._due[register] = entries[0] >> 6
            self._heap.append((entries[0] >> 6) << P | register)
            self._registers.set(register, entries[0] & 63)
        heapq.heapify(self._heap)
        return self


class SlidingDistinct:
    """The number of different values among the entries with a key above the edge: exact up
    to ``exact_up_to`` values, a sliding HyperLogLog beyond (module doc).

    ``add`` takes an entry whose key is above the current edge; ``expire`` moves the edge
    forward (never back)."""

    __slots__ = ("_cap", "_hll", "_latest", "_newest", "_order", "_since")

    def __init__(self, exact_up_to: int = EXACT_UP_TO) -> None:
        self._cap = exact_up_to
        self._latest: dict[str, int] = {}  # value -> its newest key
        self._order: list[tuple[int, str]] = []  # heap of (key, value); stale where newer
        # None: the dict holds every value of the window. Else it holds the values of the
        # entries with a key above this, and the HyperLogLog answers.
        self._since: int | None = None
        self._hll: SlidingHyperLogLog | None = None
        self._newest: int | None = None

    @property
    def exact(self) -> bool:
        return self._since is None

    def count(self) -> int:
        if self._hll is None:
            return len(self._latest)
        return round(self._hll.estimate())

    def is_empty(self) -> bool:
        return not self._latest and (self._hll is None or not self._hll.used)

    def add(self, value: str, key: int) -> None:
        if self._newest is None or key > self._newest:
            self._newest = key
        hll = self._hll
        if hll is not None:
            # hash64, inlined: every event of a window with many values comes through here.
            hll.add(int.from_bytes(blake2b(value.encode(), digest_size=8).digest(), "little"), key)
            if hll.used > _TRACK_BELOW * self._cap:
                # More registers in use than twice the cap: at least that many values, so the
                # dict would only overflow again. It restarts here instead, at no cost.
                self._since = self._newest
                if self._latest:
                    self._latest.clear()
                    self._order.clear()
                return
        since = self._since
        if since is not None and key <= since:
            return
        latest = self._latest
        old = latest.get(value)
        if old is None:
            if len(latest) >= self._cap:
                self._overflow(value, key)
                return
            latest[value] = key
        elif key > old:
            latest[value] = key
        else:
            return
        order = self._order
        heapq.heappush(order, (key, value))
        if len(order) > 2 * len(latest) + 64:
            self._order = [(k, v) for v, k in latest.items()]
            heapq.heapify(self._order)

    def _overflow(self, value: str, key: int) -> None:
        """One value more than the dict may hold: count with the sketch from now on, and
        restart the dict at the newest key."""
        if self._hll is None:
            hll = self._hll = SlidingHyperLogLog()
            for known, at in self._latest.items():
                hll.add(hash64(known), at)
            hll.add(hash64(value), key)
        assert self._newest is not None
        self._since = self._newest
        self._latest.clear()
        self._order.clear()

    def expire(self, edge: int) -> bool:
        """Drop the entries with a key at or below ``edge``; True iff the count may have
        changed."""
        order = self._order
        latest = self._latest
        changed = False
        hll = self._hll
        if hll is None and (not order or order[0][0] > edge):
            return False
        while order and order[0][0] <= edge:
            key, value = heapq.heappop(order)
            if latest.get(value) == key:
                del latest[value]
                changed = True
        if hll is not None:
            changed |= hll.expire(edge)
            if self._since is not None and self._since <= edge:
                # Every entry the dict missed has left: it holds the whole window again.
                self._since = None
                self._hll = None
                changed = True
        return changed

    def write(self, out: StateWriter) -> None:
        out.uint(_VERSION)
        out.uint(self._cap)
        _optional(out, self._newest)
        _optional(out, self._since)
        items = sorted(self._latest.items(), key=lambda item: (item[1], item[0]))
        out.uint(len(items))
        for value, key in items:
            out.text(value)
            out.sint(key)
        if self._hll is None:
            out.uint(0)
        else:
            out.uint(1)
            self._hll.write(out)

    @classmethod
    def read(cls, source: StateReader) -> SlidingDistinct:
        if source.uint() != _VERSION:
            raise ValueError("distinct state of another version")
        self = cls(source.uint())
        self._newest = _read_optional(source)
        self._since = _read_optional(source)
        for _ in range(source.uint()):
            value = source.text()
            self._latest[value] = source.sint()
        if len(self._latest) > self._cap:
            raise ValueError("distinct state holds more values than its cap")
        self._order = [(k, v) for v, k in self._latest.items()]
        heapq.heapify(self._order)
        if source.uint():
            self._hll = SlidingHyperLogLog.read(source)
        if (self._hll is None) != (self._since is None):
            raise ValueError("distinct state: a sketch without a restart, or the reverse")
        return self


def _optional(out: StateWriter, value: int | None) -> None:
    if value is None:
        out.uint(0)
    else:
        out.uint(1)
        out.sint(value)


def _read_optional(source: StateReader) -> int | None:
    return source.sint() if source.uint() else None


class DistinctSet:
    """A mergeable distinct count of a closed set of values (a series bucket): exact up to
    ``exact_up_to`` values, then a dense ``HyperLogLog`` (merging two gives the count of the
    union)."""

    __slots__ = ("_cap", "_hll", "_values")

    def __init__(self, exact_up_to: int = EXACT_UP_TO) -> None:
        self._cap = exact_up_to
        self._values: set[str] | None = set()
        self._hll: HyperLogLog | None = None

    def add(self, value: str) -> None:
        values = self._values
        if values is not None:
            values.add(value)
            if len(values) > self._cap:
                self._to_sketch()
        else:
            assert self._hll is not None
            self._hll.add(value)

    def _to_sketch(self) -> None:
        hll = self._hll = HyperLogLog()
        for known in self._values or ():
            hll.add(known)
        self._values = None

    def merge(self, other: DistinctSet) -> None:
        if other._values is not None:
            for value in other._values:
                self.add(value)
            return
        assert other._hll is not None
        if self._values is not None:
            self._to_sketch()
        assert self._hll is not None
        self._hll.merge(other._hll)

    def count(self) -> int:
        if self._values is not None:
            return len(self._values)
        assert self._hll is not None
        return round(self._hll.estimate())

    def write(self, out: StateWriter) -> None:
        if self._values is not None:
            out.uint(0)
            out.uint(len(self._values))
            for value in sorted(self._values):
                out.text(value)
        else:
            assert self._hll is not None
            out.uint(1)
            out.counts(array("B", self._hll.registers))  # one register a byte

    @classmethod
    def read(cls, source: StateReader) -> DistinctSet:
        self = cls()
        if not source.uint():
            assert self._values is not None
            for _ in range(source.uint()):
                self._values.add(source.text())
            return self
        registers = source.counts()
        if len(registers) != M or any(not 0 <= r <= Q + 1 for r in registers):
            raise ValueError("distinct state: registers of another size or out of range")
        self._values = None
        hll = self._hll = HyperLogLog()
        for register, rho in enumerate(registers):
            if rho:
                hll._registers.set(register, rho)
        return self
