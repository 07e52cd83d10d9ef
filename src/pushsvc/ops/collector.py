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

Everything the process made to start (modules, the app, its rules and routes: some 75,000
objects) is frozen out of the collector's passes once it is built (`gc.freeze`): it lives as
long as the process, and a full pass walked it every time, 32-36 ms of a held loop before
looking at anything made since (measured 2026-11-27).

What an attack leaves is not left to the collector either. A connection that kept the
server waiting and was shed, or timed out, must go by reference counting when it ends: under
R.U.D.Y. a body's deadline, raised through the connection's frames, held them in a cycle
(`pushsvc.http.body_deadline`), and the full passes that freed them, one per 4,096
connections shed, held the loop 0.2-0.5 s each. The cycle is cut, and those passes are gone
(`tests/unit/test_streaming_handler.py` counts what a timed-out body leaves).
"""

from __future__ import annotations

import gc

YOUNGEST_AFTER = 10_000
"""Allocations (less deallocations) of tracked objects between two collections of the
youngest generation (700 in CPython)."""
OLDEST_EVERY = 100
"""Collections of the middle generation between two considerations of a full pass (10 in
CPython)."""


def tune_for_streams() -> None:
    """Set this process's thresholds (see the module docstring); the middle one unchanged.
    Then freeze what the process made to start: call it once that is built, before serving.
    What start-up left as garbage is collected first, not frozen with the rest."""
    _, middle, _ = gc.get_threshold()
    gc.set_threshold(YOUNGEST_AFTER, middle, OLDEST_EVERY)
    gc.collect()
    gc.freeze()
