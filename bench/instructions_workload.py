"""A fixed aggregator workload for `bench.instructions`: `STATS EVENTS BATCH`.

Run as a script with one tree's `src/` on PYTHONPATH; it imports the aggregator from the
layout that tree has (the regrouped one, or the flat one before it)."""

from __future__ import annotations

import gc
import sys

try:
    from pushsvc.aggregate.aggregator import Aggregator
    from pushsvc.core.event import Event
except ImportError:  # the tree before the regroup
    from pushsvc.aggregator import Aggregator  # type: ignore[no-redef]
    from pushsvc.events.model import Event  # type: ignore[no-redef]
S = 1_000_000
mode, n = sys.argv[1], int(sys.argv[2])
windows = [10 * S, 60 * S, 300 * S]
labels = ["10s", "1m", "5m"]
stats = (
    ("count", "sum", "mean", "min", "max", "var", "stddev")
    if mode == "scalar"
    else ("count", "sum", "mean", "min", "max", "var", "stddev", "p50", "p90", "p99")
)
# What the imports left is frozen out of the collector's sight: otherwise each full
# collection scans every module object, and a tree that imports a few more modules counted
# up to 20 % more instructions per event on the very same code path (gen2 runs fall
# elsewhere in a short run). The events' own garbage is still collected as it comes.
gc.freeze()
agg = Aggregator(windows_us=windows, labels=labels, stats=stats, wall_clock=lambda: 0)
t0 = 1_700_000_000 * S
batch = int(sys.argv[3])
values = [((i * 7919) % 1000) / 10.0 for i in range(n)]
for start in range(0, n, batch):
    events = [Event(values[i], t0 + i * 1000) for i in range(start, min(n, start + batch))]
    agg.apply_events("t", events)
