"""A stream's bounded queue of runs: latest-wins per topic once full, and a floor (pure).

The queued way to a client (`pushsvc.deliver.hub`): the hub puts, the client's stream drains.
Putting never blocks and never grows the queue past `capacity` runs, nor the stream's pending
bytes past `max_bytes`: a run that does not fit is conflated — its topic's latest update
replaces any pending one of that topic — until the stream drains the queue. An update is the
full state of its topic, so skipping older ones loses nothing a subscriber needs.

Pending bytes (`pending`) are what the stream holds for its client: the queued runs, each
counted by its shared block (`Run.block`, joined once per run at dispatch: its length is the
stream's rendering's size give or take a projection, and costs nothing to read; a run of
points only, which has none, by its updates' data), the
conflated updates by their own frames, and `in_flight`, the rendered bytes its socket has not
taken yet (a write's unsent rest, a page of its replay or snapshot), set by whoever writes the
stream (`hold`). A stream with nothing pending takes a run whole, however large (an honest
client keeps up with any batch a producer may post); one with something pending conflates
a run that would take it past `max_bytes`. Its conflated topics' latest updates, one each,
are bounded too: a stream of many topics (a wildcard's) that falls behind on all of them
would otherwise hold one update a topic. Once they add up to more than `max_bytes`, it is
`overflowing`, and the hub ends it as slow (its client resumes with `Last-Event-ID`). So a
stream holds at most `max_bytes` plus one run, and `max_bytes` of latest updates plus one
(a stream that has taken a large run whole and then conflates an update is not overflowing:
an honest client keeps up with any batch). Every change is also added
to the process's `PendingBytes` (`ledger`): the total the process's budget bounds. A run that
would take that total past the budget is conflated whatever the stream holds (a messages
stream's ended), a conflated update that takes it past the budget overflows its stream, and a
writer whose rendered bytes would pass it (`may_hold`) ends its stream: so the streams
together hold at most the budget, and one update more.

The floor is the stream's cursor once its replay or snapshot is out
(`pushsvc.deliver.subscription`): draining drops the queued updates it does not admit (each
partition's up to the cursor's id there), so a stream subscribed before it read the history
sends nothing twice. A partition is forgotten by the floor once an update after it came (a
partition's updates reach the hub in order), and the floor itself once it is empty.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from pushsvc.core.cursor import Cursor
from pushsvc.core.updates import Run, Update
from pushsvc.deliver.rendering import run_of

_DELETED = "\0deleted "
"""Where a conflating queue keeps a topic's deletion, beside the topic's own latest update (a
topic name holds no NUL)."""


class PendingBytes:
    """The process's pending bytes over every stream (the ledger the queues add to), and the
    bounds: `per_stream` (`--max-stream-buffer`) and `budget` (32 times `--max-stream-buffer`)."""

    __slots__ = ("budget", "let_go", "per_stream", "total")

    def __init__(self, *, per_stream: int, budget: int) -> None:
        self.per_stream = per_stream
        self.budget = budget
        self.total = 0
        self.let_go = 0
        """Bytes streams held when they ended, since the hub last gave memory back
        (`pushsvc.core.heap_trim`)."""

    @property
    def spent(self) -> bool:
        """Whether the budget is spent: less of it is left than one stream may hold
        (`per_stream`), so new streams are refused. Runs that would pass it are refused one
        by one (`room`), so the total itself stops short of the budget."""
        return self.budget - self.total < min(self.per_stream, self.budget)

    def room(self, growth: int) -> bool:
        """Whether the streams may hold `growth` bytes more and stay within the budget (a
        shrink always may)."""
        return growth <= 0 or self.total + growth <= self.budget


@dataclass(eq=False, slots=True)
class ConflatingQueue:
    """Runs in id order, then each conflated topic's latest update. Not greenlet-aware:
    whoever puts wakes the stream."""

    capacity: int
    """Runs kept as they came; beyond this the queue conflates."""
    ledger: PendingBytes
    """The process's pending bytes, and the per-stream bound `max_bytes` (shared: one
    reference per stream, not a copy of the bounds)."""
    floor: Cursor | None = None
    """Updates this cursor does not admit are dropped when drained (None: nothing to drop)."""
    runs: deque[Run] = field(default_factory=deque)
    latest: dict[str, Update] = field(default_factory=dict)
    """Conflated topics → their latest update, in the order those updates arrived (id
    order), and a deleted topic's deletion (under `_DELETED` + topic). Not empty: the queue
    is conflating, and every run put goes here until drained."""
    queued_bytes: int = 0
    """Bytes of `runs` and `latest` (see the module docstring)."""
    conflated_bytes: int = 0
    """Bytes of `latest` alone."""
    in_flight: int = 0
    """Rendered bytes the stream's socket has not taken yet (`hold`)."""
    lossless: bool = False
    """A messages stream's queue: it never conflates (messages are not state, so the latest
    would not stand for the ones before it). Where it would, `put` keeps nothing and says so,
    and the hub ends the stream, whose client resumes from the history."""

    @property
    def pending(self) -> int:
        """What this stream holds for its client: queued and in flight."""
        return self.queued_bytes + self.in_flight

    @property
    def max_bytes(self) -> int:
        return self.ledger.per_stream

    @property
    def overflowing(self) -> bool:
        """Whether its conflated topics' latest updates add up to more than its bound, or took
        the process past its budget: its client is too far behind for even the latest
        statistics of each of its topics to wait for it."""
        ledger = self.ledger
        return self.conflated_bytes > ledger.per_stream or (
            bool(self.latest) and ledger.total > ledger.budget
        )

    def hold(self, size: int) -> None:
        """The stream's socket has `size` rendered bytes still to take (0: none)."""
        self.ledger.total += size - self.in_flight
        self.in_flight = size

    def may_hold(self, size: int) -> bool:
        """Whether `hold(size)` keeps the process within its budget: a writer whose rendered
        bytes would pass it ends the stream instead (`StreamExit.BEHIND`)."""
        return self.ledger.room(size - self.in_flight)

    def _count(self, size: int) -> None:
        self.queued_bytes += size
        self.ledger.total += size

    def put(self, run: Run) -> bool:
        """Queue `run`; True when it was conflated instead (the queue is full in runs or in
        bytes, the process's budget is spent, or the queue is already conflating)."""
        latest = self.latest
        if not latest and len(self.runs) < self.capacity:
            # A run of points only has no shared block (only streams that ask for their
            # tier write them): counted by its updates' data.
            size = len(run.block) or sum([len(u.data) for u in run.updates])
            pending = self.queued_bytes + self.in_flight
            ledger = self.ledger
            if (not pending or pending + size <= ledger.per_stream) and ledger.room(size):
                self.runs.append(run)
                self._count(size)
                return False
        if self.lossless:
            return True  # nothing kept: the stream is ended (`Hub._offer`)
        # Re-inserting keeps the dict in the order the latest updates arrived (id order).
        # A conflating stream gets the latest statistics, never a point or an alert (each is
        # one bucket or one change of its own: conflating them would lose all but one).
        newest = run.updates[-1]
        if not newest.is_update:
            updates = [u for u in run.updates if u.is_update or u.is_deletion]
            if not updates:
                return True
            newest = updates[-1]
        topic = newest.topic
        counted = 0
        if newest.is_deletion:
            # The topic's deletion replaces its latest update, and stays (in its place in id
            # order) when the topic's next update comes: the stream must see the gap.
            counted -= _size(latest.pop(topic, None))
            topic = _DELETED + topic
        elif any(u.is_deletion for u in run.updates):
            deletion = [u for u in run.updates if u.is_deletion][-1]
            counted -= _size(latest.pop(topic, None))
            counted -= _size(latest.pop(_DELETED + topic, None))
            latest[_DELETED + topic] = deletion
            counted += _size(deletion)
        counted -= _size(latest.pop(topic, None))
        latest[topic] = newest
        counted += _size(newest)
        self.conflated_bytes += counted
        self._count(counted)
        return True

    def drain(self) -> list[Run]:
        """Everything queued, in id order (conflated topics as runs of one update), less
        what the floor covers; the queue is empty afterwards."""
        queued = self.runs
        runs = list(queued)
        queued.clear()
        latest = self.latest
        if latest:
            runs.extend(run_of([u]) for u in latest.values())
            latest.clear()
            self.conflated_bytes = 0
        if self.queued_bytes:
            # The stream renders what it drained into its own write: from here that is
            # counted as in flight (`hold`) until its socket takes it.
            self._count(-self.queued_bytes)
        if self.floor is not None and runs:
            runs = self._drop_covered(runs)
        return runs

    def __len__(self) -> int:
        """Entries waiting: runs, plus one per conflated topic."""
        return len(self.runs) + len(self.latest)

    def release(self) -> None:
        """The stream is over: nothing it held is pending any more."""
        self.ledger.let_go += self.queued_bytes + self.in_flight
        self.runs.clear()
        self.latest.clear()
        self.conflated_bytes = 0
        self._count(-self.queued_bytes)
        self.hold(0)

    def _drop_covered(self, runs: list[Run]) -> list[Run]:
        floor = self.floor
        assert floor is not None
        kept: list[Run] = []
        for index, run in enumerate(runs):
            partition = run.updates[0].id.partition  # a run is one topic's: one partition's
            if partition not in floor:
                kept.append(run)
            elif floor.admits(run.updates[0].id):
                kept.append(run)
                floor = floor.without((partition,))  # its ids only grow from here
            elif floor.admits(run.last_id):
                kept.append(run_of([u for u in run.updates if floor.admits(u.id)]))
                floor = floor.without((partition,))
            if not floor:
                kept.extend(runs[index + 1 :])
                break
        self.floor = floor or None
        return kept


def _size(update: Update | None) -> int:
    return 0 if update is None else len(update.sse)
