"""Producers on Redis against producers on HTTP: events per second into the event log.

One Redis deployment (a redis-server of its own, one `pushsvc aggregate` — which bridges — and
one `pushsvc web`). The same M events, in messages of B, go in twice on fresh topics:

* Redis: `PUBLISH {prefix}ingest:{topic}` as fast as redis-py pipelines them; done when the
  bridge's own count (`{prefix}bridged` events) reaches M. A message the bridge never got
  (pub/sub keeps nothing, and Redis drops a subscriber that falls too far behind) is reported
  as lost;
* HTTP: `POST /topics/{topic}/events` one after another on a keep-alive connection; done at the
  last 202 (a 202 means the batch is in the log).

    python -m bench.bridge --events 100000 --batch 1,100
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import redis

from bench.common import CpuMeter, Report, parser
from bench.posting import batches, publish
from bench.servers import PushsvcRedis
from pushsvc.core.lists import comma_list


def through_redis(url: str, prefix: str, messages: list[tuple[int, bytes]]) -> dict[str, Any]:
    events = sum(count for count, _ in messages)
    client = redis.Redis.from_url(url)
    channel = f"{prefix}ingest:r-{uuid.uuid4().hex[:8]}"
    before = int(client.hget(f"{prefix}bridged", "events") or 0)
    started = time.monotonic()
    for start in range(0, len(messages), 100):
        with client.pipeline(transaction=False) as pipe:
            for _, message in messages[start : start + 100]:
                pipe.publish(channel, message)
            pipe.execute()
    published = time.monotonic()
    done, last, last_change = before, before, time.monotonic()
    while done - before < events and time.monotonic() - last_change < 5:
        time.sleep(0.01)  # the count lives in Redis: poll it
        done = int(client.hget(f"{prefix}bridged", "events") or 0)
        if done != last:
            last, last_change = done, time.monotonic()
    finished = last_change if done - before < events else time.monotonic()
    client.close()
    appended = done - before
    return {
        "path": "redis",
        "events_per_s": round(appended / (finished - started)),
        "publish_s": round(published - started, 3),
        "appended": appended,
    }


def through_http(base: str, messages: list[tuple[int, bytes]]) -> dict[str, Any]:
    done = publish([base], f"/topics/h-{uuid.uuid4().hex[:8]}/events", messages, 1, 600)
    return {
        "path": "http",
        "events_per_s": round(done.accepted / (done.last_accepted - done.first_sent)),
        "appended": done.accepted,
    }


def main() -> None:
    cli = parser(__doc__.split("\n\n")[0])
    cli.add_argument("--events", "-m", type=int, default=100_000)
    cli.add_argument("--batch", "-b", type=comma_list, default=("1", "100"))
    args = cli.parse_args()
    deployment = PushsvcRedis(1)
    deployment.start()
    try:
        assert deployment.aggregator is not None and deployment.redis is not None
        deployment.aggregator.wait_for_log("bridge: bridging")
        web = deployment.webs[0]
        report = Report(
            [("path", 6, "path"), ("B", 5, "batch"), ("events/s", 10, "events_per_s"),
             ("appended", 9, "appended"), ("lost", 6, "lost"), ("CPU s", 0, "cpu_s")],
            json=args.json,
        )  # fmt: skip
        report.header()
        for batch in (int(b) for b in args.batch):
            messages = batches(args.events, batch)
            for path in ("redis", "http"):
                meter = CpuMeter({"aggregate": deployment.aggregator.pid, "web": web.pid}).start()
                if path == "redis":
                    row = through_redis(deployment.redis.url, deployment.prefix, messages)
                else:
                    row = through_http(web.base, messages)
                row["lost"] = args.events - row["appended"]
                report.row({"batch": batch, **row, "cpu_s": meter.stop()["cpu_s"]})
    finally:
        deployment.stop()


if __name__ == "__main__":
    main()
