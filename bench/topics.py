"""Memory of junk topics, and what `--topic-ttl` gives back.

Per `--topic-ttl` value, one `pushsvc serve` (embedded broker): its update history filled
first, then WAVES waves of N new topics, one event each; with a TTL each wave is left to be
forgotten (`pushsvc_topics_live` back to 0) before the next. The process's RSS is read from /proc
after each step. First, the exact figure without HTTP: Python's allocations (`tracemalloc`) for
the same N topics through `ingest`, held and forgotten. Method and figures: docs/performance.md,
"Junk topics and `--topic-ttl`".

    python -m bench.topics                       # 20,000 topics, 3 waves, TTL 45 s and 0
    python -m bench.topics --topics 5000 --waves 1 --ttl 20s --json

The TTL must outlast the posting of a wave (~30 s for 20,000 POSTs here) for the whole wave to
be held at once.
"""

from __future__ import annotations

import gc
import sys
import time
import tracemalloc
import uuid
from concurrent.futures import ThreadPoolExecutor

import orjson

from bench.common import metric, parser
from pushsvc.aggregate.aggregator import Aggregator
from pushsvc.aggregate.partition_pool import PartitionPool
from pushsvc.broker.memory import MemoryBroker, Store

try:
    from pushsvc.ingest import InputLimits
except ImportError:  # trees before the rename
    from pushsvc.ingest import Limits as InputLimits  # type: ignore[attr-defined,no-redef]
from harness.live import PushsvcProcess, post, wait_until
from harness.procfs import rss_kb

from pushsvc.ingest.accept import ingest

_WINDOWS = "1s,2s,3s"  # three windows, like the default 10s,1m,5m, but empty 3 s after
_TICK = "200ms"
_HISTORY_FILL = 10_000


def _post_topics(port: int, names: list[str]) -> None:
    def one(name: str) -> None:
        status, body = post(port, name, {"value": 1.5, "tags": {"k": "v"}})
        if status != 202:
            raise RuntimeError(f"POST {name}: {status} {body}")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, names))


def in_process(topics: int) -> dict[str, object]:
    """Bytes Python holds for `topics` one-event topics, and after they are forgotten: the
    embedded server's core (its store, and the partition's aggregator) stepped by hand."""
    s = 1_000_000
    wall = [time.time_ns() // 1000]

    def seconds() -> float:
        return wall[0] / s

    # A history of one update: it is bounded (--history) and not a per-topic cost.
    broker = MemoryBroker(Store(1, clock=seconds, history=1, max_topics=topics))
    made: list[Aggregator] = []

    def new_aggregator() -> Aggregator:
        made.append(
            Aggregator(
                windows_us=[s, 2 * s, 3 * s], labels=["1s", "2s", "3s"], wall_clock=lambda: wall[0]
            )
        )
        return made[-1]

    pool = PartitionPool(
        broker, new_aggregator, lease_us=3600 * s, tick_us=s, topic_ttl_us=3600 * s,
        clock=seconds, spawn=lambda rebuild: rebuild(), max_block_s=0,
    )  # fmt: skip

    def settle() -> None:
        while any(lag.entries for lag in broker.lag()) or not pool.runners:
            pool.step()

    settle()
    limits = InputLimits(max_body_bytes=1 << 20, max_batch=10_000)
    body = b'{"value": 1.5, "tags": {"k": "v"}}'
    names = [f"junk-{uuid.uuid4().hex[:12]}" for _ in range(topics)]
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for name in names:
            ingest(broker, name, body, "application/json", limits=limits, lateness_us=5 * s,
                   now_us=wall[0])  # fmt: skip
        settle()
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - base
        wall[0] += 10 * s
        settle()  # a tick: the windows fall empty
        pool.step()
        wall[0] += 3600 * s + 60 * s
        pool.step()  # the sweep forgets the idle topics
        settle()
        wall[0] += 10 * s
        pool.step()  # a checkpoint: the log trimmed of what no window needs any more
        forgotten = broker.topic_stats().forgotten
        gc.collect()
        after = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
        pool.close()
    return {
        "topics": topics,
        "held_mb": round(held / 2**20, 1),
        "held_bytes_per_topic": round(held / topics),
        "forgotten": forgotten,
        "after_forget_mb": round(after / 2**20, 2),
        "after_forget_bytes_per_topic": round(after / topics),
    }


def run(ttl: str, topics: int, waves: int) -> dict[str, object]:
    server = PushsvcProcess(
        "serve",
        "--topic-ttl", ttl, "--tick", _TICK, "--windows", _WINDOWS,
        "--max-topics", str(waves * topics + 1),
    ).start()  # fmt: skip
    port = server.port

    def step(name: str, **counts: float) -> dict[str, object]:
        return {"step": name, "rss_mb": round(rss_kb([server.pid]) / 1024, 1), **counts}

    def forgotten() -> bool:  # the count is a metric: poll it
        return metric(port, "pushsvc_topics_live") == 0

    try:
        for start in range(0, _HISTORY_FILL, 1000):
            batch = [{"value": float(i)} for i in range(start, start + 1000)]
            assert post(port, "warm-up", batch)[0] == 202
        if ttl != "0":
            wait_until(forgotten, 60, interval=0.2)
        steps = [step("baseline")]
        for wave in range(1, waves + 1):
            names = [f"junk-{wave}-{uuid.uuid4().hex[:12]}" for _ in range(topics)]
            started = time.monotonic()
            _post_topics(port, names)
            live = int(metric(port, "pushsvc_topics_live") or 0)
            took = round(time.monotonic() - started, 1)
            steps.append(step(f"wave {wave}: {topics} topics posted", topics_live=live,
                              post_s=took))  # fmt: skip
            if ttl != "0":
                started = time.monotonic()
                wait_until(forgotten, 120, interval=0.2)
                total = int(metric(port, "pushsvc_topics_forgotten_total") or 0)
                took = round(time.monotonic() - started, 1)
                steps.append(step(f"wave {wave}: forgotten", topics_live=0, forgotten_total=total,
                                  after_s=took))  # fmt: skip
        return {"topic_ttl": ttl, "topics_per_wave": topics, "steps": steps}
    finally:
        server.stop()


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--topics", type=int, default=20_000, help="new topics per wave")
    cli.add_argument("--waves", type=int, default=3)
    cli.add_argument("--ttl", default="45s,0", help="--topic-ttl values to run, 0 = never")
    args = cli.parse_args()
    text = sys.stderr if args.json else sys.stdout

    def emit(record: dict[str, object]) -> None:
        if args.json:
            print(orjson.dumps(record).decode(), flush=True)

    traced = in_process(args.topics)
    print(f"in process (tracemalloc): {traced}", file=text)
    emit({"in_process": traced})
    for ttl in args.ttl.split(","):
        result = run(ttl, args.topics, args.waves)
        print(f"--topic-ttl {ttl}, {args.topics} new topics per wave", file=text)
        for step in result["steps"]:  # type: ignore[attr-defined]
            extra = {k: v for k, v in step.items() if k not in ("step", "rss_mb")}
            print(f"  {step['step']:<36} RSS {step['rss_mb']:>7} MB  {extra or ''}", file=text)
        emit(result)


if __name__ == "__main__":
    main()
