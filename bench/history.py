"""History reads on Redis: `Broker.history(topic, limit=120)` (what the dashboard asks for
each topic it draws) for topics of every rarity among one full history.

The history (`--history` updates, one stream for all topics) is filled with half its updates
on one busy topic and the rest spread over `--others` topics; one more topic appeared once,
before them (its update is trimmed), and one never.
Each read is timed `--repeats` times in this process against a redis-server of its own; the
median is reported, with the stream entries and bytes Redis sent for one read (INFO).

    python -m bench.history
    python -m bench.history --history 10000 --others 50 --json
"""

from __future__ import annotations

import time
from typing import Any

import orjson
import redis
from harness.fenced_publish import publish
from harness.redis_server import RedisServer

from bench.common import Report, median, parser
from pushsvc.broker.redis import RedisBroker
from pushsvc.core.updates import UpdateDraft

STATS = ("count", "sum", "mean", "min", "max", "var", "stddev", "p50", "p90", "p99")


def body(topic: str, n: int) -> bytes:
    # The size of a real update: three windows of ten statistics at full precision.
    windows = {w: dict.fromkeys(STATS, 123.456789012345) for w in ("10s", "1m", "5m")}
    return orjson.dumps({"topic": topic, "n": n, "windows": windows})


def fill(broker: RedisBroker, history: int, others: int) -> None:
    publish(broker, [UpdateDraft("trimmed", 0, body("trimmed", 0))])
    for start in range(0, history, 100):
        batch = range(start, min(start + 100, history))
        drafts = []
        for n in batch:
            topic = "busy" if n % 2 else f"other.{n % others}"
            drafts.append(UpdateDraft(topic, n + 1, body(topic, n)))
        publish(broker, drafts)


def measure(broker: RedisBroker, client: redis.Redis, topic: str, repeats: int) -> dict[str, Any]:
    client.config_resetstat()
    sent_before = int(client.info("stats")["total_net_output_bytes"])
    page = broker.history(topic, limit=120)
    sent = int(client.info("stats")["total_net_output_bytes"]) - sent_before
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        broker.history(topic, limit=120)
        seconds.append(time.perf_counter() - started)
    return {"topic": topic, "updates": len(page.updates), "ms": median(seconds) * 1000,
            "kb_sent": sent / 1024}  # fmt: skip


def main() -> None:
    args = parser(__doc__ or "")
    args.add_argument("--history", type=int, default=10_000)
    args.add_argument("--others", type=int, default=50)
    args.add_argument("--repeats", type=int, default=20)
    options = args.parse_args()
    report = Report(
        [("topic", 10, "topic"), ("updates", 8, "updates"), ("ms", 8, "ms"),
         ("KB sent", 8, "kb_sent")],
        json=options.json,
    )  # fmt: skip
    server = RedisServer().start()
    try:
        broker = RedisBroker(server.url, history=options.history)
        client = redis.Redis.from_url(server.url)
        fill(broker, options.history, options.others)
        report.header()
        for topic in ("busy", "other.2", "trimmed", "never-seen"):
            report.row(measure(broker, client, topic, options.repeats))
        client.close()
        broker.close()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
