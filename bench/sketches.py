"""Quantile sketches for long windows, side by side: what ``pushsvc.stats.sketch`` was chosen
against (docs/journal/sketches.md).

    python -m bench.sketches                          # 10k, 100k and 1M values, ~3 minutes
    python -m bench.sketches --sizes 10000 --events 500 --json

Candidates: ``ddsketch`` (DataDog's DDSketch, a=0.01), ``datasketches`` KLL (k=200),
``fastdigest`` (t-digest, 1000 centroids), and ``pushsvc.stats.sketch.Sketch`` (a=0.01)
with its Fenwick index (``own-tree``) and without it (``own-scan``, a cumulative scan per
query). A library that is not importable gets a "skipped" row (``pip install -e '.[bench]'``
installs them). Data: lognormal (latency-like), bimodal (two lognormal modes) and Pareto
(alpha 1.2, heavy-tailed), each at every size. Per row:

* ``max err``: the largest ``|x̂ - x| / |x|`` over p50, p90, p99, against numpy's linear
  quantile (pandas' ``interpolation="linear"``); ``bound``: whether the sketch promises
  ``<= 1 %`` for every input (only the DDSketch mapping does);
* ``add µs``: one value added (a Python call per value, as the aggregator does);
* ``event µs``: one value added, then p50+p90+p99 read: what a long window pays per event;
* ``merge µs``: merging a sketch of n/60 values (one sub-bucket of a window) into it;
  ``sub µs``: removing it again ("-": the sketch cannot subtract);
* ``bytes``: the sketch's own serialisation (``ddsketch``'s needs protobuf: pickle's size
  instead, marked ``p``); ``heap KB``: Python allocations while building it (tracemalloc;
  "-" for the native ones, whose allocations it cannot see).

Timings are process CPU time (``time.process_time``), so a busy neighbour core does not
count; no threshold is checked.
"""

from __future__ import annotations

import gc
import importlib
import math
import pickle
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.common import Report, machine, parser
from pushsvc.stats.sketch import Sketch

QS = (0.5, 0.9, 0.99)
ACCURACY = 0.01


@dataclass(frozen=True)
class Candidate:
    name: str
    bound: bool
    make: Callable[[], Any]
    add: Callable[[Any, float], None]
    query: Callable[[Any], list[float]]
    merge: Callable[[Any, Any], None]
    subtract: Callable[[Any, Any], None] | None
    serialise: Callable[[Any], bytes]
    native: bool
    pickled: bool = False


def _own(indexed: bool) -> Candidate:
    def query(sketch: Sketch) -> list[float]:
        return sketch.quantiles(QS)

    return Candidate(
        name="own-tree" if indexed else "own-scan",
        bound=True,
        make=lambda: Sketch(ACCURACY, indexed=indexed),
        add=Sketch.add,
        query=query,
        merge=Sketch.merge,
        subtract=Sketch.subtract,
        serialise=Sketch.to_bytes,
        native=False,
    )


def candidates() -> tuple[list[Candidate], list[tuple[str, str]]]:
    """The candidates that import here, and (name, reason) for those that do not."""
    found = [_own(True), _own(False)]
    missing = []
    try:
        ddsketch = importlib.import_module("ddsketch")
    except ImportError as exc:
        missing.append(("ddsketch", str(exc)))
    else:
        found.append(
            Candidate(
                name="ddsketch",
                bound=True,
                make=lambda: ddsketch.DDSketch(ACCURACY),
                add=lambda s, v: s.add(v),
                query=lambda s: [s.get_quantile_value(q) for q in QS],
                merge=lambda s, o: s.merge(o),
                subtract=None,
                serialise=pickle.dumps,
                native=False,
                pickled=True,
            )
        )
    try:
        datasketches = importlib.import_module("datasketches")
    except ImportError as exc:
        missing.append(("kll", str(exc)))
    else:
        found.append(
            Candidate(
                name="kll",
                bound=False,
                make=lambda: datasketches.kll_doubles_sketch(200),
                add=lambda s, v: s.update(v),
                query=lambda s: list(s.get_quantiles(list(QS))),
                merge=lambda s, o: s.merge(o),
                subtract=None,
                serialise=lambda s: bytes(s.serialize()),
                native=True,
            )
        )
    try:
        fastdigest = importlib.import_module("fastdigest")
    except ImportError as exc:
        missing.append(("fastdigest", str(exc)))
    else:
        found.append(
            Candidate(
                name="fastdigest",
                bound=False,
                make=lambda: fastdigest.TDigest(1000),
                add=lambda s, v: s.update(v),
                query=lambda s: list(s.quantile_vec(list(QS))),
                merge=lambda s, o: s.merge_inplace(o),
                subtract=None,
                serialise=lambda s: bytes(s.to_bytes()),
                native=True,
            )
        )
    return found, missing


