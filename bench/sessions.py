"""The session assembler's costs: memory per open session, cost per ended session, events/s.

    python -m bench.sessions                    # 1,000,000 open sessions, ~1-2 minutes
    python -m bench.sessions --open 100000

* ``bytes/open``: Python allocations (tracemalloc) of an assembler holding N open sessions,
  one event each (keys like ``u0000001``, counted: the assembler keeps them), ÷ N; again with
  one funnel step event per session (its step list is extra).
* ``--resident``: instead, how much the process's resident memory grew (RSS, the allocator's
  overhead included), with one funnel step event per session. Seven times cheaper than
  tracing every allocation, and true only in a fresh process: one that freed memory before
  reuses it without growing.
* ``µs/ended``: CPU time to end 10,000 sessions by one clock move, with N open sessions
  beside them that do not end: constant in N means the clock does not scan open sessions.
* ``µs/event``: CPU time per `add` of a stream of events over 10,000 keys with a four-step
  funnel, sessions ending as they go.

Timings are process CPU time (``time.process_time``); no threshold is checked.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import time
import tracemalloc
from collections.abc import Callable

from pushsvc.stats.sessions import Funnel, SessionAssembler, SessionSettings

S = 1_000_000
T0 = 1_750_000_000 * S


def _settings(max_open: int) -> SessionSettings:
    return SessionSettings(
        gap_us=1800 * S, lateness_us=5 * S, max_open=max_open, funnel=Funnel(4, 3600 * S)
    )


def bytes_per_open(n: int, *, with_step: bool) -> float:
    """Python allocations per open session (tracemalloc)."""
    tracemalloc.start()
    try:
        return _per_open(n, with_step, lambda: tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()


def resident_bytes_per_open(n: int, *, with_step: bool) -> float:
    """Resident memory per open session (RSS): true only in a fresh process."""
    return _per_open(n, with_step, _resident_bytes)


def _per_open(n: int, with_step: bool, used_bytes: Callable[[], int]) -> float:
    keys = [f"u{i:07d}" for i in range(n)]
    gc.collect()
    before = used_bytes()
    assembler = SessionAssembler(_settings(n))
    step = 0 if with_step else None
    for i, key in enumerate(keys):
        assembler.add(key, T0 + i, step)
    used = used_bytes() - before
    assert assembler.open_sessions == n
    # The key strings were made before measuring; the assembler keeps them, so count them.
    return (used + sum(k.__sizeof__() for k in keys)) / n


def _resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def us_per_ended(n_open: int, n_ended: int = 10_000) -> float:
    assembler = SessionAssembler(_settings(n_open + n_ended))
    for i in range(n_ended):
        assembler.add(f"e{i}", T0, None)
    for i in range(n_open):
        assembler.add(f"o{i}", T0 + 1000 * S, None)  # stays open past the move below
    start = time.process_time()
    ended = assembler.advance(T0 + 1900 * S)
    spent = time.process_time() - start
    assert len(ended) == n_ended and assembler.open_sessions == n_open
    return spent / n_ended * 1e6


def us_per_event(events: int = 300_000) -> float:
    rng = random.Random(7)
    assembler = SessionAssembler(_settings(1_000_000))
    ts = T0
    start = time.process_time()
    for _ in range(events):
        ts += rng.randrange(0, 20_000)
        step = rng.choice((None, None, 0, 1, 2, 3))
        assembler.add(f"u{rng.randrange(10_000)}", ts - rng.randrange(0, 5 * S), step)
    return (time.process_time() - start) / events * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--open", type=int, default=1_000_000)
    parser.add_argument(
        "--resident", action="store_true", help="only resident bytes/open (a fresh process)"
    )
    args = parser.parse_args()
    if args.resident:
        used = resident_bytes_per_open(args.open, with_step=True)
        print(f"resident bytes/open, one step ({args.open:,} open): {used:.0f}")
        return
    for with_step in (False, True):
        label = "one step" if with_step else "no step"
        used = bytes_per_open(args.open, with_step=with_step)
        print(f"bytes/open, {label} ({args.open:,} open): {used:.0f}")
    for n in (0, args.open // 10, args.open):
        print(f"µs/ended with {n:,} others open: {us_per_ended(n):.2f}")
    print(f"µs/event (four-step funnel, 10,000 keys): {us_per_event():.2f}")


if __name__ == "__main__":
    main()
