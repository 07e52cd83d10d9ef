"""The garbage collector of a serving process: full passes rarer than CPython's default.

A process with 10,000 open streams tracks some 500,000 objects, and a full pass of the
collector walks all of them: 150 to 450 ms on a 2-core VM, during which no stream is written.
CPython runs one after every 10 collections of the middle generation (`threshold2`), when the
objects that survived into the oldest have grown by a quarter since the last one. While
streams open (a start, a reconnect storm) nearly every object survives, so that is every half
second or so: ten full passes, two seconds a worker, for 10,000 streams.

Nothing in a stream's life needs them: a stream ends as a chain of references that counting
frees (`pushsvc.deliver.live_stream`, `pushsvc.server.StreamingHandler`), and the cycles
that do reach the oldest generation are few and small (Werkzeug's URL matcher leaves one per
request). So the oldest generation is passed over ten times less often.

Measured in docs/journal/reconnect-storm.md ("Full collections"): 20,000 streams over two
workers, every worker stopped mid-broadcast: three full passes a restarted worker instead of
ten, and back and current sooner.

The youngest generation is collected after 10,000 allocations, not 700: the embedded server
aggregates in the serving process, and batches of 10,000 events allocate hundreds of
thousands of objects that live a batch or two. At 700, three full passes (65-95 ms each, the
windows' values walked) fell within 30 such batches and set a producer's p99; at 10,000 none
did (2026-11-27). The young cycles wait a few thousand allocations longer, no more.
"""

from __future__ import annotations

import gc
from typing import Protocol

import gevent

YOUNGEST_AFTER = 10_000
"""Allocations (less deallocations) of tracked objects between two collections of the
youngest generation (700 in CPython)."""
OLDEST_EVERY = 100
"""Collections of the middle generation between two considerations of a full pass (10 in
CPython)."""


class _Counter(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class CollectAfterShedding:
    """What shedding connections that kept the server waiting (`pushsvc.http.
    waiting_clients`) tells: counted, and a full pass of the collector once as many as
    `SHED_PER_FULL_PASS` have gone. Such a connection waited long enough to reach the
    oldest generation, and its end leaves cycles there (the exceptions that unwound its
    greenlet hold their frames), which the rare full passes (`tune_for_streams`) would leave
    for a long time: under an attack that keeps connections waiting, hundreds of MB."""

    SHED_PER_FULL_PASS = 4096

    def __init__(self, counter: _Counter) -> None:
        self._counter = counter
        self._since_pass = 0

    def __call__(self, count: int) -> None:
        self._counter.inc(count)
        self._since_pass += count
        if self._since_pass >= self.SHED_PER_FULL_PASS:
            self._since_pass = 0
            # On the loop, once the shed greenlets have unwound: not from the one shedding.
            gevent.get_hub().loop.run_callback(gc.collect)


def tune_for_streams() -> None:
    """Set this process's thresholds (see the module docstring); the middle one unchanged."""
    _, middle, _ = gc.get_threshold()
    gc.set_threshold(YOUNGEST_AFTER, middle, OLDEST_EVERY)
