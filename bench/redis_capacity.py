"""How many updates per second one Redis sustains for pushsvc's publish path.

P producer processes append batches of B events (`RedisBroker.append_events`), one aggregator
loop (this process, like `pushsvc.aggregate.shard_runner.ShardRunner`) reads the log, applies it and
publishes the drafts fenced by the lease (`RedisBroker.publish_updates`), and K
`redis-cli psubscribe` processes stand for K web processes watching every topic. The figure is
Redis's own CPU time (INFO cpu) per update; the method and the figures: docs/scaling.md, "What
one Redis sustains". `BENCH_COMMANDSTATS=1` prints Redis's per-command times to stderr.

    python -m bench.redis_capacity --batch 1,10,100 --subscribers 0,16
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import time

import redis
from harness.live import wait_until
from harness.redis_server import RedisServer

from bench.common import Report, parser, redis_cpu_s
from pushsvc.aggregate.aggregator import Aggregator
from pushsvc.broker.base import Applied
from pushsvc.broker.redis import RedisBroker
from pushsvc.broker.redis.keys import Keys
from pushsvc.broker.redis.lease import RedisLease
from pushsvc.broker.redis.log import RedisEventLog
from pushsvc.broker.shared_log import FIRST
from pushsvc.core.lists import comma_list
from pushsvc.ingest import Event
from pushsvc.rules.analytics import Rules, default_rule
from pushsvc.stats import STAT_KEYS

WINDOWS_US = (10_000_000, 60_000_000, 300_000_000)
TOPICS = 50


def start_subscribers(
    server: RedisServer, count: int, pattern: str
) -> list[subprocess.Popen[bytes]]:
    procs = [
        subprocess.Popen(
            ["redis-cli", "-p", str(server.port), "psubscribe", pattern],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(count)
    ]
    with redis.Redis(port=server.port) as admin:
        wait_until(lambda: int(admin.pubsub_numpat()) >= min(count, 1)
                   and int(admin.info("clients")["connected_clients"]) >= count + 1)  # fmt: skip
    return procs


def produce(url: str, prefix: str, batch: int, entries: int, seed: int) -> None:
    """One producer process: `entries` appends of `batch` events each, as fast as accepted."""
    broker = RedisBroker(url, prefix=prefix, history=10_000, partitions=1)
    now_us = time.time_ns() // 1000
    for n in range(entries):
        topic = f"topic-{(seed + n) % TOPICS}"
        events = [Event(float(i), now_us + n * batch + i, {}) for i in range(batch)]
        broker.append_events(topic, events, lateness_us=3_600_000_000)
    broker.close()


def run(batch: int, subscribers: int, updates: int, producers: int) -> dict[str, object]:
    server = RedisServer().start()
    prefix = "bench:"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs = start_subscribers(server, subscribers, Keys(prefix, 1).updates_pattern("").decode())
        broker = RedisBroker(server.url, prefix=prefix, history=10_000, partitions=1)
        keys = broker.keys
        shard = (0, 1)
        event_log = RedisEventLog(server.url, keys, shard, socket_timeout=5.0)
        lease = RedisLease(server.url, keys.shard(shard).lease, ttl_us=600_000_000)
        assert lease.renew(), "no one else holds the lease"
        aggregator = Aggregator(
            rules=Rules((), default_rule(WINDOWS_US, STAT_KEYS)),
            wall_clock=lambda: time.time_ns() // 1000,
        )
        admin = redis.Redis.from_url(server.url)
        per_producer = max(1, updates // batch // producers)
        total_entries = per_producer * producers
        context = multiprocessing.get_context("fork")
        workers = [
            context.Process(
                target=produce, args=(server.url, prefix, batch, per_producer, p * 7919)
            )
            for p in range(producers)
        ]
        cpu_before, wall_before = redis_cpu_s(admin), time.perf_counter()
        for worker in workers:
            worker.start()
        # Like ShardRunner: up to 512 entries a read, about 5000 drafts a publish at most.
        read_count = min(512, max(1, 5000 // batch))
        after, applied, published, publishes = FIRST, 0, 0, 0
        while applied < total_entries:
            entries = event_log.read(after, count=read_count, block_ms=1000)
            if not entries:
                if not any(w.is_alive() for w in workers) and applied < total_entries:
                    raise RuntimeError("a producer died")
                continue
            drafts = []
            for entry in entries:
                assert entry.topic is not None and entry.events is not None
                drafts += aggregator.apply_events(entry.topic, entry.events)
            covered = Applied(shard, entries[-1].id, len(entries), after=after)
            after, applied = entries[-1].id, applied + len(entries)
            broker.publish_updates(drafts, applied=covered, fence=lease.token)
            published += len(drafts)
            publishes += 1
        wall_s = time.perf_counter() - wall_before
        cpu_s = redis_cpu_s(admin) - cpu_before
        for worker in workers:
            worker.join()
        log_bytes = int(admin.memory_usage(keys.shard(shard).log, samples=0) or 0)
        history_bytes = int(admin.memory_usage(keys.shard(shard).history, samples=0) or 0)
        history_len = int(admin.xlen(keys.shard(shard).history))
        if os.environ.get("BENCH_COMMANDSTATS"):
            for name, stat in sorted(admin.info("commandstats").items()):
                print(f"#   {name}: {stat}", file=sys.stderr)
        admin.close()
        lease.close()
        event_log.close()
        broker.close()
        return {
            "batch": batch,
            "producers": producers,
            "subscribers": subscribers,
            "updates": published,
            "drafts_per_publish": round(published / publishes, 1),
            "redis_cpu_s": round(cpu_s, 3),
            "updates_per_redis_core_s": round(published / cpu_s) if cpu_s else None,
            "wall_updates_per_s": round(published / wall_s),
            "log_bytes_per_event": round(log_bytes / published),
            "history_bytes_per_update": round(history_bytes / history_len),
        }
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        server.stop()


def main() -> int:
    cli = parser(__doc__.split("\n\n")[0])
    cli.add_argument("--batch", type=comma_list, default="1,10,100",
                     help="events per POST, comma-separated")  # fmt: skip
    cli.add_argument("--subscribers", type=comma_list, default="0,4,16",
                     help="pub/sub subscribers (web processes)")  # fmt: skip
    cli.add_argument("--producers", type=int, default=4, help="producer processes")
    cli.add_argument("--updates", type=int, default=50_000, help="updates per row")
    args = cli.parse_args()
    version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True)
    report = Report(
        [("batch", 6, "batch"), ("subs", 5, "subscribers"), ("updates", 8, "updates"),
         ("per publish", 11, "drafts_per_publish"), ("Redis CPU s", 11, "redis_cpu_s"),
         ("updates/Redis core-s", 21, "updates_per_redis_core_s"),
         ("wall updates/s", 15, "wall_updates_per_s"), ("log B/event", 12, "log_bytes_per_event"),
         ("history B/update", 17, "history_bytes_per_update")],
        json=args.json,
    )  # fmt: skip
    report.say(f"# {os.cpu_count()} cores; {version.stdout.strip()}")
    report.header()
    for subscribers in args.subscribers:
        for batch in args.batch:
            report.row(run(int(batch), int(subscribers), args.updates, args.producers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
