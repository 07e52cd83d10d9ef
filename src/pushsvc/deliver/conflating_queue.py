"""A stream's bounded queue of runs: latest-wins per topic once full, and a floor (pure).

The queued way to a client (`pushsvc.deliver.hub`): the hub puts, the client's stream drains.
Putting never blocks and never grows the queue past `capacity` runs: a run that does not fit
is conflated — its topic's latest update replaces any pending one of that topic — until the
stream drains the queue. An update is the full state of its topic, so skipping older ones
loses nothing a subscriber needs.

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


@dataclass(eq=False, slots=True)
class ConflatingQueue:
    """Runs in id order, then each conflated topic's latest update. Not greenlet-aware:
    whoever puts wakes the stream."""

    capacity: int
    """Runs kept as they came; beyond this the queue conflates."""
    floor: Cursor | None = None
    """Updates this cursor does not admit are dropped when drained (None: nothing to drop)."""
    runs: deque[Run] = field(default_factory=deque)
    latest: dict[str, Update] = field(default_factory=dict)
    """Conflated topics → their latest update, in the order those updates arrived (id
    order), and a deleted topic's deletion (under `_DELETED` + topic). Not empty: the queue
    is conflating, and every run put goes here until drained."""

    def put(self, run: Run) -> bool:
        """Queue `run`; True when it was conflated instead (the queue is full, or already
        conflating)."""
        latest = self.latest
        if not latest and len(self.runs) < self.capacity:
            self.runs.append(run)
            return False
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
        if newest.is_deletion:
            # The topic's deletion replaces its latest update, and stays (in its place in id
            # order) when the topic's next update comes: the stream must see the gap.
            latest.pop(topic, None)
            topic = _DELETED + topic
        elif any(u.is_deletion for u in run.updates):
            deletion = [u for u in run.updates if u.is_deletion][-1]
            latest.pop(topic, None)
            latest.pop(_DELETED + topic, None)
            latest[_DELETED + topic] = deletion
        latest.pop(topic, None)
        latest[topic] = newest
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
        if self.floor is not None and runs:
            runs = self._drop_covered(runs)
        return runs

    def __len__(self) -> int:
        """Entries waiting: runs, plus one per conflated topic."""
        return len(self.runs) + len(self.latest)

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
