"""Running a shard's aggregator on a shared log (Redis): the event log in, updates out,
exactly once. It reads the log through `pushsvc.broker.shared_log`'s contract only.

Every aggregator of a shard applies the shard's log in order to its own windows (a hot
standby). Only the lease holder publishes: each batch of updates goes out with the position
of the last log entry it covers, in one atomic step (`Broker.publish_updates`), so "applied
up to" moves exactly with the updates. A standby keeps the drafts of entries it applied but
has not seen published, and drops them as the holder's position passes them; when it takes
the lease it publishes what is left. Every tenure of the lease starts that way, also one that
follows a tenure of its own: a holder paused past its lease may take it again after a
successor published and died, and must go on from the successor's position, not its own
(`Lease.token` tells it; its writes carry the token of the tenure it caught up in).

An aggregator that starts cold rebuilds its windows from the log up to the applied position,
then moves each topic's clock to its latest update's. Since the windows are a function of
the log (idle ticks are logged too, by the holder), every way through gives the same
statistics.

The holder also trims the log: an entry is kept while an event of it may still be in a
window (ts > T - widest window), so a rebuild finds every event it needs.

And it forgets idle topics (`--topic-ttl`) through the log: it proposes the topics idle for
the TTL with empty windows, the forget script drops those nothing was logged for since
(`EventLog.forget`) and logs a forget entry, and every aggregator drops their windows when
it applies that entry.

A deleted topic (`DELETE /topics/{t}`, logged by the web process: `Broker.delete_topic`) is
dropped by every aggregator when it applies the delete entry, and the deletion is published
like the updates of any entry (exactly once, with "applied up to").
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable

import gevent.event

from pushsvc.aggregate.aggregator import Aggregator, sweep_interval_s
from pushsvc.broker.base import Applied, Broker
from pushsvc.broker.shared_log import FIRST, Entry, EventLog, Lease, position
from pushsvc.core import partition_log
from pushsvc.core.updates import UpdateDraft
from pushsvc.errors import BrokerRefused, BrokerUnavailable, Fenced, LogGap, PublishedAlready

log = logging.getLogger(__name__)

_READ_COUNT = 512  # log entries read at once
# Drafts published in one call at most, cut at entries: Redis runs each call as one script,
# every producer's append waiting behind it (10,000 updates: 113-135 ms; a batch is logged as
# entries of `ENTRY_EVENTS`, so one entry's drafts are about as many). An entry's own drafts
# always go together: exactly-once moves "applied" entry by entry.
_PUBLISH_DRAFTS = 1000
_RETRY_S = 0.5  # after a failed call to Redis
_FORGET_AT_ONCE = 1000  # topics proposed in one script call at most
_CHECKPOINTS_AT_ONCE = 100  # topics saved in one script call at most


class ShardRunner:
    """Applies one shard's log; publishes while `lease.holding`. One greenlet runs `run`."""

    def __init__(
        self,
        aggregator: Aggregator,
        broker: Broker,
        event_log: EventLog,
        lease: Lease,
        *,
        tick_us: int,
        topic_ttl_us: int = 0,
        block_ms: int = 100,
        checkpoint_interval_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        alone: bool = False,
    ) -> None:
        """`alone`: no other process can hold the lease (the embedded broker): a publish
        fenced then means the lease lapsed while this process was busy past it, and this
        runner takes it back at the next renewal; said so, at INFO, not as a lease lost."""
        self._alone = alone
        self._fenced_out = False
        """A publish was fenced and this runner stands by: its next tenure says it took the
        lease back."""
        self.aggregator = aggregator
        self._broker = broker
        self._log = event_log
        self._lease = lease
        self._tick_s = tick_us / 1_000_000
        self._topic_ttl_us = topic_ttl_us
        self._block_ms = block_ms
        self._checkpoint_interval_s = checkpoint_interval_s
        self.position = FIRST
        """The last log entry applied to this aggregator's windows."""
        self.published = FIRST
        """The last log entry known to be published (by this aggregator or another)."""
        self._count: int | None = None
        """`Entry.n` of the entry at `position`, as this aggregator read the log on from there;
        None until it read one (after a rebuild: the applied count is no proof, a failover may
        have lost the publishes that counted some entries)."""
        self._torn = False
        """An entry was left half applied (see `step`): no checkpoint is taken from here on."""
        self._pending: deque[tuple[str, list[UpdateDraft]]] = deque()
        # Per topic, the log entries (id, latest event time) that may still hold an event
        # in a window; the oldest of them all bounds the trim.
        self._held: dict[str, deque[tuple[str, int]]] = {}
        # Topics with durable state (groups, count and sketch windows): the position of each
        # one's saved checkpoint, and those changed since (`pushsvc.core.checkpoint`).
        self._saved: dict[str, tuple[int, int]] = {}
        self._dirty: set[str] = set()
        self._trim_before = FIRST
        """The trim bound as of the last turn that had published everything it applied."""
        self._tenure: str | None = None
        """The lease token under which this aggregator caught up and publishes; None while
        it stands by."""
        self.updates_published = 0
        self.refused: str | None = None
        """The code of the refusal this aggregator waits on (e.g. broker_full), else None."""
        self._clock = clock
        self._sweep_s = sweep_interval_s(topic_ttl_us)
        self._start_timers()

    def _start_timers(self) -> None:
        now = self._clock()
        self._next_tick = now + self._tick_s
        self._next_checkpoint = now + self._checkpoint_interval_s
        self._next_sweep = now + self._sweep_s

    @property
    def shard(self) -> tuple[int, int]:
        return self._log.shard

    @property
    def holding(self) -> bool:
        """Whether this aggregator holds the shard's lease, as it last learned."""
        return self._lease.holding

    def keep_lease(self, stop: gevent.event.Event) -> None:
        """Take and renew the shard's lease until `stop` is set (a greenlet of its own)."""
        self._lease.keep(stop)

    def close(self) -> None:
        self._log.close()
        self._lease.close()

    @property
    def active(self) -> bool:
        """Caught up and publishing under the lease's current tenure."""
        return self._tenure is not None

    # -- the loop ----------------------------------------------------------------------

    def run(self, stop: gevent.event.Event) -> None:
        """Rebuild, then apply and publish until `stop` is set, reading the log itself (a
        runner on its own; a process holding many partitions drives their runners with
        `turn` instead: `pushsvc.aggregate.partition_pool`)."""
        while not stop.is_set():
            try:
                self.rebuild()
                break
            except BrokerUnavailable:
                stop.wait(_RETRY_S)
        while not stop.is_set():
            pause = self.turn()
            if pause:
                stop.wait(pause)

    def turn(self, entries: list[Entry] | None = None) -> float:
        """One pass: trim when due, read and apply what the log has (or `entries`, read for
        this runner by a `LogWaiter`), publish it or catch up, then log ticks and forget idle
        topics when due. How long to pause before the next pass: 0, or a while after a
        failure."""
        try:
            now = self._clock()
            if now >= self._next_checkpoint:
                # First: trimming frees memory, so it must not wait behind a publish
                # that a full Redis refuses (XTRIM is allowed at maxmemory).
                self._next_checkpoint = now + self._checkpoint_interval_s
                if self.active:
                    self._log.announce_rules(self.aggregator.rules.digest)
                if self.active and not self._pending:
                    self.save_checkpoints()
                oldest = self._trim_bound()
                if self.active and oldest != FIRST:
                    self._log.trim(oldest)
            self.step(entries)
            now = self._clock()
            if self.active and self._tick_s and now >= self._next_tick:
                self._next_tick = now + self._tick_s
                self._log_ticks()
            if self.active and self._topic_ttl_us and now >= self._next_sweep:
                self._next_sweep = now + self._sweep_s
                self.forget_idle()
        except LogGap:
            raise  # its windows miss entries: only a rebuild helps (`PartitionPool`)
        except BrokerRefused as exc:
            # Full (or read-only, busy, loading): nothing was written, the drafts stay
            # pending and the lease is kept (renewing it needs no memory); the same
            # batch is published once Redis takes it, so each event still yields one update.
            self._refused(exc)
            return _RETRY_S
        except BrokerUnavailable:
            return _RETRY_S
        except Exception:
            log.exception("partition %d/%d: aggregator step failed", *self.shard)
            return _RETRY_S
        return 0.0

    def next_chore(self) -> float:
        """When (on the runner's clock) `turn` has something to do even if no entry comes."""
        due = self._next_checkpoint
        if self.active and self._tick_s:
            due = min(due, self._next_tick)
        if self.active and self._topic_ttl_us:
            due = min(due, self._next_sweep)
        return due

    def idle(self, now: float) -> bool:
        """Whether a `turn` with no entries would do nothing: nothing waits to be published,
        the lease's tenure is the one it publishes under (or it stands by, as it did), and no
        chore is due. The pool skips such runners: one entry must not cost every partition
        held a pass."""
        tenure = self._lease.token if self._lease.holding else None
        return not self._pending and self._tenure == tenure and now < self.next_chore()

    def hand_over(self) -> bool:
        """Before this process gives the lease up (its share shrank, or it stops): publish
        what it applied and save the checkpoints, so that the next holder starts from exactly
        here and replays little. It reads no more entries. Whether everything applied is
        published (if not, the next holder publishes the rest: nothing is lost either way)."""
        try:
            if self._lease.holding:
                self.step([])
                self.save_checkpoints()
        except (BrokerRefused, BrokerUnavailable) as exc:
            log.warning(
                "partition %d/%d: handing over with %d log entries unpublished (%s)",
                *self.shard,
                len(self._pending),
                exc,
            )
        return not self._pending

    def _refused(self, exc: BrokerRefused | None) -> None:
        """Log once when Redis starts refusing this aggregator (`exc`), once when a write is
        taken again (None)."""
        code = None if exc is None else exc.code
        if code == self.refused:
            return
        if exc is not None:
            log.warning(
                "partition %d/%d: Redis refuses (%s: %s); waiting, %d log entries unpublished",
                *self.shard,
                exc.code,
                exc.message,
                len(self._pending),
            )
        else:
            log.warning("partition %d/%d: Redis takes writes again; continuing", *self.shard)
        self.refused = code

    def rebuild(self) -> int:
        """Cold start: apply the log up to the applied position without publishing, then
        move each topic's clock to where its latest update left it. How many log entries it
        applied."""
        # The checkpoints before the applied position: a checkpoint is saved only once
        # everything up to it is published, so each one read is at or before the position
        # read after it, and the replay below reaches it. The other way round, a holder could
        # publish and save between the two reads (this process paused past its lease while
        # a successor went on): a checkpoint past the position replayed to, whose entries the
        # windows then took a second time as they read on.
        checkpoints = self._log.checkpoints()
        state = self._log.state()
        index, shards = self.shard
        for checkpoint in checkpoints:
            self.aggregator.restore(checkpoint)
            self._saved[checkpoint.topic] = checkpoint.position
        after = FIRST
        count = 0
        while state.applied != FIRST:
            entries = self._log.upto(after, state.applied, count=_READ_COUNT * 8)
            if not entries:
                break
            for entry in entries:
                self._apply(entry)
            count += len(entries)
            after = entries[-1].id
        self.aggregator.end_replay()
        for topic, clock in state.clocks.items():
            self.aggregator.restore_clock(topic, clock, state.ages.get(topic))
        self.position = self.published = state.applied
        self._count = None
        self._start_timers()
        partition_log.log.debug(
            "partition %d/%d: rebuilt %d topics from %d log entries up to %s",
            index,
            shards,
            len(self.aggregator.topics()),
            count,
            state.applied,
        )
        return count

    def step(self, entries: list[Entry] | None = None) -> None:
        """Read and apply what the log has (waiting a little for it), or `entries` when given,
        then publish it if this aggregator holds the lease, or catch up with the holder's
        position if not."""
        if entries is None:
            entries = self._log.read(self.position, count=_READ_COUNT, block_ms=self._block_ms)
        if entries:
            # Each id parsed once: this is every log entry's path.
            applied = position(self.position)
            published = position(self.published)
            for entry in entries:
                at = position(entry.id)
                if at <= applied:
                    continue  # read for an older position (a waiter's answer, late)
                n, count = entry.n, self._count
                # Numbers going back are a log that started again (Redis restarted empty, or
                # a replica behind): the windows here are then the only copy, and go on.
                if n is not None and count is not None and n > count + 1:
                    raise LogGap(
                        f"partition {self.shard[0]}/{self.shard[1]}: entry {entry.id} is the "
                        f"log's number {n}, the one after {self.position} was {count + 1}"
                    )
                self._count = n
                try:
                    drafts = self._apply(entry, at)
                except BaseException:
                    # Part of the entry may be in the windows (an aggregator that pauses
                    # mid-batch can be killed there): they must never be checkpointed.
                    self._torn = True
                    raise
                self.position = entry.id
                applied = at
                if at > published:
                    self._pending.append((entry.id, drafts))
        holding = self._lease.holding
        if holding and self._tenure != self._lease.token:
            # A tenure of ours begins (a takeover, or the lease taken again after it lapsed
            # unnoticed), so the last holder can publish no more: what it did publish is
            # final. Continue right after it.
            tenure = self._lease.token
            self._catch_up()
            self._tenure = tenure
            self._log.announce_rules(self.aggregator.rules.digest)
            if self._fenced_out:
                self._fenced_out = False
                log.info(
                    "partition %d/%d: took the lease back; publishing from log entry %s",
                    *self.shard,
                    self.published,
                )
            else:
                partition_log.log.debug(
                    "partition %d/%d: active from log entry %s", *self.shard, self.published
                )
        elif not holding:
            self._tenure = None
        if holding:
            self._flush()
        else:
            self._catch_up()

    def _apply(self, entry: Entry, at: tuple[int, int] | None = None) -> list[UpdateDraft]:
        """Apply `entry` (at `at`, its id parsed, when the caller has it)."""
        if at is None:
            at = position(entry.id)
        if entry.ticks is not None:
            self._dirty.update(t for t in entry.ticks if self.aggregator.durable(t))
            return self.aggregator.apply_ticks(entry.ticks, at)
        if entry.forgotten is not None:
            self.aggregator.forget(entry.forgotten)
            for topic in entry.forgotten:
                self._held.pop(topic, None)  # none of their entries is needed any more
                self._saved.pop(topic, None)
                self._dirty.discard(topic)
            return []
        if entry.deleted is not None:
            topic = entry.deleted
            self._held.pop(topic, None)  # the deleted topic's entries: none is needed now
            drafts = self.aggregator.delete(topic, at)
            if self.aggregator.clock(topic) is None:
                # Gone. (Still held: a rebuild restarted it from its checkpoint, which was
                # taken after the deletion and stays its saved one.)
                self._saved.pop(topic, None)
                self._dirty.discard(topic)
            return drafts
        assert entry.topic is not None and entry.events is not None
        held = self._held.get(entry.topic)
        if held is None:
            held = self._held[entry.topic] = deque()
        held.append((entry.id, max(e.ts_us for e in entry.events)))
        if self.aggregator.durable(entry.topic):
            self._dirty.add(entry.topic)
        return self.aggregator.apply_events(entry.topic, entry.events, at)

    def save_checkpoints(self) -> int:
        """Save the checkpoint of every durable topic changed since its last one, at this
        aggregator's position; only while everything applied is published (a checkpoint
        must not run ahead of the updates), by the lease holder. How many were saved."""
        if self._tenure is None or self._pending or not self._dirty or self._torn:
            return 0
        at = position(self.position)
        topics = sorted(self._dirty)
        saved = 0
        for start in range(0, len(topics), _CHECKPOINTS_AT_ONCE):
            batch = [
                checkpoint
                for topic in topics[start : start + _CHECKPOINTS_AT_ONCE]
                if (checkpoint := self.aggregator.checkpoint(topic, at)) is not None
            ]
            try:
                self._log.save_checkpoints(self._tenure, batch)
            except Fenced:
                self._fenced()
                return saved
            for checkpoint in batch:
                self._saved[checkpoint.topic] = at
                self._dirty.discard(checkpoint.topic)
            saved += len(batch)
        return saved

    def _catch_up(self) -> None:
        applied = self._log.applied()
        if position(applied) > position(self.published):
            self.published = applied
        while self._pending and position(self._pending[0][0]) <= position(self.published):
            self._pending.popleft()

    def _fenced(self) -> None:
        """A write was refused: the tenure it was made in is over. Stand by until the lease
        says otherwise (a new tenure catches up first)."""
        self._lease.holding = False
        self._tenure = None

    def _flush(self) -> None:
        assert self._tenure is not None
        while self._pending:
            drafts: list[UpdateDraft] = []
            last = self._pending[0][0]
            taken = 0
            for entry_id, entry_drafts in self._pending:
                if drafts and len(drafts) + len(entry_drafts) > _PUBLISH_DRAFTS:
                    break
                drafts.extend(entry_drafts)
                last = entry_id
                taken += 1
            applied = Applied(self.shard, last, taken, after=self.published)
            try:
                self._broker.publish_updates(drafts, applied=applied, fence=self._tenure)
            except Fenced:
                if self._alone:
                    log.info(
                        "partition %d/%d: the lease lapsed while this process was busy for "
                        "longer than --lease; taking it back (nothing is lost: the updates "
                        "wait in the log)",
                        *self.shard,
                    )
                else:
                    log.warning("partition %d/%d: the lease moved on; standing by", *self.shard)
                self._fenced_out = True
                self._fenced()
                return
            except PublishedAlready:
                # An earlier attempt of ours went through though its answer never came (a
                # dropped connection, a timeout): what is published is final, go on after it.
                log.warning("partition %d/%d: published already; continuing after it", *self.shard)
                self._catch_up()
                continue
            self._refused(None)
            for _ in range(taken):
                self._pending.popleft()
            self.published = last
            self.updates_published += len(drafts)

    def _log_ticks(self) -> None:
        derived = self.aggregator.derived_topics()
        through = self._broker.derived_through(derived) if derived else None
        ticks = self.aggregator.due_ticks(through)
        if ticks and self._tenure is not None:
            try:
                self._log.append_ticks(self._tenure, ticks, self.position)
                self._refused(None)
            except Fenced:
                self._fenced()

    def forget_idle(self) -> list[str]:
        """Propose the topics idle for the TTL with empty windows; the log forgets those
        nothing was logged for since this aggregator's position (`EventLog.forget`), and
        this aggregator drops them when it applies the forget entry, like a standby. Only
        once everything applied is published: the latest updates a forget removes are
        final. The topics forgotten."""
        if self._tenure is None or self._pending:
            return []
        idle = list(
            self.aggregator.idle_topics(self._topic_ttl_us, ticking=self._tick_s > 0).items()
        )
        forgotten: list[str] = []
        for start in range(0, len(idle), _FORGET_AT_ONCE):
            proposed = dict(idle[start : start + _FORGET_AT_ONCE])
            try:
                forgotten += self._log.forget(self._tenure, self.position, proposed)
            except Fenced:
                self._fenced()
                break
        if forgotten:
            log.info("partition %d/%d: forgot %d idle topics", *self.shard, len(forgotten))
        return forgotten

    def _trim_bound(self) -> str:
        """Where the log may be trimmed: `_prune_held`'s bound while everything applied is
        published, else the bound of the last time it was. Entries waiting to be published
        have moved the windows on (a publish failed, or a full Redis refuses it); were this
        aggregator to die now, its successor would apply them again from the published
        position, with the events the windows held there, which the horizon of the windows
        as they are now would already have trimmed."""
        if not self._pending:
            self._trim_before = self._prune_held()
        return self._trim_before

    def _prune_held(self) -> str:
        """Forget the entries no window can need any more; the oldest entry a rebuild still
        needs (never one not yet published)."""
        oldest = self.published
        for topic in list(self._held):
            held = self._held[topic]
            horizon = self.aggregator.horizon_us(topic)
            durable = self.aggregator.durable(topic)
            saved = self._saved.get(topic)
            while held and (horizon is None or held[0][1] <= horizon):
                # A durable topic's entries after its checkpoint are its durable state too.
                if durable and (saved is None or position(held[0][0]) > saved):
                    break
                held.popleft()
            if not held:
                del self._held[topic]
            elif position(held[0][0]) < position(oldest):
                oldest = held[0][0]
        return oldest
