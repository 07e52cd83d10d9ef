"""The garbage collector of a serving process: full passes rarer than CPython's default.

A process with thousands of open streams tracks hundreds of thousands of objects, and a full
pass of the collector walks every one of them while no stream is written. CPython runs one
whenever the oldest generation has grown by a quarter since the last, and while streams open
(a start, a reconnect storm) nearly every object survives into it, so full passes come every
half second or so.

Nothing in a stream's life needs them: a stream ends as a chain of references that counting
frees (`pushsvc.deliver.live_stream`, `pushsvc.server.StreamingHandler`), and the cycles
that reach the oldest generation are few and small (Werkzeug's URL matcher leaves one per
request). So the oldest generation is passed over ten times less often.

The youngest generation waits for 10,000 allocations, not 700: the embedded server
aggregates in the serving process, and a batch of events allocates hundreds of thousands of
objects that live a batch or two; at 700 the full passes those batches triggered set a
producer's p99.

Everything the process made to start (modules, the app, its rules and routes) is frozen out
of the collector's passes once it is built (`gc.freeze`): it lives as long as the process,
and a full pass would walk it every time.

What an attack leaves is not left to the collector either. A connection that kept the server
waiting and was shed, or timed out, must go by reference counting when it ends: a body's
deadline, raised through the connection's frames, held them in a cycle
(`pushsvc.http.body_deadline`); the cycle is cut (`tests/unit/test_streaming_handler.py`
counts what a timed-out body leaves).

The measurements behind each choice are in docs/journal/collector.md.
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
