"""Redis Cluster: does Redis's work per update stay flat as primaries are added?

The workload of `bench/redis_capacity.py`, partitioned: P partitions (`--partitions`, 16), the
same number of topics in each (`--topics-per-partition`), producers appending batches of B
events with `RedisBroker.append_events` (each producer cycles over every topic, so every
partition gets the same share), and one aggregator loop per partition (a thread of this
process, like `pushsvc.aggregate.shard_runner.ShardRunner`: blocking reads of its partition's
log, then `publish_updates(..., applied=Applied(shard, ...), fence=lease.token)`, which
SPUBLISHes on a cluster). No subscribers. It runs on Redis Clusters of 1, 2, 3... primaries on
this machine (`harness.redis_cluster`, no replicas), and with `plain` on one redis-server
without cluster mode (the same partitioned keys, PUBLISH), in rounds that take the targets in
turn. The aggregators publish what they find at each read, so how many drafts a publish
carries (and Redis's work per update) depends on how far behind the producers they run, which
on a busy machine changes from run to run; `--phased` takes that out: every append first, then
the aggregators read what was logged (the most drafts a publish, as when an aggregator
catches up), and Redis CPU per update is given for each phase.

Before measuring, every topic gets one event (new topics are admitted under a lock that counts
every partition's topics: once per topic, not the steady state) and the aggregators apply it;
then `--idle` seconds with nothing to do give each primary's idle CPU (cluster bus, cron, the
aggregators' blocked reads timing out), then the producers start.

From each primary's INFO, between the start and the end of the load: CPU (used_cpu_user +
used_cpu_sys), `commandstats` (calls and µs per command; a script's own commands count inside
it too; the µs are wall time in the command, more than CPU time on a loaded machine), and
DBSIZE at the end. Per run: Redis CPU per update in total and on each primary
(of the updates of the partitions it owns), updates per Redis core-second summed over the
primaries (updates / total Redis CPU seconds), and the spread of keys and of CPU over the
primaries (each primary's share against the mean, as ±%; the table shows the largest). Per
target over the rounds: medians, spread, and the goal: CPU per update on N primaries within
15 % of one primary's, each primary within ±20 % of the mean. The wall rate is printed, never
judged: on a machine with fewer cores than processes it shows the machine, not Redis.

    python -m bench.cluster --primaries 1,2,3 --updates 20000 --batch 10 --rounds 3
    python -m bench.cluster --primaries plain,1,2,3 --json      # and one plain Redis
    python -m bench.cluster --primaries 1,2,3 --phased --updates 100000
    python -m bench.cluster --smoke --json                       # tiny; exit 1 unless exact
"""

from __future__ import annotations

import logging
import multiprocessing
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import redis
from harness.redis_cluster import RedisClusterServers
from harness.redis_server import RedisServer, find_redis_server
from redis.crc import key_slot

from bench.common import Report, machine, parser
from pushsvc.aggregate.aggregator import Aggregator
from pushsvc.broker.base import Applied
from pushsvc.broker.redis import RedisBroker
from pushsvc.broker.redis.keys import Keys
from pushsvc.broker.shared_log import FIRST
from pushsvc.core.lists import comma_list
from pushsvc.core.partitions import partition_of
from pushsvc.ingest import Event

PREFIX = "bench:"
WINDOWS_US = (10_000_000, 60_000_000, 300_000_000)
LABELS = ("10s", "1m", "5m")
LATENESS_US = 3_600_000_000
BLOCK_MS = 1000
LINEAR = 0.15  # the goal: CPU per update on N primaries within 15 % of one primary's
EVEN = 20.0  # the goal: each primary within ±20 % of the mean


@dataclass
class Target:
    """What a run measures on: a URL for pushsvc, the primaries' ports in slot order, the
    primary of each partition, and how to stop it."""

    label: str
    url: str
    ports: list[int]
    owner: list[int]  # partition -> port
    stop: Callable[[], None]


