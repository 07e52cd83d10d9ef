"""Sessions per key in event time, ended when no event can change them (pure, no I/O).

Semantics (docs/design.md, "Sessions and funnels"):

* An event joins an open session of its key when it lies within `gap` of it (before its
  first or after its last event); when it lies within `gap` of several, they merge into one
  (Flink's merging session windows). Otherwise it opens a new session.
* With `max_duration`, a session never spans more than it: a merge that would is not made,
  and the event joins the earliest session it fits in, or opens a new one.
* The clock is the largest event time seen (or an idle tick); an event older than the clock
  minus the allowed lateness is refused, as the brokers refuse it. A session is final once
  the clock passes `last + gap + lateness` (or `first + max_duration + lateness`): no
  admissible event can reach it any more. It is ended at the first clock at or past the end
  of the one-`resolution` slot holding that deadline, so ending is filed per slot, not
  scanned per open session.
* At most `max_open` sessions are open; past it, the key that received an event longest ago
  gives up its oldest session, which ends at once, marked evicted.

Cost: an event touches only its key's sessions; ending walks the slots the clock passed and
the sessions filed in them (each session is filed once, and refiled once per slot its
deadline moved past), so it is paid per ended session, not per event or per open session.
"""

from __future__ import annotations

import heapq
import json
from dataclasses import dataclass

from pushsvc.stats.funnel import NOT_STARTED, FunnelResult, window_funnel

_SECOND_US = 1_000_000
_STEP_SPACE = 64  # at most this many funnel steps: a step index packs beside its time


@dataclass(frozen=True, slots=True)
class Funnel:
    """The funnel of a session rule: how many steps, and the window from the first step."""

    steps: int
    within_us: int


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """One session rule's parameters, in microseconds."""

    gap_us: int
    lateness_us: int
    max_duration_us: int | None = None
    max_open: int = 1_000_000
    funnel: Funnel | None = None
    resolution_us: int = _SECOND_US

    def __post_init__(self) -> None:
        if self.gap_us <= 0:
            raise ValueError("gap must be positive")
        if self.lateness_us < 0:
            raise ValueError("the allowed lateness cannot be negative")
        # A shorter max_duration would let a late event land before a session that was
        # already cut, which the cut could not take back.
        if self.max_duration_us is not None and self.max_duration_us < max(
            self.gap_us, self.lateness_us
        ):
            raise ValueError("max_duration must be at least gap and the allowed lateness")
        if self.max_open < 1:
            raise ValueError("max_open must be at least 1")
        if self.resolution_us <= 0:
            raise ValueError("resolution must be positive")
        if self.funnel is not None and (self.funnel.steps < 1 or self.funnel.within_us <= 0):
            raise ValueError("a funnel needs at least one step and a positive window")
        if self.funnel is not None and self.funnel.steps > _STEP_SPACE:
            raise ValueError(f"a funnel has at most {_STEP_SPACE} steps")


@dataclass(frozen=True, slots=True)
class EndedSession:
    """A session that can no longer change: what the session topic receives."""

    key: str
    first_us: int
    last_us: int
    events: int
    funnel: FunnelResult
    evicted: bool

    @property
    def duration_us(self) -> int:
        return self.last_us - self.first_us


class _Open:
    """An open session. Slots only: a million of these must fit in ~300 bytes each."""

    __slots__ = ("count", "first", "key", "last", "older", "steps")

    def __init__(self, key: str, ts: int) -> None:
        self.key = key
        self.first = ts
        self.last = ts
        self.count = 0  # 0 marks a session merged away or ended: its slot entries are stale
        # Its funnel step events, each packed as ts * _STEP_SPACE + step index: one alone as
        # the int itself, more as a tuple (the smallest Python holders); None for the many
        # sessions that have none.
        self.steps: int | tuple[int, ...] | None = None
        self.older: _Open | None = None  # the key's next older open session


def _joined(steps: int | tuple[int, ...] | None, packed: int) -> int | tuple[int, ...]:
    if steps is None:
        return packed
    return (steps, packed) if isinstance(steps, int) else (*steps, packed)


def _unpacked(steps: int | tuple[int, ...] | None) -> tuple[int, ...]:
    if steps is None:
        return ()
    return (steps,) if isinstance(steps, int) else steps


