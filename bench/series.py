"""Series: what keeping tiers costs the aggregator, what they hold, and how fast they answer.

    python -m bench.series                   # every segment
    python -m bench.series --rounds 7        # more alternating rounds for the aggregator rows
    python -m bench.series --only aggregator # one segment: aggregator, memory, api, redis, ...
    python -m bench.series --only late --before /tmp/main/src --rounds 3   # two trees in turns
    python -m bench.series --only late-instructions --before /tmp/main/src  # under callgrind
    python -m bench.series --only late-parts --rounds 5   # where a late event's cost goes

Segments:

* `aggregator`: events/s of process CPU through `Aggregator.apply_events` (every statistic
  over 10s, 1m and 5m, batches of 100, one topic, timestamps 3 ms apart, the first half fed
  untimed), without series and with the default tiers (`1s:15m,1m:24h`), in alternating
  rounds; the median of each and their ratio (the goal: at most 10 % slower).
* `memory`: bytes per topic when every tier is full, for the default tiers and for
  `1s:1h,1m:7d,1h:90d`: the memory broker's store (`SeriesStore`), and Redis's `MEMORY USAGE`
  of the tier streams (a real redis-server, points written by the publish script); and the
  default tiers' points of a rule with a distinct tag and a top tag (k = 10, values of 8 to
  11 characters, every list full).
* `redis`: Redis commands per closed point (`INFO commandstats`, publishing 1,000 points with
  the updates that close them) and the script's calls.
* `grace`: what one topic's open buckets hold with a grace of 5 s and of 1 h, at 10 events/s
  (default tiers, every statistic, two hours of events so the state is steady): Python's
  allocations held by the aggregator (`tracemalloc`, after a collection) and the bytes its
  checkpoint writes (`durable_state`). A bucket keeps its values for the grace, so a 1 h grace
  keeps an hour of the finest tier's buckets' values, whether they are published at the grace
  (a rule's grace equal to the server's) or at a 5 s lateness and corrected (a rule's grace
  beyond it: also the summaries of the published buckets).
* `late`: events/s of process CPU through `apply_events` (every statistic over 10s, 1m and
  5m, the default tiers, a rule's grace of 1 h; 200,000 events 3 ms apart, the second half
  timed) with 0, 1, 10 and 50 % of the events late by 5 to 60 s, published at 5 s (each late
  one into a published bucket, corrected) and, at 0 and 10 %, at the grace (nothing to
  correct); each share's rate over the in-order one's. Each round runs in a process of its
  own; with `--before SRC` another tree's `src/` takes turns with this one (`--src`), round
  by round, and the medians of both are printed, with the median of each round's own ratio.
* `late-instructions`: the same aggregator's instructions per event under callgrind (40,000
  events, in order and 10 % late), which the load does not change: exact where the `late`
  rates swing with shared cores, but blind to memory's costs.
* `late-parts`: where a late event's cost goes: `time.perf_counter_ns` around the parts of
  `apply_events` (the windows, the series bucket, publishing and correcting buckets, the
  update drafts), the `late` segment's stream and aggregator in order and 10 % late published
  at 5 s, µs an event (the median of `--rounds` rounds, each in a process of its own that
  runs both, in turns as to which goes first) and what the late events add, per late event
  (the difference over a tenth: ten times its noise). Each timer costs its call a little,
  so the sums are above an untimed run's.
* `api`: `GET /topics/{t}/series` answer time (median of 30, a real server): 24 h at `1m`, and
  `resolution=auto&points=300` over 7 days with tiers `1s:1h,1m:7d,1h:90d`, on the embedded
  broker and on Redis.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import gc
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from harness.fenced_publish import covering_ticks, publish
from harness.live import PushsvcProcess, post
from harness.redis_server import RedisServer

from pushsvc.aggregate.aggregator import Aggregator
from pushsvc.broker.redis import RedisBroker
from pushsvc.core.event import Event
from pushsvc.core.updates import SeriesWrite, draft, point_draft
from pushsvc.rules.analytics import Rules, default_rule
from pushsvc.rules.point import Point, TopList
from pushsvc.rules.tiers import SeriesTier, parse_tiers
from pushsvc.series.buckets import SeriesBuckets
from pushsvc.series.store import SeriesStore

S = 1_000_000
WINDOWS = (10 * S, 60 * S, 300 * S)
ALL = ("count", "sum", "mean", "min", "max", "var", "stddev", "p50", "p90", "p99")
T0 = 1_700_000_000 * S
BATCH = 100
LONG = "1s:1h,1m:7d,1h:90d"


def _aggregator(tiers: str) -> Aggregator:
    rules = Rules((), default_rule(WINDOWS, ALL, parse_tiers(tiers)))
    return Aggregator(rules=rules, wall_clock=lambda: 0, lateness_us=5 * S)


def _events(n: int) -> list[Event]:
    return [Event(((i * 7919) % 1000) / 10.0, T0 + i * 3000, None) for i in range(n)]


def _rate(tiers: str, events: list[Event]) -> float:
    aggregator = _aggregator(tiers)
    half = len(events) // 2
    for start in range(0, half, BATCH):
        aggregator.apply_events("t", events[start : start + BATCH])
    began = time.process_time()
    for start in range(half, len(events), BATCH):
        aggregator.apply_events("t", events[start : start + BATCH])
    return (len(events) - half) / (time.process_time() - began)


def aggregator_rows(rounds: int) -> None:
    events = _events(40_000)
    plain: list[float] = []
    tiered: list[float] = []
    for index in range(rounds):
        order = [("none", plain), ("1s:15m,1m:24h", tiered)]
        for tiers, rates in order if index % 2 == 0 else order[::-1]:
            rates.append(_rate(tiers, events))
    a, b = statistics.median(plain), statistics.median(tiered)
    print(f"aggregator  without series  {a:9.0f} events/s  (rounds: {_list(plain)})")
    print(f"aggregator  default tiers   {b:9.0f} events/s  (rounds: {_list(tiered)})")
    print(f"aggregator  with/without    {b / a:9.3f}")


def _graced(grace_us: int, lateness_us: int, tiers: str = "1s:15m,1m:24h") -> Aggregator:
    """An aggregator whose every topic has a rule's grace `grace_us` over the server's
    lateness `lateness_us` (buckets published at the lateness, kept to the grace)."""
    rule = dataclasses.replace(default_rule(WINDOWS, ALL, parse_tiers(tiers)), grace_us=grace_us)
    return Aggregator(rules=Rules((), rule), wall_clock=lambda: 0, lateness_us=lateness_us)


def _held_with_grace(
    grace_us: int, rate: int = 10, hours: int = 2, lateness_us: int | None = None, late: float = 0
) -> tuple[int, int]:
    """Bytes an aggregator holds for one topic after `hours` of `rate` events/s with
    `grace_us` (published at `lateness_us`, else at the grace; a share `late` of the events
    late by 5 to 60 s), beyond an empty one's, and its series' checkpoint bytes."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    aggregator = _graced(grace_us, grace_us if lateness_us is None else lateness_us)
    # Made while traced: the values the aggregator keeps are counted (the rest is freed).
    events = _late_stream(hours * 3600 * rate, late, S // rate)
    for start in range(0, len(events), BATCH):
        aggregator.apply_events("t", events[start : start + BATCH])
    del events
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    kept = aggregator.checkpoint("t", (0, 0))
    assert kept is not None
    return held, len(kept.state) + len(kept.series)


def _logged_hour(server: RedisServer, rate: int = 10) -> int:
    """Redis's `MEMORY USAGE` of an event log holding an hour of one topic's events at `rate`
    events/s, each POSTed alone (an entry each: the most a topic's hour costs the log, which
    keeps a topic's events until their buckets close)."""
    client = redis.Redis.from_url(server.url)
    client.flushall()
    broker = RedisBroker(server.url, prefix="grace:", history=10_000)
    try:
        for i in range(3600 * rate):
            event = Event(((i * 7919) % 1000) / 10.0, T0 + i * (S // rate), None)
            broker.append_events("t", [event], lateness_us=3600 * S)
        return int(client.memory_usage(broker.keys.of("t").log, samples=0) or 0)
    finally:
        broker.close()


def _late_stream(n: int, share: float, step_us: int = 3000) -> list[Event]:
    """`n` events `step_us` apart, `share` of them late by 5 to 60 s (within a 1 h grace,
    past a 5 s lateness: into buckets published already)."""
    out, clock = [], T0
    for i in range(n):
        if (i * 7919) % 1000 < share * 1000:
            ts = clock - 5 * S - ((i * 104_729) % 55_000) * 1000
        else:
            clock += step_us
            ts = clock
        out.append(Event(((i * 7919) % 1000) / 10.0, ts, None))
    return out


def _late_rate(lateness_us: int, events: list[Event]) -> tuple[float, int, int]:
    """Events/s of process CPU through `apply_events` with a 1 h grace published at
    `lateness_us` (the second half timed), and the points and corrections it drafted."""
    aggregator = _graced(3600 * S, lateness_us)
    half = len(events) // 2
    for start in range(0, half, BATCH):
        aggregator.apply_events("t", events[start : start + BATCH])
    points = corrections = 0
    began = time.process_time()
    for start in range(half, len(events), BATCH):
        for made in aggregator.apply_events("t", events[start : start + BATCH]):
            if made.series is not None:
                points += 1
                corrections += made.series.revision > 0
    return (len(events) - half) / (time.process_time() - began), points, corrections


LATE_RUNS = ((0.0, "at 5s"), (0.01, "at 5s"), (0.1, "at 5s"), (0.5, "at 5s"),
             (0.0, "at the grace"), (0.1, "at the grace"))  # fmt: skip
"""(share late, published) of the `late` segment's rows."""
ROOT = Path(__file__).resolve().parents[1]


def late_round() -> None:
    """One round of the `late` segment, in this process: a JSON line of each row's events/s,
    points and corrections."""
    rows = []
    for share, label in LATE_RUNS:
        lateness_us = 5 * S if label == "at 5s" else 3600 * S
        rows.append(_late_rate(lateness_us, _late_stream(200_000, share)))
    print(json.dumps(rows))


def late_rows(rounds: int, src: Path, before: Path | None) -> None:
    trees = {"after": src} if before is None else {"before": before, "after": src}
    rates: dict[str, list[list[float]]] = {name: [] for name in trees}
    made: dict[str, list[Any]] = {}
    for index in range(rounds):
        order = list(trees.items())
        for name, tree in order if index % 2 == 0 else order[::-1]:
            env = dict(os.environ, PYTHONPATH=f"{tree}{os.pathsep}{ROOT}")
            argv = [sys.executable, "-m", "bench.series", "--late-round"]
            out = subprocess.run(argv, env=env, cwd=ROOT, check=True, capture_output=True)
            rows = json.loads(out.stdout.decode().splitlines()[-1])
            rates[name].append([rate for rate, _, _ in rows])
            made[name] = [(points, corrections) for _, points, corrections in rows]
            print(f"late  round {index + 1} {name:<6} {_list(rates[name][-1])}", flush=True)
    for name in trees:
        medians = [statistics.median(column) for column in zip(*rates[name], strict=True)]
        for row, ((share, label), rate, (points, corrections)) in enumerate(
            zip(LATE_RUNS, medians, made[name], strict=True)
        ):
            base = LATE_RUNS.index((0.0, label))
            # Each round's own ratio too: on shared cores the load drifts between rounds more
            # than between the rows of one round.
            ratios = [r[row] / r[base] for r in rates[name]]
            print(
                f"late  {name:<6} 1h grace, {share:4.0%} late by 5-60 s, published {label:<12}"
                f" {rate:8.0f} events/s  {rate / medians[base]:5.2f} of in order"
                f" (rounds' own: median {statistics.median(ratios):.2f}, {_list(ratios, 2)})"
                f"  ({points} points, {corrections} corrections)"
            )


LATE_PARTS = (
    ("windows (`insert_many`: the fast paths, the general one, the summaries)", "windows"),
    ("the value into its series bucket (`SeriesBuckets.insert`, `_amend`)", "bucket"),
    ("publishing and correcting buckets (`SeriesStage.closed_points`)", "closed"),
    ("the update drafts (`draft`)", "draft"),
)
"""(what the row says, its timer) of the `late-parts` segment."""


def late_parts_round(shares: list[float]) -> list[dict[str, float]]:
    """For each share in turn, in this process: µs of `time.perf_counter_ns` an event in each
    of `LATE_PARTS`, and in all (`apply_events`), over the timed half of the `late` segment's
    stream with that share late. Timers put around the parts' methods for this process only."""
    from pushsvc.aggregate import aggregator as aggregator_module
    from pushsvc.aggregate.stages.series import SeriesStage

    spent = dict.fromkeys(["all", *(timer for _, timer in LATE_PARTS)], 0)
    clock = time.perf_counter_ns

    def timed(function: Callable[..., Any], timer: str) -> Callable[..., Any]:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            began = clock()
            try:
                return function(*args, **kwargs)
            finally:
                spent[timer] += clock() - began

        return wrapper

    SeriesBuckets.insert = timed(SeriesBuckets.insert, "bucket")  # type: ignore[method-assign]
    SeriesStage.closed_points = timed(SeriesStage.closed_points, "closed")  # type: ignore[method-assign]
    aggregator_module.draft = timed(aggregator_module.draft, "draft")  # type: ignore[attr-defined]
    rows = []
    for share in shares:
        events = _late_stream(200_000, share)
        aggregator = _graced(3600 * S, 5 * S)
        half = len(events) // 2
        for start in range(0, half, BATCH):
            aggregator.apply_events("t", events[start : start + BATCH])
        windows = type(aggregator._topics["t"].windows)  # the generated class
        if not hasattr(windows.insert_many, "__wrapped__"):
            windows.insert_many = timed(windows.insert_many, "windows")  # type: ignore[method-assign]
        for timer in spent:
            spent[timer] = 0
        for start in range(half, len(events), BATCH):
            began = clock()
            aggregator.apply_events("t", events[start : start + BATCH])
            spent["all"] += clock() - began
        rows.append({timer: ns / 1000 / (len(events) - half) for timer, ns in spent.items()})
    return rows


def late_parts_rows(rounds: int) -> None:
    """`late_parts_round` in order and 10 % late, both in each round's process (which goes
    first alternates: a process's second aggregator runs on a heap the first has grown);
    the medians, and what the late events add, per late event."""
    spent: dict[float, list[dict[str, float]]] = {0.0: [], 0.1: []}
    for index in range(rounds):
        order = [0.0, 0.1] if index % 2 == 0 else [0.1, 0.0]
        env = dict(os.environ, PYTHONPATH=f"{ROOT / 'src'}{os.pathsep}{ROOT}")
        argv = [sys.executable, "-m", "bench.series", "--late-parts", ",".join(map(str, order))]
        out = subprocess.run(argv, env=env, cwd=ROOT, check=True, capture_output=True)
        for share, row in zip(order, json.loads(out.stdout.decode().splitlines()[-1]), strict=True):
            spent[share].append(row)
    rows = [(text, timer) for text, timer in LATE_PARTS] + [("in all (`apply_events`)", "all")]
    head = f"µs an event, median of {rounds} rounds: in order | 10 % late | per late event"
    print(f"late-parts  {head}")
    for text, timer in rows:
        in_order = statistics.median(r[timer] for r in spent[0.0])
        late = statistics.median(r[timer] for r in spent[0.1])
        extra = (late - in_order) / 0.1
        print(f"late-parts  {text:<76} {in_order:6.2f} | {late:6.2f} | {extra:6.1f}")
    ratios = [a["all"] / b["all"] for a, b in zip(spent[0.0], spent[0.1], strict=True)]
    print(f"late-parts  10 % late over in order, by round: {_list(ratios, 2)}")


def late_probe(share: float, events: int, timed: bool) -> None:
    """Feed `events` events with `share` late (`late_rows`'s stream and aggregator), the
    second half only if `timed`: what `late_instructions` counts the difference of."""
    stream = _late_stream(events, share)
    aggregator = _graced(3600 * S, 5 * S)
    half = len(stream) // 2
    for start in range(0, len(stream) if timed else half, BATCH):
        aggregator.apply_events("t", stream[start : start + BATCH])


def late_instructions(src: Path, before: Path | None, events: int = 40_000) -> None:
    """Instructions per event (`valgrind --tool=callgrind`, which counts them whatever else
    the machine does) of the second half of 40,000 events, in order and 10 % late, each run
    once with and once without that half; a count is exact, but leaves out what memory
    costs (the windows' inserts far from a list's end, cache misses)."""
    trees = {"after": src} if before is None else {"before": before, "after": src}
    for name, tree in trees.items():
        per_event = {}
        for share in (0.0, 0.1):
            counts = []
            for timed in (True, False):
                argv = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
                        sys.executable, "-m", "bench.series", "--late-probe",
                        f"{share},{events},{int(timed)}"]  # fmt: skip
                env = dict(os.environ, PYTHONPATH=f"{tree}{os.pathsep}{ROOT}")
                out = subprocess.run(argv, env=env, cwd=ROOT, check=True, capture_output=True)
                found = re.search(rb"Collected : (\d+)", out.stderr)
                assert found is not None, out.stderr.decode()[-2000:]
                counts.append(int(found.group(1)))
            per_event[share] = (counts[0] - counts[1]) / (events - events // 2)
            print(f"late  {name:<6} {share:4.0%} late: {per_event[share]:9,.0f} instructions/event",
                  flush=True)  # fmt: skip
        print(f"late  {name:<6} 10 % late over in order: {per_event[0.0] / per_event[0.1]:.3f}")


def grace_rows(server: RedisServer) -> None:
    for label, grace_us, lateness_us, late in (
        ("5s", 5 * S, None, 0.0),
        ("1h", 3600 * S, None, 0.0),
        ("1h, published at 5s", 3600 * S, 5 * S, 0.0),
        ("the same, 10 % late", 3600 * S, 5 * S, 0.1),
    ):
        held, checkpoint = _held_with_grace(grace_us, lateness_us=lateness_us, late=late)
        print(
            f"grace  {label:>20}  10 events/s  aggregator holds {held / 2**20:6.2f} MiB"
            f"  checkpoint {checkpoint / 1024:8.1f} KiB"
        )
    logged = _logged_hour(server)
    print(
        f"grace  an hour of 10 events/s in Redis's event log: {logged / 2**20:6.2f} MiB"
        f" ({logged / 36_000:.0f} B/event)"
    )


def _list(rates: list[float], digits: int = 0) -> str:
    return ", ".join(f"{r:.{digits}f}" for r in rates)


def _full_points(tier: SeriesTier, tagged: bool = False) -> list[tuple[int, bytes]]:
    """A full tier's points; `tagged`: with `distinct_user` and a full `top_product` (k = 10)."""
    count = tier.retention_us // tier.resolution_us
    plain = Point(0, 60, 123.4, 2.05, 0.1, 9.9, 1.5, 2.0, 8.0, 9.8)
    out = []
    for i in range(count):
        packed = plain.packed()
        if tagged:
            entries = tuple((f"product-{(i + j) % 997}", 40 - 3 * j) for j in range(10))
            top = (TopList("product", entries),)
            packed = dataclasses.replace(plain, distinct=(("user", 42),), top=top).packed()
        out.append((T0 + i * tier.resolution_us, packed))
    return out


def memory_rows(server: RedisServer) -> None:
    client = redis.Redis.from_url(server.url)
    for tiers_text, tagged in (("1s:15m,1m:24h", False), (LONG, False), ("1s:15m,1m:24h", True)):
        tiers = parse_tiers(tiers_text)
        store = SeriesStore()
        points = 0
        for tier in tiers:
            for t_us, packed in _full_points(tier, tagged):
                store.append(("t", "", tier.resolution_label), t_us, packed)
                points += 1
        # A bytearray's header per series besides the records (a variable-size series has
        # two arrays besides).
        held = store.bytes_used() + len(tiers) * bytearray().__sizeof__()
        redis_bytes = _redis_bytes(server, client, tiers, tagged)
        buckets = SeriesBuckets(tiers, 5 * S)
        label = tiers_text + (" top" if tagged else "")
        print(
            f"memory  {label:<20} {points:7d} points  memory broker {held / 1024:8.1f} KiB"
            f" ({held / points:.0f} B/point)  Redis {redis_bytes / 1024:8.1f} KiB"
            f"  ({redis_bytes / points:.0f} B/point)"
            f"  open-bucket state {len(buckets.durable_state())} B empty"
        )


def _redis_bytes(
    server: RedisServer, client: redis.Redis, tiers: tuple[SeriesTier, ...], tagged: bool
) -> int:
    broker = RedisBroker(server.url, prefix="mem:", history=10)
    client.flushall()
    try:
        for tier in tiers:
            drafts = []
            for t_us, packed in _full_points(tier, tagged):
                write = SeriesWrite(tier.resolution_label, "", t_us, packed, T0)
                drafts.append(point_draft("t", t_us + tier.resolution_us, write, {"t": 0}))
                if len(drafts) == 1000:
                    publish(broker, drafts)
                    drafts = []
            publish(broker, drafts)
        total = 0
        for tier in tiers:
            key = broker.keys.of("t").series(tier.resolution_label, "t")
            total += int(client.memory_usage(key, samples=0) or 0)
        return total
    finally:
        broker.close()


def redis_rows(server: RedisServer) -> None:
    client = redis.Redis.from_url(server.url)
    client.flushall()
    broker = RedisBroker(server.url, prefix="ops:", history=10_000)
    try:
        points = 1000
        # Published as an aggregator does, each batch covering a log entry under the lease:
        # the entries are logged before the commands are counted.
        shard = (broker.partition_of("t"), broker.partitions)
        lease: Any = broker.lease(shard, ttl_us=3_600_000_000)
        assert lease.renew()
        covering = covering_ticks(broker, shard, lease.token, points // 100)
        client.config_resetstat()
        for start in range(0, points, 100):
            drafts = []
            for i in range(start, start + 100):
                t_us = T0 + i * S
                drafts.append(draft("t", t_us + 6 * S, "event", {"value": 1.0}, {}))
                write = SeriesWrite("1s", "", t_us, _full_points(parse_tiers("1s:15m")[0])[0][1], 0)
                drafts.append(point_draft("t", t_us + 6 * S, write, {"t": t_us / S}))
            broker.publish_updates(drafts, applied=covering[start // 100], fence=lease.token)
        stats = client.info("commandstats")
        series = {
            name: stats[f"cmdstat_{name}"]["calls"]
            for name in ("xadd", "xtrim", "pexpire", "hset", "hget", "publish")
            if f"cmdstat_{name}" in stats
        }
        print(f"redis  commands for {points} updates + {points} points (one point each): {series}")
        print(
            "redis  per point beyond its update: XADD to its tier, XTRIM to the retention, "
            "PEXPIRE, and its own history XADD (the update's cost is unchanged)"
        )
    finally:
        broker.close()


def _answer_ms(port: int, path: str, rounds: int = 30) -> tuple[float, int]:
    times = []
    points = 0
    for _ in range(rounds):
        conn = http.client.HTTPConnection("127.0.0.1", port)
        began = time.perf_counter()
        conn.request("GET", path)
        body = conn.getresponse().read()
        times.append((time.perf_counter() - began) * 1000)
        conn.close()
        points = len(json.loads(body)["points"])
    return statistics.median(times), points


def api_rows(server: RedisServer) -> None:
    minute = 60
    day = 24 * 3600
    now = time.time()
    start = now - 7 * day
    # One event a minute for 7 days (and one a second over the last 10 minutes).
    minutes = (7 * day - 660) // minute
    events = [{"value": float(i % 97), "ts": start + i * minute} for i in range(minutes)]
    events += [{"value": float(i % 13), "ts": now - 600 + i} for i in range(600)]
    for label, extra in (("embedded", []), ("redis", ["--redis-url", server.url])):
        proc = PushsvcProcess("serve", "--tick", "0", "--series", LONG, *extra).start()
        try:
            for at in range(0, len(events), 5000):
                status, answer = post(proc.port, "t", events[at : at + 5000])
                assert status == 202, answer
            _wait_points(proc.port, "/topics/t/series?resolution=1m")
            clock = events[-1]["ts"]
            day_path = f"/topics/t/series?resolution=1m&since={clock - day}&until={clock}"
            week_path = f"/topics/t/series?resolution=auto&points=300&since={clock - 7 * day}"
            for name, path in (("24h at 1m", day_path), ("auto, 300, 7 days", week_path)):
                ms, points = _answer_ms(proc.port, path)
                print(f"api  {label:<8} {name:<18} {ms:7.2f} ms  ({points} points)")
        finally:
            proc.stop()


def _wait_points(port: int, path: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    last = -1
    while time.monotonic() < deadline:
        _, points = _answer_ms(port, path, rounds=1)
        if points == last and points > 0:
            return
        last = points
        time.sleep(0.5)


SEGMENTS: dict[str, Callable[[argparse.Namespace, RedisServer], None]] = {
    "aggregator": lambda args, _: aggregator_rows(args.rounds),
    "memory": lambda _, server: memory_rows(server),
    "redis": lambda _, server: redis_rows(server),
    "api": lambda _, server: api_rows(server),
    "grace": lambda _, server: grace_rows(server),
    "late": lambda args, _: late_rows(args.rounds, args.src, args.before),
    "late-instructions": lambda args, _: late_instructions(args.src, args.before),
    "late-parts": lambda args, _: late_parts_rows(args.rounds),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", choices=sorted(SEGMENTS))
    parser.add_argument("--src", type=Path, default=ROOT / "src", help="the tree `late` runs")
    parser.add_argument("--before", type=Path, help="another src/, in turns with --src (`late`)")
    parser.add_argument("--late-round", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--late-probe", help=argparse.SUPPRESS)
    parser.add_argument("--late-parts", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.late_parts is not None:
        print(json.dumps(late_parts_round([float(s) for s in args.late_parts.split(",")])))
        return
    if args.late_round:
        late_round()
        return
    if args.late_probe:
        share, events, timed = args.late_probe.split(",")
        late_probe(float(share), int(events), timed == "1")
        return
    with RedisServer() as server:
        for name, run in SEGMENTS.items():
            if args.only in (None, name):
                run(args, server)


if __name__ == "__main__":
    main()