def start_target(label: str, partitions: int) -> Target:
    keys = Keys(PREFIX, partitions)
    if label == "plain":
        server = RedisServer().start()
        return Target(label, server.url, [server.port], [server.port] * partitions, server.stop)
    cluster = RedisClusterServers(primaries=int(label), replicas_per_primary=0).start()
    owners = cluster.slot_owners()

    def port_of(key: str) -> int:
        slot = key_slot(key.encode())
        return next(port for first, last, port in owners if first <= slot <= last)

    ports = [node.port for node in cluster.primaries()]
    owner = [port_of(keys.partition(i).log) for i in range(partitions)]
    return Target(label, cluster.url, ports, owner, cluster.stop)


def even_topics(partitions: int, per_partition: int) -> list[str]:
    """`per_partition` topics in each partition, ordered so that topic j is in partition
    j % partitions: a producer cycling over them spreads its appends evenly."""
    found: list[list[str]] = [[] for _ in range(partitions)]
    n = 0
    while any(len(names) < per_partition for names in found):
        name = f"topic-{n}"
        names = found[partition_of(name, partitions)]
        if len(names) < per_partition:
            names.append(name)
        n += 1
    return [found[j % partitions][j // partitions] for j in range(partitions * per_partition)]


def producer_topics(topics: list[str], seed: int, entries: int) -> list[str]:
    return [topics[(seed + n) % len(topics)] for n in range(entries)]


def produce(url: str, partitions: int, topics: list[str], batch: int, seed: int, entries: int,
            ready: Any, go: Any) -> None:  # fmt: skip
    """One producer process: `entries` appends of `batch` events, as fast as accepted."""
    broker = RedisBroker(url, prefix=PREFIX, history=10_000, partitions=partitions)
    broker.ping()
    ready.set()
    go.wait()
    now_us = time.time_ns() // 1000
    for n, topic in enumerate(producer_topics(topics, seed, entries)):
        events = [Event(float(i), now_us + n * batch + i, {}) for i in range(batch)]
        broker.append_events(topic, events, lateness_us=LATENESS_US)
    broker.close()


class Partition(threading.Thread):
    """The aggregator loop of one partition: read, apply, publish fenced, until `expected`
    entries are applied."""

    def __init__(self, url: str, partitions: int, index: int, expected: int, warm: int,
                 batch: int, gate: threading.Event):  # fmt: skip
        super().__init__(daemon=True)
        self.shard = (index, partitions)
        self.expected, self.warm, self.gate = expected, warm, gate
        self.applied = self.published = self.publishes = 0
        self.warm_published = self.warm_publishes = 0  # at the end of the warm-up
        self.error: str | None = None
        self.broker = RedisBroker(url, prefix=PREFIX, history=10_000, partitions=partitions)
        self.log = self.broker.event_log(self.shard)
        self.lease = self.broker.lease(self.shard, ttl_us=600_000_000)
        if not self.lease.renew():
            raise RuntimeError(f"partition {index}: someone else holds the lease")
        self.aggregator = Aggregator(
            windows_us=WINDOWS_US, labels=LABELS, wall_clock=lambda: time.time_ns() // 1000
        )
        # Like ShardRunner: up to 512 entries a read, about 5000 drafts a publish at most.
        self.read_count = min(512, max(1, 5000 // batch))
        self.stopping = threading.Event()

    def run(self) -> None:
        after = FIRST
        try:
            while self.applied < self.expected and not self.stopping.is_set():
                if self.applied >= self.warm and not self.gate.is_set():
                    self.gate.wait(timeout=1)  # --phased: no read until the appends are done
                    continue
                entries = self.log.read(after, count=self.read_count, block_ms=BLOCK_MS)
                if not entries:
                    continue
                drafts = []
                for entry in entries:
                    assert entry.topic is not None and entry.events is not None
                    drafts += self.aggregator.apply_events(entry.topic, entry.events)
                covered = Applied(self.shard, entries[-1].id, len(entries), after=after)
                self.broker.publish_updates(drafts, applied=covered, fence=self.lease.token)
                after = entries[-1].id
                self.published += len(drafts)
                self.publishes += 1
                self.applied += len(entries)  # last: the main thread waits on it
        except Exception as error:  # a dead loop must show in its row
            self.error = f"{type(error).__name__}: {error}"

    def close(self) -> None:
        self.lease.close()
        self.log.close()
        self.broker.close()


@dataclass
class Sample:
    cpu: float
    commands: dict[str, tuple[int, int]]  # command -> (calls, usec)


def sample(port: int) -> Sample:
    with redis.Redis(port=port, socket_timeout=10) as client:
        cpu = client.info("cpu")
        stats = client.info("commandstats")
    commands = {}
    for name, stat in stats.items():
        commands[name.removeprefix("cmdstat_")] = (int(stat["calls"]), int(stat["usec"]))
    return Sample(float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]), commands)


def dbsize(port: int) -> int:
    with redis.Redis(port=port, socket_timeout=10) as client:
        return int(client.dbsize())


def updates_of(loops: list[Partition]) -> int:
    """Updates published since the warm-up."""
    return sum(loop.published - loop.warm_published for loop in loops)


def deviations(values: list[float]) -> list[float]:
    """Each value's share against the mean, as % above (+) or below (-) it."""
    mean = sum(values) / len(values)
    return [round((v / mean - 1) * 100, 1) if mean else 0.0 for v in values]


def wait_for(done: Callable[[], bool], what: str, timeout: float, loops: list[Partition],
             workers: list[Any]) -> None:  # fmt: skip
    deadline = time.monotonic() + timeout
    while not done():
        if failed := [loop.error for loop in loops if loop.error]:
            raise RuntimeError(f"an aggregator loop failed: {failed[0]}")
        if any(worker.exitcode not in (None, 0) for worker in workers):
            raise RuntimeError("a producer failed")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not done in {timeout:.0f} s")
        time.sleep(0.01)


def run(label: str, args: Any, round_: int) -> dict[str, Any]:
    partitions, batch = args.partitions, args.batch
    topics = even_topics(partitions, args.topics_per_partition)
    # Whole cycles over the topics: every partition gets the same number of appends.
    cycles = max(1, round(args.updates / batch / args.producers / len(topics)))
    per_producer = cycles * len(topics)
    seeds = [p * 7919 for p in range(args.producers)]
    expected = [len(topics) // partitions] * partitions  # the warm-up's one entry per topic
    for seed in seeds:
        for topic in producer_topics(topics, seed, per_producer):
            expected[partition_of(topic, partitions)] += 1
    target = start_target(label, partitions)
    loops: list[Partition] = []
    workers: list[Any] = []
    try:
        warm = RedisBroker(target.url, prefix=PREFIX, history=10_000, partitions=partitions)
        now_us = time.time_ns() // 1000
        for topic in topics:
            warm.append_events(topic, [Event(0.0, now_us, {})], lateness_us=LATENESS_US)
        warm.close()
        # Producers fork before any thread starts; they wait for `go`.
        context = multiprocessing.get_context("fork")
        go = context.Event()
        ready = [context.Event() for _ in seeds]
        workers = [
            context.Process(
                target=produce,
                args=(target.url, partitions, topics, batch, seed, per_producer, flag, go),
            )
            for seed, flag in zip(seeds, ready, strict=True)
        ]
        for worker in workers:
            worker.start()
        gate = threading.Event()
        if not args.phased:
            gate.set()
        warm_each = len(topics) // partitions
        loops = [Partition(target.url, partitions, i, expected[i], warm_each, batch, gate)
                 for i in range(partitions)]  # fmt: skip
        for loop in loops:
            loop.start()
        warm_entries = len(topics)
        wait_for(
            lambda: sum(lp.applied for lp in loops) >= warm_entries, "warm-up", 60, loops, workers
        )
        for flag in ready:
            if not flag.wait(60):
                raise RuntimeError("a producer did not connect in 60 s")
        warm_per_loop = [loop.published for loop in loops]
        for loop in loops:
            loop.warm_published, loop.warm_publishes = loop.published, loop.publishes
        idle_before = [sample(port).cpu for port in target.ports]
        time.sleep(args.idle)
        before = [sample(port) for port in target.ports]
        idle_per_s = [(b.cpu - i) / args.idle for b, i in zip(before, idle_before, strict=True)]
        wall_before = time.perf_counter()
        go.set()
        appended: list[Sample] | None = None
        if args.phased:
            for worker in workers:
                worker.join(timeout=600)
            if any(worker.exitcode != 0 for worker in workers):
                raise RuntimeError("a producer failed")
            appended = [sample(port) for port in target.ports]
            gate.set()
        wait_for(
            lambda: all(lp.applied >= lp.expected for lp in loops), "the load", 600, loops, workers
        )
        wall_s = time.perf_counter() - wall_before
        after = [sample(port) for port in target.ports]
        for worker in workers:
            worker.join(timeout=30)
        if any(worker.exitcode != 0 for worker in workers):
            raise RuntimeError("a producer failed")
        phases = {}
        if appended is not None:
            for name, start, end in (("append", before, appended), ("publish", appended, after)):
                spent = sum(e.cpu - b.cpu for b, e in zip(start, end, strict=True))
                phases[f"{name}_cpu_us_per_update"] = round(spent / updates_of(loops) * 1e6, 2)
        keys = [dbsize(port) for port in target.ports]
        updates = updates_of(loops)
        own = {port: 0 for port in target.ports}
        for i, loop in enumerate(loops):
            own[target.owner[i]] += loop.published - warm_per_loop[i]
        cpu = [a.cpu - b.cpu for a, b in zip(after, before, strict=True)]
        total_cpu = sum(cpu)
        primaries = []
        for port, spent, first, last, held, idle in zip(
            target.ports, cpu, before, after, keys, idle_per_s, strict=True
        ):
            commands = {
                name: (calls - first.commands.get(name, (0, 0))[0],
                       usec - first.commands.get(name, (0, 0))[1])
                for name, (calls, usec) in last.commands.items()
            }  # fmt: skip
            primaries.append({
                "port": port,
                "partitions": target.owner.count(port),
                "updates": own[port],
                "redis_cpu_s": round(spent, 3),
                "cpu_us_per_update": round(spent / own[port] * 1e6, 2) if own[port] else None,
                "idle_cpu_ms_per_s": round(idle * 1000, 2),
                "keys": held,
                "commandstats": {n: {"calls": c, "usec": u}
                                 for n, (c, u) in sorted(commands.items()) if c},
            })  # fmt: skip
        key_dev = deviations([float(k) for k in keys])
        cpu_dev = deviations(cpu)
        for entry, kd, cd in zip(primaries, key_dev, cpu_dev, strict=True):
            entry["keys_vs_mean_pct"], entry["cpu_vs_mean_pct"] = kd, cd
        idle_cpu = sum(idle_per_s) * wall_s
        return {
            "kind": "run",
            "round": round_,
            "primaries": label,
            "partitions": partitions,
            "batch": batch,
            "producers": args.producers,
            "updates": updates,
            "expected_updates": (sum(expected) - warm_entries) * batch,
            "entries_applied": sum(loop.applied for loop in loops) - warm_entries,
            "drafts_per_publish": round(
                updates / max(1, sum(lp.publishes - lp.warm_publishes for lp in loops)), 1
            ),
            "redis_cpu_s": round(total_cpu, 3),
            "cpu_us_per_update": round(total_cpu / updates * 1e6, 2),
            "cpu_us_per_update_net_of_idle": round((total_cpu - idle_cpu) / updates * 1e6, 2),
            "updates_per_redis_core_s": round(updates / total_cpu),
            "phased": args.phased,
            **phases,
            "idle_cpu_ms_per_s": round(sum(idle_per_s) * 1000, 2),
            "wall_s": round(wall_s, 2),
            "wall_updates_per_s": round(updates / wall_s),
            "keys": sum(keys),
            "keys_spread_pct": max(abs(d) for d in key_dev),
            "cpu_spread_pct": max(abs(d) for d in cpu_dev),
            "per_primary": primaries,
            "status": "ok",
        }
    finally:
        for loop in loops:
            loop.stopping.set()
        for loop in loops:
            loop.join(timeout=BLOCK_MS / 1000 + 5)
            loop.close()
        for worker in workers:
            if worker.is_alive():
                worker.kill()
                worker.join()
        target.stop()


def spread_pct(values: list[float]) -> float:
    """Half the range, as % of the median."""
    median = statistics.median(values)
    return round((max(values) - min(values)) / 2 / median * 100, 1) if median else 0.0


def summarize(rows: list[dict[str, Any]], labels: list[str]) -> list[dict[str, Any]]:
    """Per target, over the rounds: medians, spread, the ratio to one primary (median of the
    rounds' ratios: a round's targets ran minutes apart at most) and the goal."""
    ok = [row for row in rows if row["status"] == "ok"]
    base = {row["round"]: row for row in ok if row["primaries"] == "1"}
    out = []
    for label in labels:
        mine = [row for row in ok if row["primaries"] == label]
        if not mine:
            continue
        per_update = [row["cpu_us_per_update"] for row in mine]
        rates = [row["updates_per_redis_core_s"] for row in mine]
        ratios = [row["cpu_us_per_update"] / base[row["round"]]["cpu_us_per_update"]
                  for row in mine if row["round"] in base]  # fmt: skip
        ratio = round(statistics.median(ratios), 3) if ratios else None
        keys_spread = max(row["keys_spread_pct"] for row in mine)
        cpu_spread = statistics.median(row["cpu_spread_pct"] for row in mine)
        out.append(
            {
                "kind": "summary",
                "primaries": label,
                "rounds": len(mine),
                "cpu_us_per_update": statistics.median(per_update),
                "cpu_us_per_update_range": [min(per_update), max(per_update)],
                "cpu_us_per_update_net_of_idle": statistics.median(
                    row["cpu_us_per_update_net_of_idle"] for row in mine
                ),
                "updates_per_redis_core_s": round(statistics.median(rates)),
                "updates_per_redis_core_s_spread_pct": spread_pct(rates),
                "vs_one_primary": ratio,
                "vs_one_primary_each_round": [round(r, 3) for r in ratios],
                "keys_spread_pct": keys_spread,
                "cpu_spread_pct": cpu_spread,
                "wall_updates_per_s": round(
                    statistics.median(r["wall_updates_per_s"] for r in mine)
                ),
                **{
                    name: statistics.median(row[name] for row in mine)
                    for name in (
                        "append_cpu_us_per_update",
                        "publish_cpu_us_per_update",
                        "drafts_per_publish",
                    )
                    if all(name in row for row in mine)
                },
                "linear": None if ratio is None or label == "plain" else ratio <= 1 + LINEAR,
                "even": keys_spread <= EVEN and cpu_spread <= EVEN,
            }
        )
    return out


def notes(row: dict[str, Any]) -> list[str]:
    lines = []
    for p in row["per_primary"]:
        stats = sorted(p["commandstats"].items(), key=lambda item: -item[1]["usec"])[:3]
        top = ", ".join(f"{n} {s['calls']}x{s['usec'] / s['calls']:.0f}µs" for n, s in stats)
        lines.append(
            f":{p['port']} P={p['partitions']} {p['updates']} upd {p['keys']} keys "
            f"({p['keys_vs_mean_pct']:+.0f}%) {p['redis_cpu_s']:.3f} s CPU "
            f"({p['cpu_vs_mean_pct']:+.0f}%) {p['cpu_us_per_update']} µs/upd; {top}"
        )
    return lines


COLUMNS = [
    ("round", 5, "round"), ("primaries", 9, "primaries"), ("updates", 8, "updates"),
    ("per publish", 11, "drafts_per_publish"), ("Redis CPU s", 11, "redis_cpu_s"),
    ("µs/update", 9, "cpu_us_per_update"), ("net idle", 8, "cpu_us_per_update_net_of_idle"),
    ("upd/Redis core-s", 16, "updates_per_redis_core_s"),
    ("idle ms/s", 9, "idle_cpu_ms_per_s"), ("wall upd/s", 10, "wall_updates_per_s"),
    ("keys ±%", 7, "keys_spread_pct"), ("CPU ±%", 6, "cpu_spread_pct"),
]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    cli = parser(__doc__.split("\n\n")[0], smoke="1 and 2 primaries, 640 updates, one round")
    cli.add_argument("--primaries", type=comma_list, default="1,2,3",
                     help="primaries per cluster, comma-separated; `plain`: one redis-server "
                     "without cluster mode")  # fmt: skip
    cli.add_argument("--partitions", type=int, default=16)
    cli.add_argument("--topics-per-partition", type=int, default=4)
    cli.add_argument("--updates", type=int, default=20_000,
                     help="updates per run (rounded to whole cycles over the topics)")  # fmt: skip
    cli.add_argument("--batch", type=int, default=10, help="events per append")
    cli.add_argument("--producers", type=int, default=4, help="producer processes")
    cli.add_argument("--rounds", type=int, default=3, help="rounds, the targets in turn")
    cli.add_argument("--phased", action="store_true",
                     help="every append first, then the aggregators: the most drafts a publish "
                     "every run, and Redis CPU per update of each phase")  # fmt: skip
    cli.add_argument("--idle", type=float, default=1.0, help="seconds of idle CPU measured")
    args = cli.parse_args(argv)
    if args.smoke:
        args.primaries, args.updates, args.rounds, args.producers = ("1", "2"), 800, 1, 2
        args.topics_per_partition, args.idle = 1, 0.5
    labels = list(args.primaries)
    # Each loop's "took the lease" warning says nothing here: it takes a lease nobody held.
    logging.getLogger("pushsvc.broker.redis.lease").setLevel(logging.ERROR)
    about = machine("redis", "hiredis")
    report = Report(COLUMNS, json=args.json, ident=2, notes=notes)
    binary = find_redis_server() or "redis-server"
    version = subprocess.run([binary, "--version"], capture_output=True, text=True)
    report.say(f"# machine: {about}; {version.stdout.strip()}")
    if args.json:
        sys.stdout.buffer.write(
            orjson.dumps({
                "kind": "header", "machine": about, "redis": version.stdout.strip(),
                "partitions": args.partitions,
                "topics": args.partitions * args.topics_per_partition, "batch": args.batch,
                "producers": args.producers, "updates": args.updates, "rounds": args.rounds,
            }) + b"\n"
        )  # fmt: skip
        sys.stdout.flush()
    report.header()
    rows: list[dict[str, Any]] = []
    exact = True
    for round_ in range(1, args.rounds + 1):
        for label in labels:
            try:
                row = run(label, args, round_)
            except Exception as error:
                row = {"kind": "run", "round": round_, "primaries": label,
                       "status": "error", "reason": f"{type(error).__name__}: {error}"}  # fmt: skip
            exact &= row["status"] == "ok" and row["updates"] == row["expected_updates"]
            rows.append(row)
            report.row(row)
    for summary in summarize(rows, labels):
        report.say(
            f"# {summary['primaries']:>5} primaries: {summary['cpu_us_per_update']} µs/update "
            f"({summary['cpu_us_per_update_range'][0]}-{summary['cpu_us_per_update_range'][1]}),"
            f" {summary['updates_per_redis_core_s']} updates/Redis core-s "
            f"(±{summary['updates_per_redis_core_s_spread_pct']}%), vs 1 primary "
            f"{summary['vs_one_primary']}, keys ±{summary['keys_spread_pct']}%, "
            f"CPU ±{summary['cpu_spread_pct']}%; linear {summary['linear']}, "
            f"even {summary['even']}"
        )
        if args.json:
            sys.stdout.buffer.write(orjson.dumps(summary) + b"\n")
            sys.stdout.flush()
    return 1 if (args.smoke or args.check) and not exact else 0


if __name__ == "__main__":
    sys.exit(main())