class SessionAssembler:
    """The open sessions of one session rule, fed events in arrival order."""

    def __init__(self, settings: SessionSettings) -> None:
        self.settings = settings
        self.clock: int | None = None
        self.evicted_total = 0
        # key -> its newest open session; insertion order = the key's last event, oldest first.
        self._keys: dict[str, _Open] = {}
        self._open = 0
        self._slots: dict[int, list[_Open]] = {}
        self._slot_heap: list[int] = []

    @property
    def open_sessions(self) -> int:
        return self._open

    def add(self, key: str, ts_us: int, step: int | None = None) -> list[EndedSession] | None:
        """Take one event; the sessions that ended with it, or None if it was too late."""
        s = self.settings
        if self.clock is not None and ts_us < self.clock - s.lateness_us:
            return None
        if self.clock is None or ts_us > self.clock:
            self.clock = ts_us
        chain = self._chain(key)
        near = [o for o in chain if o.first - s.gap_us <= ts_us <= o.last + s.gap_us]
        near.sort(key=lambda o: o.first)
        target = self._target(near, ts_us)
        if target is None:
            target = _Open(key, ts_us)
            chain.append(target)
            self._open += 1
            self._file(target)
        else:
            before = self._deadline(target)
            if self._fits(near, ts_us):
                for other in near[1:]:
                    self._absorb(target, other)
                    chain.remove(other)
            target.first = min(target.first, ts_us)
            target.last = max(target.last, ts_us)
            if self._deadline(target) < before:
                self._file(target)
        target.count += 1
        if step is not None and s.funnel is not None:
            target.steps = _joined(target.steps, ts_us * _STEP_SPACE + step)
        self._keys.pop(key, None)
        self._link(key, chain)
        ended = self._expire()
        while self._open > s.max_open:
            ended.append(self._evict())
        return ended

    def advance(self, clock_us: int) -> list[EndedSession]:
        """Move the clock (an idle tick); the sessions that ended."""
        if self.clock is None or clock_us > self.clock:
            self.clock = clock_us
        return self._expire()

    # -- the key's sessions -------------------------------------------------------------

    def _chain(self, key: str) -> list[_Open]:
        """The key's open sessions, oldest first."""
        chain: list[_Open] = []
        node = self._keys.get(key)
        while node is not None:
            chain.append(node)
            node = node.older
        chain.reverse()
        return chain

    def _link(self, key: str, chain: list[_Open]) -> None:
        chain.sort(key=lambda o: o.first)
        older: _Open | None = None
        for node in chain:
            node.older = older
            older = node
        if older is not None:
            self._keys[key] = older

    def _fits(self, sessions: list[_Open], ts: int) -> bool:
        limit = self.settings.max_duration_us
        if limit is None:
            return True
        first = min(ts, *(o.first for o in sessions))
        last = max(ts, *(o.last for o in sessions))
        return last - first <= limit

    def _target(self, near: list[_Open], ts: int) -> _Open | None:
        """The session the event joins: all it is near merged if they fit, else the earliest."""
        if not near:
            return None
        if self._fits(near, ts):
            return near[0]
        return next((o for o in near if self._fits([o], ts)), None)

    def _absorb(self, into: _Open, other: _Open) -> None:
        into.first = min(into.first, other.first)
        into.last = max(into.last, other.last)
        into.count += other.count
        for packed in _unpacked(other.steps):
            into.steps = _joined(into.steps, packed)
        other.count = 0
        self._open -= 1

    # -- ending ---------------------------------------------------------------------------

    def _deadline(self, o: _Open) -> int:
        """The clock past which no admissible event can reach `o`."""
        s = self.settings
        deadline = o.last + s.gap_us + s.lateness_us
        if s.max_duration_us is not None:
            deadline = min(deadline, o.first + s.max_duration_us + s.lateness_us)
        return deadline

    def _file(self, o: _Open) -> None:
        slot = self._deadline(o) // self.settings.resolution_us
        bucket = self._slots.get(slot)
        if bucket is None:
            self._slots[slot] = bucket = []
            heapq.heappush(self._slot_heap, slot)
        bucket.append(o)

    def _expire(self) -> list[EndedSession]:
        clock = self.clock
        if clock is None:
            return []
        resolution = self.settings.resolution_us
        due: dict[_Open, None] = {}  # a session filed twice (its deadline moved up) ends once
        heap = self._slot_heap
        while heap and (heap[0] + 1) * resolution <= clock:
            slot = heapq.heappop(heap)
            for o in self._slots.pop(slot):
                if o.count == 0:
                    continue
                deadline = self._deadline(o)
                if (deadline // resolution + 1) * resolution <= clock:
                    due[o] = None
                else:
                    self._file(o)
        ordered = sorted(due, key=lambda o: (o.last, o.key, o.first))
        return [self._end(o, evicted=False) for o in ordered]

    def _evict(self) -> EndedSession:
        key = next(iter(self._keys))
        self.evicted_total += 1
        return self._end(self._chain(key)[0], evicted=True)

    def _end(self, o: _Open, *, evicted: bool) -> EndedSession:
        chain = [c for c in self._chain(o.key) if c is not o]
        newest = self._keys.get(o.key)
        if newest is not None and not chain:
            del self._keys[o.key]
        elif chain:
            # Keep the key's place in the idle order: relink in place.
            self._link(o.key, chain)
        self._open -= 1
        funnel = self.settings.funnel
        result = NOT_STARTED
        if funnel is not None and o.steps is not None:
            events = (divmod(packed, _STEP_SPACE) for packed in _unpacked(o.steps))
            result = window_funnel(funnel.steps, funnel.within_us, events)
        ended = EndedSession(o.key, o.first, o.last, o.count, result, evicted)
        o.count = 0
        o.older = None
        return ended

    # -- checkpoint -----------------------------------------------------------------------

    def checkpoint(self) -> bytes:
        """The open sessions and the clock, as bytes that `restore` takes back."""
        sessions = []
        for key in self._keys:
            for o in self._chain(key):
                steps = None if o.steps is None else list(_unpacked(o.steps))
                sessions.append([key, o.first, o.last, o.count, steps])
        state = {
            "v": 1,
            "clock": self.clock,
            "evicted": self.evicted_total,
            "sessions": sessions,
        }
        return json.dumps(state, separators=(",", ":")).encode()

    @classmethod
    def restore(cls, settings: SessionSettings, data: bytes) -> SessionAssembler:
        """An assembler in the state `checkpoint` saved."""
        state = json.loads(data)
        if not isinstance(state, dict) or state.get("v") != 1:
            raise ValueError("not a session checkpoint of a known version")
        assembler = cls(settings)
        assembler.clock = state["clock"]
        assembler.evicted_total = state["evicted"]
        chains: dict[str, list[_Open]] = {}
        for key, first, last, count, steps in state["sessions"]:
            o = _Open(key, first)
            o.last = last
            o.count = count
            for packed in steps or ():
                o.steps = _joined(o.steps, int(packed))
            chains.setdefault(key, []).append(o)
            assembler._open += 1
            assembler._file(o)
        for key, chain in chains.items():
            assembler._link(key, chain)
        return assembler
