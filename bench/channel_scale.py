"""A channel per user at scale: N topics `u{i}`, S of them with one subscriber each on its
messages stream, one message published to each topic; what that costs a deployment, and
whether every message arrived.

For each deployment (`--servers`, bench/servers.py's names, and `pushsvc-cluster-W`: W web
processes and one aggregator on a 3-primary Redis Cluster without replicas) it starts the
deployment, opens S streams `/topics/u{i}/messages` with the C subscribers
(bench/loadgen/sse_clients.c, `--messages`, `{i}` in the path), one program per 15,000
streams, each from a loopback address of its own (127.0.0.11, .12, ...: a source address has
about 28,000 ephemeral ports per server port), then publishes one message to every topic by
cross-topic batches (`POST /events`, `--batch` items each, the web processes in turn) and
waits until every stream has its message. A row:

* `kB/stream`: the RSS of every pushsvc process once the streams are open, over their RSS
  before the first, per stream; `kB/topic`: their RSS once every message is delivered, over
  that, per topic (a topic, its message, its history and its update); `redis B/ch`: Redis's
  `used_memory` per topic after delivery, over before the first stream (summed over a
  cluster's primaries); a private redis-server's RSS (`serve --workers`) apart, per topic;
* `delivered`: distinct messages received of S streams (and duplicates, out of order,
  missing); a stream the server ends comes back as an EventSource does, with
  `Last-Event-ID` (`reconnects`, `gaps`, and the server's `server_disconnects` by reason);
* `publish s`: the POSTs' time; `deliver s`: from the first POST until every POST was
  answered and every stream had its message; `cpu ms/ch`: the pushsvc processes' CPU from
  the first POST to then, per topic, and Redis's apart (`redis_cpu_ms_per_channel`).

`--streams S` opens streams on the first S topics only: one process holds as many streams as
its open-files limit allows (18,000 under a hard limit of 20,000), so `pushsvc serve` alone
holds fewer than 100,000, and `--workers W` about 18,000 W.

The process raises its soft open-files limit to the hard one; its children inherit it.

    python -m bench.channel_scale --channels 100000 --streams 15000 \\
        --servers pushsvc-memory --json
    python -m bench.channel_scale --channels 100000 --servers pushsvc-workers-8 --json
    python -m bench.channel_scale --channels 50000 --streams 15000 \\
        --servers pushsvc-cluster-2 --json

Figures and the projection to a million channels: docs/performance.md, "100,000 channels and
the projection to a million".
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import os
import re
import resource
import signal
import subprocess
import time
from typing import Any
from urllib.parse import urlsplit

import orjson
import redis
from harness.procfs import cpu_seconds, rss_kb
from harness.redis_cluster import RedisClusterServers

from bench.child import JsonLinesChild, c_subscribers
from bench.common import Column, Report, machine, parser, redis_cpu_s
from bench.servers import PUSHSVC_ENV, PushsvcRedis, ServerUnderTest, make_deployment
from pushsvc.core.lists import comma_list

_DISCONNECTS = re.compile(r'^pushsvc_stream_disconnects_total\{reason="(\w+)"\} (\S+)$', re.M)
PER_PROGRAM = 15_000
"""Streams per C subscriber program, each from its own source address: below the 20,000 open
files a process may have on the machine this was written on (docs/performance.md)."""


class PushsvcCluster(PushsvcRedis):
    """`pushsvc-cluster-W`: PushsvcRedis on a Redis Cluster of 3 primaries (no replicas: what
    is measured is what the data costs once)."""

    def __init__(self, workers: int) -> None:
        super().__init__(workers)
        self.name = f"pushsvc-cluster-{workers}"
        self.cluster: RedisClusterServers | None = None

    def _start_redis(self) -> str:
        self.cluster = RedisClusterServers(replicas_per_primary=0).start()
        return self.cluster.url

    def redis_used_memory(self) -> int | None:
        if self.cluster is None:
            return None
        total = 0
        for node in self.cluster.primaries():
            with redis.Redis(port=node.port) as client:
                total += int(client.info("memory")["used_memory"])
        return total

    def redis_cpu_s(self) -> float:
        assert self.cluster is not None
        total = 0.0
        for node in self.cluster.primaries():
            with redis.Redis(port=node.port) as client:
                total += redis_cpu_s(client)
        return total

    def stop(self) -> None:
        super().stop()
        if self.cluster is not None:
            self.cluster.stop()
            self.cluster = None


def deployment(name: str, channels: int) -> ServerUnderTest:
    if name.startswith("pushsvc-cluster-"):
        return PushsvcCluster(int(name.rpartition("-")[2]))
    return make_deployment(name, subscribers=channels)


def raise_open_files() -> int:
    """The soft open-files limit to the hard one (children inherit it); that limit."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def publish(bases: list[str], channels: int, batch: int) -> float:
    """One message to every topic by cross-topic batches, the web processes in turn, a
    connection each (a kept-alive one idles past `--header-timeout` while the other web
    process takes a long batch); when the first POST went (time.time)."""
    turns = itertools.cycle(bases)
    first = time.time()
    for start in range(0, channels, batch):
        sent = repr(time.time())  # a string, as every load generator sends it
        items = [
            {"topic": f"u{i}", "data": {"value": 0, "tags": {"sent": sent}}}
            for i in range(start, min(start + batch, channels))
        ]
        connection = http.client.HTTPConnection(*_address(next(turns)), timeout=300)
        try:
            connection.request(
                "POST", "/events", orjson.dumps(items), {"Content-Type": "application/json"}
            )
            answer = connection.getresponse()
            body = answer.read()
        finally:
            connection.close()
        if answer.status != 202:
            refused = [r for r in orjson.loads(body)["results"] if "error" in r]
            raise RuntimeError(f"POST /events: {answer.status} {refused[:2]}")
    return first


