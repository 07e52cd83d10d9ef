"""Mercure resume lookups, bounded: one read of the history at a time per process, shared by
every id asked meanwhile.

A subscriber that reconnects with a Mercure id makes pushsvc read the retained history of
`mercure.*` and search it (`pushsvc.deliver.mercure_resume`, `pushsvc.deliver.mercure_search`):
at the defaults up to 16 partitions of 10,000 updates, some seconds of a process on Redis.
The search reads a page at a time and lets the process serve everything else between two
pages (`pause`: `loop_pause.make_way` in a serving process), so no step of it holds the
loop long; but its pages add up to the same seconds. The id costs its sender nothing to make
up, and an id no history keeps is searched to the end; before this bound a storm of made-up
ids from one client (each hung up at once, so no stream limit counted it) kept a process
reading histories back to back, and a publisher beside it waited seconds.

So lookups are single-flight, as the replays of `pushsvc.deliver.replay_batcher` are: the
first starts a reader, which reads and searches the history once for every id waiting (the
search is one pass whatever their number); ids asked while it reads make the next pass. A
storm costs one pass at a time however many ask, and a restart's reconnects are answered
together. What may wait is bounded, in all (`MAX_WAITING`) and per client address
(`MAX_WAITING_PER_ADDRESS`, so that one address cannot hold the places others need): past
either, `resolve` raises `LookupsBusy` and the endpoint answers with a stream of its `retry:`
alone, which an `EventSource` retries with the same id (an error status would make it give up
for good). Ids that need no lookup (`earliest`, pushsvc's own cursors) never wait.

One `Lookups` per broker (per process), found with `of`. Greenlet-safe under gevent; not
thread-safe (one per process, like the hub).
"""

from __future__ import annotations

import time
import weakref
from collections import Counter
from collections.abc import Callable, Sequence
from typing import NamedTuple

import gevent
from gevent.event import AsyncResult

from pushsvc.broker.base import Broker
from pushsvc.deliver import mercure_resume
from pushsvc.deliver.mercure_resume import Resume
from pushsvc.errors import BrokerUnavailable

MAX_WAITING = 256
"""Lookups a process holds at once (waiting for a pass or in it): a restart's reconnects
are answered a pass at a time in batches this large; past it, `LookupsBusy`."""
MAX_WAITING_PER_ADDRESS = 16
"""Of them, from one client address: a sixteenth, so an attacker needs 16 addresses to take
every place (behind a proxy every client has the proxy's address: `--trusted-proxies`)."""

Resolver = Callable[[Sequence[str]], list[Resume]]


class LookupsBusy(Exception):
    """The process, or the client's address, holds as many lookups as it may."""


class _Asked(NamedTuple):
    last_event_id: str
    answer: AsyncResult[Resume]


class Lookups:
    """See the module docstring. `resolve_many` reads and searches the history once for a
    list of ids (`mercure_resume.resolve_many` on the process's broker)."""

    def __init__(
        self,
        resolve_many: Resolver,
        *,
        max_waiting: int = MAX_WAITING,
        per_address: int = MAX_WAITING_PER_ADDRESS,
    ) -> None:
        self._resolve_many = resolve_many
        self.max_waiting = max_waiting
        self.per_address = per_address
        self._pending: list[_Asked] = []
        self._held: Counter[str] = Counter()
        self._reader: gevent.Greenlet[[], None] | None = None

    @property
    def held(self) -> int:
        """Lookups waiting for a pass or in one."""
        return self._held.total()

    def resolve(self, address: str, last_event_id: str) -> Resume:
        """Where a stream resuming from `last_event_id` resumes (`mercure_resume.resolve`).
        Raises LookupsBusy past the bounds, BrokerUnavailable when the history cannot be read."""
        if not mercure_resume.needs_lookup(last_event_id):
            return self._resolve_many([last_event_id])[0]
        if self.held >= self.max_waiting:
            raise LookupsBusy(f"this server is looking up {self.max_waiting} Mercure ids")
        if self._held[address] >= self.per_address:
            raise LookupsBusy(f"at most {self.per_address} Mercure id lookups per client address")
        self._held[address] += 1
        try:
            answer: AsyncResult[Resume] = AsyncResult()
            self._pending.append(_Asked(last_event_id, answer))
            if self._reader is None:
                self._reader = gevent.spawn(self._read)
            resume = answer.get()
            assert resume is not None, "an answer is set or raises"
            return resume
        finally:
            self._held[address] -= 1
            if not self._held[address]:
                del self._held[address]

    def _read(self) -> None:
        batch: list[_Asked] = []
        try:
            gevent.sleep(0)  # the lookups asked in this turn of the loop join the pass
            while self._pending:
                batch, self._pending = self._pending, []
                started = time.monotonic()
                try:
                    answers = self._resolve_many([a.last_event_id for a in batch])
                except Exception as exc:
                    for asked in batch:
                        asked.answer.set_exception(exc)
                else:
                    for asked, resume in zip(batch, answers, strict=True):
                        asked.answer.set(resume)
                batch = []
                # A rest as long as the pass: lookups take at most half the process, however
                # many ask, and those asked meanwhile make the next pass together.
                gevent.sleep(time.monotonic() - started)
        finally:
            self._reader = None
            # Killed mid-pass (the process is stopping): nobody is left waiting for ever.
            for asked in (*batch, *self._pending):
                if not asked.answer.ready():
                    asked.answer.set_exception(BrokerUnavailable("the lookup was interrupted"))
            self._pending = []


_installed: weakref.WeakKeyDictionary[Broker, Lookups] = weakref.WeakKeyDictionary()


def of(broker: Broker, pause: Callable[[], None] | None = None) -> Lookups:
    """The `Lookups` of `broker` (made on first use; `pause` is passed to the search, which
    calls it between two pages of the history)."""
    lookups = _installed.get(broker)
    if lookups is None:
        held = weakref.ref(broker)  # the value may not hold its key alive

        def resolve_many(asked: Sequence[str]) -> list[Resume]:
            found = held()
            if found is None:
                raise BrokerUnavailable("the broker is closed")
            return mercure_resume.resolve_many(found, asked, pause)

        lookups = _installed[broker] = Lookups(resolve_many)
    return lookups
