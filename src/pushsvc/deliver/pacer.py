"""`?max_hz=`: at most one update per topic per interval, always the latest (pure).

Statistics are full state, so an update held back is simply replaced by the next one of
its topic; nothing a subscriber needs is lost by skipping. Points (closed series buckets)
are not state but one bucket each: they pass unpaced, and so do alerts and a topic's deletion
(which drops the topic's update held back: it belongs to the deleted topic). `Paced` renders
what a paced stream writes at each of its turns (`pushsvc.deliver.live_stream`).
"""

from __future__ import annotations

from collections.abc import Callable

from pushsvc.core.updates import Run, Update, UpdateId


class Pacer:
    """Decides which updates a paced stream writes now. Times are monotonic seconds,
    passed in by the caller (the live stream's clock), so tests drive the clock."""

    def __init__(self, interval_s: float) -> None:
        if interval_s <= 0:
            raise ValueError(f"the interval must be positive, got {interval_s}")
        self.interval_s = interval_s
        self._last_sent: dict[str, float] = {}
        self.held: dict[str, Update] = {}
        """Topic → its update held back, waiting for the topic's interval to pass. The same
        dict for the pacer's lifetime, changed by the pacer only: a stream loop may keep it
        and test it (not empty: `next_due` is meaningful) without a call."""

    @property
    def pending(self) -> bool:
        """Whether an update is held back, waiting for its topic's interval to pass."""
        return bool(self.held)

    def admit(self, updates: list[Update], now: float) -> list[Update]:
        """The updates to write at `now`, in id order: each new update whose topic is due,
        and each held-back one whose interval has passed."""
        due: list[Update] = []
        for update in updates:
            if not update.is_update:
                due.append(update)  # a closed bucket, an alert or a deletion replaces nothing
                if update.is_deletion:
                    # ...but a deletion ends what was held of its topic: never sent after it.
                    self.held.pop(update.topic, None)
                continue
            topic = update.topic
            if topic not in self.held and self._is_due(topic, now):
                due.append(update)
                self._last_sent[topic] = now
            else:
                self.held[topic] = update
        for topic, update in list(self.held.items()):
            if self._is_due(topic, now):
                due.append(update)
                self._last_sent[topic] = now
                del self.held[topic]
        due.sort(key=lambda u: u.id.position)
        return due

    def next_due(self) -> float:
        """When the earliest held-back update may go; only meaningful while `pending`."""
        return min(self._last_sent[t] for t in self.held) + self.interval_s

    def _is_due(self, topic: str, now: float) -> bool:
        last = self._last_sent.get(topic)
        return last is None or now - last >= self.interval_s


class Paced:
    """What a paced stream writes: the updates its `Pacer` admits at each turn, rendered by
    `message` (`pushsvc.deliver.rendering.Rendering.message`). An update held back behind
    newer ones of its partition goes without `id:`, so the client's Last-Event-ID never moves
    backwards."""

    __slots__ = ("_admit", "_message", "_sent", "pacer")

    def __init__(self, interval_s: float, message: Callable[[Update, bool], bytes]) -> None:
        self.pacer = Pacer(interval_s)
        self._admit = self.pacer.admit
        self._message = message
        self._sent: dict[int, UpdateId] = {}
        """The newest update sent with its id, per partition."""

    def next_due(self) -> float | None:
        """When the earliest held-back update may go (None: none is held)."""
        return self.pacer.next_due() if self.pacer.held else None

    def blocks(self, runs: list[Run], now: float) -> list[bytes]:
        """What to write at `now` (monotonic seconds) of `runs` and of what was held back."""
        message = self._message
        sent = self._sent
        messages = []
        # One run, the common case, is admitted as it is (`admit` only reads the list).
        taken = runs[0].updates if len(runs) == 1 else [u for run in runs for u in run.updates]
        for update in self._admit(taken, now):
            update_id = update.id
            last = sent.get(update_id.partition)
            fresh = last is None or update_id.is_after(last)
            data = message(update, fresh)  # with its id when fresh
            if data:  # empty: a group filter left nothing of it
                messages.append(data)
                if fresh:
                    sent[update_id.partition] = update_id
        return [b"".join(messages)] if messages else []