def redis_cpu(server: ServerUnderTest, private: list[int]) -> float | None:
    """The CPU seconds so far of the deployment's Redis: its redis-server's, a cluster's
    primaries', or a private one's (`serve --workers`); None when it has none."""
    if isinstance(server, PushsvcCluster):
        return server.redis_cpu_s()
    if server.redis is not None:
        with redis.Redis.from_url(server.redis.url) as client:
            return redis_cpu_s(client)
    if private:
        return sum(cpu_seconds(pid) or 0.0 for pid in private)
    return None


def _stop(server: ServerUnderTest) -> None:
    """Stop every process of `server`: one slow to stop (a web process ending 15,000 streams
    on a loaded machine) is killed, and raises; the next call stops the rest. What a killed
    supervisor leaves (`serve --workers`: its workers, its redis-server) is killed by its id."""
    pids = server.pids()
    for _ in range(1 + len(pids)):
        try:
            server.stop()
            break
        except subprocess.SubprocessError:
            continue
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _command(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8") as comm:
            return comm.read().strip()
    except OSError:
        return ""


def _disconnects(bases: list[str]) -> dict[str, int]:
    """`pushsvc_stream_disconnects_total` by reason, summed over the web processes' scrapes
    (with `serve --workers`, one scrape reaches one worker)."""
    counts: list[dict[str, int]] = []
    for base in bases:
        connection = http.client.HTTPConnection(*_address(base), timeout=30)
        try:
            connection.request("GET", "/metrics")
            text = connection.getresponse().read().decode()
        finally:
            connection.close()
        found = _DISCONNECTS.findall(text)
        counts.append({reason: int(float(n)) for reason, n in found if float(n)})
    return _summed(counts)


def _summed(counts: list[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for one in counts:
        for key, n in one.items():
            total[key] = total.get(key, 0) + n
    return total


def _address(base: str) -> tuple[str, int]:
    parts = urlsplit(base)
    return parts.hostname or "127.0.0.1", parts.port or 80


def measure(server: ServerUnderTest, channels: int, streams: int, batch: int) -> dict[str, Any]:
    topics = str(2 * channels + 1000)  # one producer makes every topic: its share is all
    PUSHSVC_ENV.update(
        PUSHSVC_MAX_STREAMS=str(streams + 1000),
        PUSHSVC_MAX_TOPICS=topics,
        PUSHSVC_MAX_TOPICS_PER_PUBLISHER=topics,
    )
    server.start()
    programs: list[JsonLinesChild] = []
    try:
        pids = server.pids()
        redis_pids = [pid for pid in pids if _command(pid) == "redis-server"]
        pids = [pid for pid in pids if pid not in redis_pids]  # a private one, apart
        rss0, redis0 = rss_kb(pids), server.redis_used_memory()
        redis_rss0 = rss_kb(redis_pids)
        urls = [f"{base}/topics/u{{i}}/messages" for base in server.bases()]
        timeouts = {"connect": 600.0, "publish": 600.0, "drain": 300.0, "idle": 60.0}
        for k, first in enumerate(range(0, streams, PER_PROGRAM)):
            count = min(PER_PROGRAM, streams - first)
            more = (
                "--messages", "--reconnect", "--hold", "--first", str(first),
                "--source", f"127.0.0.{11 + k}",
            )  # fmt: skip
            programs.append(c_subscribers(urls, count, 1, timeouts, *more))
        opened = [p.record(900, "opened") for p in programs]
        ready = sum(o["ready"] for o in opened)
        if ready < streams:
            errors = [o["connect_errors"] for o in opened]
            raise RuntimeError(f"{ready} of {streams} streams opened; connect errors {errors}")
        time.sleep(2)
        rss_streams = rss_kb(pids)
        cpu0 = sum(cpu_seconds(pid) or 0.0 for pid in pids)
        redis_cpu0 = redis_cpu(server, redis_pids)
        first_post = publish(server.bases(), channels, batch)
        published = time.time()
        for program in programs:
            program.tell(b"published")
        drained = [p.record(900, "drained") for p in programs]
        # Done once every POST is answered and every stream has its message.
        done_at = max(published, *(d["all_complete_at"] or d["last_delivery_at"] for d in drained))
        cpu = sum(cpu_seconds(pid) or 0.0 for pid in pids) - cpu0
        redis_cpu1 = redis_cpu(server, redis_pids)
        time.sleep(2)
        rss_after, redis_after = rss_kb(pids), server.redis_used_memory()
        ended = _disconnects(server.bases())
        redis_rss_after = rss_kb(redis_pids)
        for program in programs:
            program.tell(b"measured")
        results = [p.record(120, "result") for p in programs]
    finally:
        for program in programs:
            program.close()
        _stop(server)

    def total(key: str) -> int:
        return sum(int(r[key]) for r in results)

    row: dict[str, Any] = {
        "server": server.name,
        "channels": channels,
        "streams": streams,
        "status": "ok",
        "rss_mb": round(rss_after / 1024),
        "kb_per_stream": round((rss_streams - rss0) / max(streams, 1), 2),
        "kb_per_topic": round((rss_after - rss_streams) / channels, 2),
        "redis_bytes_per_channel": None,
        "private_redis_rss_kb_per_channel": (
            round((redis_rss_after - redis_rss0) / channels, 2) if redis_pids else None
        ),
        "delivered": total("distinct"),
        "duplicates": total("duplicates"),
        "out_of_order": total("out_of_order"),
        "missing": total("missing"),
        "stream_errors": _summed([d["stream_errors"] for d in drained]),
        "reconnects": sum(int(d["reconnects"]) for d in drained),
        "gaps": sum(int(d["gaps"]) for d in drained),
        "server_disconnects": ended,
        "publish_s": round(published - first_post, 2),
        "deliver_s": round(done_at - first_post, 2),
        "cpu_ms_per_channel": round(cpu * 1000 / channels, 3),
        "redis_cpu_ms_per_channel": (
            None
            if redis_cpu0 is None or redis_cpu1 is None
            else round((redis_cpu1 - redis_cpu0) * 1000 / channels, 3)
        ),
        "latency_p99_ms_worst_program": max(r["latency_ms"]["p99"] or 0 for r in results),
    }
    if redis0 is not None and redis_after is not None:
        row["redis_bytes_per_channel"] = round((redis_after - redis0) / channels)
    return row


COLUMNS: list[Column] = [
    ("server", 18, "server"),
    ("channels", 8, "channels"),
    ("rss MB", 6, "rss_mb"),
    ("streams", 7, "streams"),
    ("kB/stream", 9, "kb_per_stream"),
    ("kB/topic", 8, "kb_per_topic"),
    ("redis B/ch", 10, "redis_bytes_per_channel"),
    ("delivered", 9, "delivered"),
    ("missing", 7, "missing"),
    ("dup", 4, "duplicates"),
    ("publish s", 9, "publish_s"),
    ("deliver s", 9, "deliver_s"),
    ("cpu ms/ch", 9, "cpu_ms_per_channel"),
]


def main() -> None:
    cli = parser(__doc__ or "")
    cli.add_argument("--channels", type=int, default=100_000)
    cli.add_argument("--servers", type=comma_list, default=["pushsvc-memory"])
    cli.add_argument(
        "--streams", type=int, help="how many of the topics have a stream (default: all)"
    )
    cli.add_argument("--batch", type=int, default=1000, help="items per POST /events")
    args = cli.parse_args()
    streams = args.channels if args.streams is None else min(args.streams, args.channels)
    limit = raise_open_files()
    report = Report(COLUMNS, json=args.json, ident=2)
    report.say(orjson.dumps({**machine(), "open_files_limit": limit}).decode())
    report.header()
    for name in args.servers:
        server = deployment(name, args.channels)
        try:
            row = measure(server, args.channels, streams, args.batch)
        except (RuntimeError, OSError, KeyError, subprocess.SubprocessError) as failed:
            row = {"server": name, "channels": args.channels, "status": "error",
                   "reason": str(failed)}  # fmt: skip
        report.row(row)


if __name__ == "__main__":
    main()
