"""Producers on Redis against producers on HTTP: events per second into the event log.

One Redis deployment (a redis-server of its own, one `pushsvc aggregate` — which bridges — and
one `pushsvc web`). The same M events, in messages of B, go in twice on fresh topics:

* Redis: `PUBLISH {prefix}ingest:{topic}` as fast as redis-py pipelines them; done when the
  bridge's own count (`{prefix}bridged` events) reaches M. A message the bridge never got
  (pub/sub keeps nothing, and Redis drops a subscriber that falls too far behind) is reported
  as lost;
* HTTP: `POST /topics/{topic}/events` one after another on a keep-alive connection; done at the
  last 202 (a 202 means the batch is in the log).

    python bench/bridge.py --events 100000 --batch 1,100
"""

from __future__ import annotations

import argparse
import http.client
import time
import uuid

import orjson
import redis

from pushsvc.lists import comma_list
from pushsvc.testing.live import PushsvcProcess
from pushsvc.testing.procfs import cpu_seconds
from pushsvc.testing.redis_server import RedisServer


def _messages(events: int, batch: int) -> list[bytes]:
    return [
        orjson.dumps([{"value": float(i)} for i in range(start, min(events, start + batch))])
        for start in range(0, events, batch)
    ]


def through_redis(server: RedisServer, prefix: str, messages: list[bytes], events: int) -> dict:
    client = redis.Redis(port=server.port)
    channel = f"{prefix}ingest:r-{uuid.uuid4().hex[:8]}"
    before = int(client.hget(f"{prefix}bridged", "events") or 0)
    started = time.monotonic()
    for start in range(0, len(messages), 100):
        with client.pipeline(transaction=False) as pipe:
            for message in messages[start : start + 100]:
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
        "lost": events - appended,
    }


def through_http(web: PushsvcProcess, messages: list[bytes], events: int) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", web.port, timeout=30)
    topic = f"h-{uuid.uuid4().hex[:8]}"
    headers = {"Content-Type": "application/json"}
    accepted = 0
    started = time.monotonic()
    for message in messages:
        conn.request("POST", f"/topics/{topic}/events", message, headers)
        response = conn.getresponse()
        body = orjson.loads(response.read())
        if response.status == 202:
            accepted += body["accepted"]
    elapsed = time.monotonic() - started
    conn.close()
    return {
        "path": "http",
        "events_per_s": round(accepted / elapsed),
        "appended": accepted,
        "lost": events - accepted,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", "-m", type=int, default=100_000)
    parser.add_argument("--batch", "-b", type=comma_list, default=("1", "100"))
    args = parser.parse_args()
    prefix = f"b{uuid.uuid4().hex[:6]}:"
    with RedisServer() as server:
        env = {"PUSHSVC_REDIS_URL": server.url, "PUSHSVC_PREFIX": prefix, "PUSHSVC_TICK": "0"}
        aggregator = PushsvcProcess("aggregate", env=env, http=False).start()
        aggregator.wait_for_log("bridge: bridging")
        web = PushsvcProcess("web", env=env).start()
        try:
            print(f"{'path':>6} {'B':>5} {'events/s':>10} {'appended':>9} {'lost':>6}  CPU s")
            for batch in (int(b) for b in args.batch):
                messages = _messages(args.events, batch)
                for run in (through_redis, through_http):
                    cpu_before = {p.pid: cpu_seconds(p.pid) or 0.0 for p in (aggregator, web)}
                    if run is through_redis:
                        row = through_redis(server, prefix, messages, args.events)
                    else:
                        row = through_http(web, messages, args.events)
                    cpu = {
                        name: round((cpu_seconds(p.pid) or 0.0) - cpu_before[p.pid], 2)
                        for name, p in (("aggregate", aggregator), ("web", web))
                    }
                    print(
                        f"{row['path']:>6} {batch:>5} {row['events_per_s']:>10} "
                        f"{row['appended']:>9} {row['lost']:>6}  {cpu}"
                    )
        finally:
            web.stop()
            aggregator.stop()


if __name__ == "__main__":
    main()
