"""What a partition's history and log hold of big messages: `pushsvc serve` with one partition
(embedded, or on a redis-server of its own) takes `--messages` messages of 64 KiB (15 to a POST,
under the default 1 MiB body) on one topic; once every entry is applied, it reports the server's
RSS and, on Redis, `used_memory` and the `MEMORY USAGE` of every key over 1 MiB (the history
and the log). Extra arguments go to `pushsvc serve` (e.g. `--history-bytes 1GiB` to see the
history bounded by its count alone).

    python -m bench.message_history memory
    python -m bench.message_history redis --messages 10000 --history-bytes 1GiB
"""

from __future__ import annotations

import argparse
import json
import time

import redis
from harness.live import PushsvcProcess, post, wait_caught_up
from harness.procfs import rss_kb
from harness.redis_server import RedisServer

MIB = 1024 * 1024
DATA = "x" * (64 * 1024 - 2)
"""64 KiB as compact JSON (its quotes included)."""
PER_POST = 15


def main() -> None:
    arguments = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    arguments.add_argument("backend", choices=["memory", "redis"])
    arguments.add_argument("--messages", type=int, default=10_000)
    options, serve = arguments.parse_known_args()  # the rest: arguments of pushsvc serve
    argv = ["serve", "--tick", "0", "--partitions", "1", *serve]
    store = None
    if options.backend == "redis":
        store = RedisServer().start()
        argv += ["--redis-url", store.url]
    server = PushsvcProcess(*argv).start()
    try:
        client = redis.Redis(port=store.port) if store is not None else None
        used_before = int(client.info("memory")["used_memory"]) if client else 0
        rss_before = rss_kb([server.pid]) * 1024
        started = time.monotonic()
        sent = 0
        while sent < options.messages:
            count = min(PER_POST, options.messages - sent)
            batch = [{"type": "big", "data": DATA} for _ in range(count)]
            status, _ = post(server.port, "big", batch)
            if status == 202:
                sent += count
            else:
                time.sleep(0.2)  # refused: nothing logged, posted again
        wait_caught_up(server.port, timeout=600)
        figures: dict[str, object] = {
            "backend": options.backend,
            "messages": sent,
            "seconds": round(time.monotonic() - started, 1),
            "rss_before_mb": round(rss_before / MIB),
            "rss_after_mb": round(rss_kb([server.pid]) * 1024 / MIB),
        }
        if client is not None:
            used = int(client.info("memory")["used_memory"]) - used_before
            figures["redis_used_mb"] = round(used / MIB)
            for key in client.scan_iter(count=1000):
                usage = int(client.memory_usage(key) or 0)
                if usage > MIB:
                    figures[key.decode()] = round(usage / MIB)
            client.close()
        print(json.dumps(figures))
    finally:
        server.stop()
        if store is not None:
            store.stop()


if __name__ == "__main__":
    main()
