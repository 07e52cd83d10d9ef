"""What an Idempotency-Key costs Redis: bytes per remembered key.

N one-event batches are appended through `RedisBroker.append_events` to a fresh redis-server,
once without keys and once with a fresh key per batch (the same events, topics and log); the
difference in `used_memory` over N is what a key costs while its window lasts (its name, the
digest and answer it holds, its expiry). `MEMORY USAGE` of a sample of keys is shown beside
it (it leaves out the expiry's entry), and Redis's own CPU time (`INFO cpu`) per append
without and with a key. The method and the figures: docs/reliability.md, "Idempotent
publishing".

`--embedded` measures the embedded server's store instead (`MemoryBroker`, one partition):
Python's allocations (`tracemalloc`) for N keyed appends less those for N without a key.

    python -m bench.idempotency_keys --keys 100000 --key-length 36,128
    python -m bench.idempotency_keys --embedded --keys 50000 --key-length 36,128
"""

from __future__ import annotations

import gc
import subprocess
import sys
import time
import tracemalloc
import uuid

import redis
from harness.redis_server import RedisServer

from bench.common import Report, parser, redis_cpu_s
from pushsvc.broker.memory import MemoryBroker, Store
from pushsvc.broker.redis import RedisBroker
from pushsvc.core.idempotency import Idempotency, request_digest
from pushsvc.core.lists import comma_list
from pushsvc.ingest import Event

TOPICS = [f"sensors.kitchen.{n:03d}" for n in range(100)]  # 19 characters
PREFIX = "pushsvc:"
WINDOW_MS = 3_600_000  # nothing expires during a run


def _key(length: int) -> str:
    """A random key of `length` characters (36: a UUID, as the client sends)."""
    return (str(uuid.uuid4()) * 4)[:length]


def fill(count: int, key_length: int | None) -> tuple[int, list[int], float]:
    """used_memory after `count` appends (keys of `key_length`, or none) on a fresh Redis,
    MEMORY USAGE of up to 1000 of the keys, and Redis's CPU seconds for the appends."""
    server = RedisServer().start()
    broker = RedisBroker(server.url, prefix=PREFIX)
    admin = redis.Redis(port=server.port)
    try:
        keys: list[str] = []
        cpu = redis_cpu_s(admin)
        for n in range(count):
            topic = TOPICS[n % len(TOPICS)]
            events = [Event(float(n), 1_763_700_000_000_000 + n, None)]
            idempotency = None
            if key_length is not None:
                key = _key(key_length)
                digest = request_digest("application/json", f'{{"value":{n}}}'.encode())
                idempotency = Idempotency(key, digest, WINDOW_MS)
                if len(keys) < 1000:
                    keys.append(broker.keys.of(topic).idempotency(topic, key))
            broker.append_events(topic, events, lateness_us=10**12, idempotency=idempotency)
        cpu = redis_cpu_s(admin) - cpu
        used = int(admin.info("memory")["used_memory"])
        usage = [int(admin.memory_usage(k, samples=0) or 0) for k in keys]
        return used, usage, cpu
    finally:
        admin.close()
        broker.close()
        server.stop()


def embedded_bytes_per_key(count: int, key_length: int) -> dict[str, object]:
    """Bytes the embedded store allocates per remembered key (the log's share taken out)."""
    broker = MemoryBroker(Store(1, clock=time.time))

    def allocated(keyed: bool, start: int) -> int:
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        for n in range(start, start + count):
            topic = TOPICS[n % len(TOPICS)]
            events = [Event(float(n), 1_763_700_000_000_000 + n, None)]
            idempotency = None
            if keyed:
                digest = request_digest("application/json", f'{{"value":{n}}}'.encode())
                idempotency = Idempotency(_key(key_length), digest, WINDOW_MS)
            broker.append_events(topic, events, lateness_us=10**12, idempotency=idempotency)
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before

    tracemalloc.start()
    try:
        without = allocated(False, 0)
        with_keys = allocated(True, count)
    finally:
        tracemalloc.stop()
        broker.close()
    return {
        "keys": count,
        "key_length": key_length,
        "bytes_per_key": round((with_keys - without) / count),
    }


def run(count: int, key_length: int) -> dict[str, object]:
    without, _, cpu_without = fill(count, None)
    with_keys, usage, cpu_with = fill(count, key_length)
    name = len(PREFIX) + len("idem:") + len(TOPICS[0]) + 1 + key_length
    return {
        "keys": count,
        "key_length": key_length,
        "name_bytes": name,
        "used_memory_delta_mib": round((with_keys - without) / 2**20, 1),
        "bytes_per_key": round((with_keys - without) / count),
        "memory_usage_bytes": round(sum(usage) / len(usage)),
        "redis_cpu_us_without": round(cpu_without / count * 1e6, 1),
        "redis_cpu_us_with": round(cpu_with / count * 1e6, 1),
    }


def main() -> int:
    cli = parser(__doc__.split("\n\n")[0])
    cli.add_argument("--keys", type=int, default=100_000, help="appends (and keys) per run")
    cli.add_argument("--key-length", type=comma_list, default="36,128",
                     help="Idempotency-Key lengths, comma-separated")  # fmt: skip
    cli.add_argument("--embedded", action="store_true",
                     help="the embedded server's store (tracemalloc), not Redis")  # fmt: skip
    args = cli.parse_args()
    if args.embedded:
        report = Report(
            [("keys", 8, "keys"), ("key chars", 9, "key_length"), ("B/key", 6, "bytes_per_key")],
            json=args.json,
        )
        report.say(f"# embedded store; topic names of {len(TOPICS[0])} characters")
        report.header()
        for length in args.key_length:
            report.row(embedded_bytes_per_key(args.keys, int(length)))
        return 0
    version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True)
    report = Report(
        [("keys", 8, "keys"), ("key chars", 9, "key_length"), ("name B", 7, "name_bytes"),
         ("used_memory Δ MiB", 17, "used_memory_delta_mib"), ("B/key", 6, "bytes_per_key"),
         ("MEMORY USAGE B", 14, "memory_usage_bytes"),
         ("Redis µs/append, no key", 23, "redis_cpu_us_without"),
         ("with key", 8, "redis_cpu_us_with")],
        json=args.json,
    )  # fmt: skip
    report.say(f"# {version.stdout.strip()}; topic names of {len(TOPICS[0])} characters")
    report.header()
    for length in args.key_length:
        report.row(run(args.keys, int(length)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