def datasets(n: int, seed: int) -> dict[str, list[float]]:
    rng = np.random.default_rng(seed)
    fast = rng.lognormal(math.log(20), 0.4, n)
    slow = rng.lognormal(math.log(400), 0.6, n)
    bimodal = np.where(rng.random(n) < 0.8, fast, slow)
    return {
        "lognormal": rng.lognormal(math.log(50), 1.0, n).tolist(),
        "bimodal": bimodal.tolist(),
        "pareto": (10 * (1 + rng.pareto(1.2, n))).tolist(),
    }


def _cpu(run: Callable[[], None]) -> float:
    gc.collect()
    t0 = time.process_time()
    run()
    return time.process_time() - t0


def _build(candidate: Candidate, values: Sequence[float]) -> Any:
    sketch = candidate.make()
    add = candidate.add
    for v in values:
        add(sketch, v)
    return sketch


def measure(
    candidate: Candidate, dist: str, values: list[float], extra: list[float], events: int
) -> dict[str, Any]:
    n = len(values)
    built: list[Any] = []
    insert_s = _cpu(lambda: built.append(_build(candidate, values)))
    sketch = built[0]
    truth = np.quantile(np.array(values), QS).tolist()  # linear, like pandas
    got = candidate.query(sketch)
    errors = [abs(g - t) / abs(t) for g, t in zip(got, truth, strict=True)]
    size = len(candidate.serialise(sketch))

    heap_kb = None
    if not candidate.native:
        tracemalloc.start()
        kept = _build(candidate, values)
        heap_kb = tracemalloc.get_traced_memory()[0] / 1024
        tracemalloc.stop()
        del kept

    # One sub-bucket's worth (n/60 values) merged in and, where possible, taken out again.
    subs = [_build(candidate, values[i::60][: max(1, n // 60)]) for i in range(5)]

    def merge_all() -> None:
        for sub in subs:
            candidate.merge(sketch, sub)

    merge_s = _cpu(merge_all)
    subtract_s = None
    subtract = candidate.subtract
    if subtract is not None:

        def subtract_all() -> None:
            for sub in subs:
                subtract(sketch, sub)

        subtract_s = _cpu(subtract_all)

    def per_event() -> None:
        add, query = candidate.add, candidate.query
        for v in extra[:events]:
            add(sketch, v)
            query(sketch)

    event_s = _cpu(per_event)
    return {
        "sketch": candidate.name,
        "data": dist,
        "n": n,
        "max_err_pct": 100 * max(errors),
        "bound": "1 %" if candidate.bound else "none",
        "add_us": 1e6 * insert_s / n,
        "event_us": 1e6 * event_s / events,
        "merge_us": 1e6 * merge_s / len(subs),
        "subtract_us": None if subtract_s is None else 1e6 * subtract_s / len(subs),
        "bytes": f"{size}{'p' if candidate.pickled else ''}",
        "heap_kb": heap_kb,
    }


def main() -> None:
    args = parser(__doc__ or "")
    args.add_argument("--sizes", default="10000,100000,1000000")
    args.add_argument("--events", type=int, default=2000, help="add+query steps timed")
    args.add_argument("--seed", type=int, default=7)
    options = args.parse_args()
    sizes = [int(s) for s in options.sizes.split(",")]
    report = Report(
        [("sketch", 10, "sketch"), ("data", 9, "data"), ("n", 8, "n"),
         ("max err %", 9, "max_err_pct"), ("bound", 5, "bound"), ("add µs", 7, "add_us"),
         ("event µs", 8, "event_us"), ("merge µs", 8, "merge_us"),
         ("sub µs", 7, "subtract_us"), ("bytes", 8, "bytes"), ("heap KB", 8, "heap_kb")],
        json=options.json,
        ident=3,
    )  # fmt: skip
    found, missing = candidates()
    report.say(f"# {machine('ddsketch', 'datasketches', 'fastdigest', 'numpy')}")
    report.header()
    for name, reason in missing:
        report.row({"sketch": name, "data": "-", "n": "-", "status": "skipped", "reason": reason})
    for n in sizes:
        for dist, values in datasets(n, options.seed).items():
            extra = datasets(options.events, options.seed + 1)[dist]
            for candidate in found:
                report.row(measure(candidate, dist, values, extra, options.events))


if __name__ == "__main__":
    main()
