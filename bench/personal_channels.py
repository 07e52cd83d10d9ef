"""A channel per user: N topics `u{i}`, one C subscriber on each of the first S, M messages
(message k to `u{k mod N}`, value k div N, the 100-byte body of bench/loadgen/kinds.py), and
what a deployment pays for them: beside nginx + nchan at 10,000 channels, or at 100,000 topics
on one process, `serve --workers`, web processes + aggregator on Redis, or a Redis Cluster.

Deployments (`--servers`): `pushsvc` (`serve`), `pushsvc-before` (`serve` from `--before-src`'s
src/: a before/after in interleaved rounds), `nchan` (bench/peers/nchan.conf; `pushsvc` and
`nchan` send an idle stream a comment every `--heartbeat` s), bench/servers.py's
`make_deployment` names, and `pushsvc-cluster-W` (W web processes and one aggregator on a Redis
Cluster of 3 primaries, no replicas). Unless `--no-pin` (or the machine lacks the cores), the
server runs pinned to `--server-core` (`taskset -a`: every thread of every process), this
driver and the subscribers to `--client-core`.

The subscribers (bench/loadgen/sse_clients.c, `{i}` in the path) run one program per 15,000
streams, each from a loopback address of its own (127.0.0.11, .12, ...: about 28,000 ports per
source address and server port); `--reconnect`: a stream the server ends comes back as an
EventSource does, with `Last-Event-ID`. Publishing (`--modes`), paced at `--rate` a second
(`max`: unpaced) over `--connections` keep-alive connections (a fresh connection a POST when
the deployment has several web processes, taken in turn: a kept-alive one would idle past
`--header-timeout` while another takes a long batch):

* `single`: one POST a message (`POST /topics/u{j}/events`; nchan: the body to its publisher);
* `batch`: cross-topic batches of `--batch` messages (`POST /events`); pushsvc only.

A row: `kept/s` messages accepted ÷ (last answer - first send); latency p50/p99 (subscriber's
read time - `tags.sent`, nearest rank, the worst program's); `µs/msg` the server's CPU (/proc,
every process but a private redis-server) from the first POST to the end of the drain ÷
messages delivered, `cpu ms/ch` the same ÷ N, and Redis's apart; `kB/stream` the server's RSS
with the streams open, over before, per stream; `kB/topic` its RSS after delivery, over that,
per topic; `redis B/ch` Redis's `used_memory` (a cluster's primaries summed) per topic; `publish
s` the POSTs' time, `deliver s` until every POST was answered and every stream had its
messages. One process holds as many streams as its open-files limit allows (the driver raises
its soft limit to the hard one; children inherit it).

    python -m bench.personal_channels                      # 10,000 channels, 1,000/s, single
    python -m bench.personal_channels --modes single,batch --rate 1000,10000 --rounds 3 --json
    python -m bench.personal_channels --before-src /tmp/before/src   # adds `pushsvc-before`
    python -m bench.personal_channels --scale --channels 100000 --streams 15000 \\
        --servers pushsvc-memory --json

`--scale`: the defaults of the 100,000-channel runs (100,000 channels, `pushsvc-memory`, one
message a topic by batches of 1,000, unpaced on one connection, `--reconnect`, unpinned,
longer drain). `--smoke`: 200 channels, 400 messages at 400/s; exit 1 unless every message
arrived once, in order. Figures: docs/performance.md, "A channel per user, side by side with
nginx + nchan" and "100,000 channels and the projection to a million".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import re
import signal
import subprocess
import sys
import time
from typing import Any

import redis
from harness.live import request
from harness.procfs import cpu_seconds, rss_kb
from harness.redis_cluster import RedisClusterServers

from bench.child import JsonLinesChild, c_subscribers
from bench.common import Column, Report, machine, redis_cpu_s
from bench.common import parser as common_parser
from bench.loadgen.kinds import message_body
from bench.loadgen.process import http_address, raise_fd_limit
from bench.loadgen.publisher import Publisher
from bench.servers import (
    PUSHSVC_ENV,
    Nchan,
    PushsvcRedis,
    PushsvcServe,
    ServerUnderTest,
    make_deployment,
    nginx_version,
)
from pushsvc.core.lists import comma_list

MODES = ("single", "batch")
PER_PROGRAM = 15_000
"""Streams per C subscriber program: below the 20,000 open files a process may have on the
machine this was written on (docs/performance.md)."""
ACCEPTED = frozenset({201, 202})
"""nchan answers 201 to a publish with subscribers (202 without); pushsvc 202."""
SUMMED = ("expected", "received", "distinct", "missing", "duplicates", "out_of_order",
          "unexpected")  # fmt: skip
_DISCONNECTS = re.compile(r'^pushsvc_stream_disconnects_total\{reason="(\w+)"\} (\S+)$', re.M)
PRESETS = {
    "personal": {"servers": None, "modes": ["single"], "rate": ["1000"], "channels": 10_000,
                 "batch": 100, "connections": 32, "drain_timeout": 30.0, "idle_timeout": 5.0},
    "scale": {"servers": ["pushsvc-memory"], "modes": ["batch"], "rate": ["max"],
              "channels": 100_000, "batch": 1000, "connections": 1, "drain_timeout": 300.0,
              "idle_timeout": 60.0, "reconnect": True, "no_pin": True},
}  # fmt: skip


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

    def _primaries(self, read: Any) -> Any:
        assert self.cluster is not None
        total = 0
        for node in self.cluster.primaries():
            with redis.Redis(port=node.port) as client:
                total += read(client)
        return total

    def redis_used_memory(self) -> int | None:
        if self.cluster is None:
            return None
        return int(self._primaries(lambda c: int(c.info("memory")["used_memory"])))

    def stop(self) -> None:
        super().stop()
        if self.cluster is not None:
            self.cluster.stop()
            self.cluster = None


def deployment(name: str, args: argparse.Namespace) -> ServerUnderTest:
    if name == "nchan":
        nchan = Nchan(1, connections=2 * args.streams + 100)
        nchan.ping_s = args.heartbeat
        return nchan
    if name in ("pushsvc", "pushsvc-before"):
        pushsvc = PushsvcServe(extra_args=("--heartbeat", f"{args.heartbeat}s"))
        pushsvc.name = name
        if name == "pushsvc-before":
            pushsvc.env["PYTHONPATH"] = os.path.abspath(args.before_src)
        return pushsvc
    if name.startswith("pushsvc-cluster-"):
        return PushsvcCluster(int(name.rpartition("-")[2]))
    return make_deployment(name, subscribers=args.streams)


def _cpu(pids: list[int]) -> float:
    return sum(cpu for pid in pids if (cpu := cpu_seconds(pid)) is not None)


def redis_cpu(server: ServerUnderTest, private: list[int]) -> float | None:
    """The CPU seconds so far of the deployment's Redis: its redis-server's, a cluster's
    primaries', or a private one's (`serve --workers`); None when it has none."""
    if isinstance(server, PushsvcCluster):
        return float(server._primaries(redis_cpu_s))
    if server.redis is not None:
        with redis.Redis.from_url(server.redis.url) as client:
            return redis_cpu_s(client)
    return _cpu(private) if private else None


def _command(pid: int) -> str:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/comm", encoding="utf-8") as comm:
        return comm.read().strip()
    return ""


def _summed(counts: list[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for one in counts:
        for key, n in one.items():
            total[key] = total.get(key, 0) + n
    return total


def _disconnects(server: ServerUnderTest) -> dict[str, int]:
    """`pushsvc_stream_disconnects_total` by reason, summed over the web processes' scrapes
    (with `serve --workers`, one scrape reaches one worker); {} for a peer."""
    if server.kind != "pushsvc":
        return {}
    texts = [request(http_address(b)[1], "GET", "/metrics")[2].decode() for b in server.bases()]
    found = [_DISCONNECTS.findall(text) for text in texts]
    return _summed([{why: int(float(n)) for why, n in one if float(n)} for one in found])


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


def body(server: ServerUnderTest, mode: str, first: int, size: int, n: int) -> tuple[str, bytes]:
    """The POST of messages first .. first+size-1 (`single`: size 1)."""
    sent = time.time()
    if mode == "batch":
        item = b'{"topic":"u%d","type":"message","data":%s}'
        items = (item % (k % n, message_body(k // n, sent)) for k in range(first, first + size))
        return "/events", b"[" + b",".join(items) + b"]"
    payload = message_body(first // n, sent)
    if server.kind == "pushsvc":
        payload = b'{"type":"message","data":%s}' % payload
    return f"/topics/u{first % n}/events", payload


async def publish(
    server: ServerUnderTest, mode: str, args: argparse.Namespace, rate: float
) -> dict[str, Any]:
    """Every message, paced at `rate`/s; what was accepted, when, and how late the publisher
    ran behind its schedule."""
    bases = [http_address(base)[:2] for base in server.bases()]
    step = args.batch if mode == "batch" else 1
    posts = list(range(0, args.messages, step))
    lanes = [[Publisher(h, p, "/", ACCEPTED, quickack=True) for h, p in bases]
             for _ in range(args.connections)]  # fmt: skip
    accepted, errors, behind = 0, {}, [0.0]
    loop = asyncio.get_running_loop()
    start, first_sent = loop.time() + 0.05, time.time() + 0.05

    async def run(lane: int) -> None:
        nonlocal accepted
        for k, first in enumerate(posts[lane :: args.connections]):
            if (delay := start + first / rate - loop.time()) > 0:
                await asyncio.sleep(delay)
            else:
                behind[0] = max(behind[0], -delay)
            publisher = lanes[lane][k % len(bases)]
            size = min(step, args.messages - first)
            path, payload = body(server, mode, first, size, args.channels)
            try:
                status = await asyncio.wait_for(publisher.post(path, payload), args.post_timeout)
            except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
                status = type(exc).__name__
            if status in ACCEPTED:
                accepted += size
            else:
                why = status if isinstance(status, str) else f"status {status}"
                errors[why] = errors.get(why, 0) + size
            if len(bases) > 1 or status not in ACCEPTED:
                await publisher.disconnect()

    try:
        await asyncio.gather(*(run(lane) for lane in range(args.connections)))
    finally:
        for publisher in (p for lane in lanes for p in lane):
            await publisher.disconnect()
    last = time.time()
    return {
        "accepted": accepted,
        "publish_errors": errors,
        "kept_per_s": round(accepted / max(last - first_sent, 1e-9), 1),
        "behind_ms": round(1000 * behind[0], 1),
        "first_sent": first_sent,
        "published_at": last,
    }


def subscribe(server: ServerUnderTest, args: argparse.Namespace, rate: float) -> list[Any]:
    """The C subscriber programs on the first `--streams` topics, each waiting for "go"."""
    path = "/topics/u{i}/stream" if server.kind == "nchan" else "/topics/u{i}/messages"
    urls = [base + path for base in server.bases()]
    timeouts = {"connect": 60 + args.streams / 50, "publish": 60 + args.messages / min(rate, 1e3),
                "drain": args.drain_timeout, "idle": args.idle_timeout}  # fmt: skip
    more = ("--messages", "--wait-go", "--hold", *(["--reconnect"] if args.reconnect else []))
    programs = []
    for k, first in enumerate(range(0, args.streams, PER_PROGRAM)):
        count = min(PER_PROGRAM, args.streams - first)
        where = ("--first", str(first), "--source", f"127.0.0.{11 + k}")
        per_channel = args.messages // args.channels
        programs.append(c_subscribers(urls, count, per_channel, timeouts, *more, *where))
    return programs


def scenario(server_name: str, mode: str, rate: float, args: argparse.Namespace) -> dict[str, Any]:
    row: dict[str, Any] = {"server": server_name, "mode": mode, "rate": rate,
        **{key: getattr(args, key) for key in ("channels", "streams", "messages")}}  # fmt: skip
    if mode == "batch" and server_name.startswith("nchan"):
        return {**row, "status": "skipped", "reason": "nchan has no cross-topic batch"}
    if server_name.startswith("nchan") and (why := Nchan.missing()) is not None:
        return {**row, "status": "skipped", "reason": why}
    topics = str(2 * args.channels + 1000)  # one producer makes every topic: its share is all
    PUSHSVC_ENV.update(PUSHSVC_MAX_STREAMS=str(args.streams + 1000), PUSHSVC_MAX_TOPICS=topics,
                       PUSHSVC_MAX_TOPICS_PER_PUBLISHER=topics)  # fmt: skip
    server = deployment(server_name, args)
    programs: list[JsonLinesChild] = []
    try:
        server.start()
        if server.kind == "nchan":
            row["versions"] = nginx_version()
        if args.pinned:
            for pid in server.pids():
                subprocess.run(["taskset", "-a", "-p", "-c", str(args.server_core), str(pid)],
                               check=True, capture_output=True)  # fmt: skip
        time.sleep(args.settle)
        private = [pid for pid in server.pids() if _command(pid) == "redis-server"]
        pids = [pid for pid in server.pids() if pid not in private]
        rss0, redis0, redis_rss0 = rss_kb(pids), server.redis_used_memory(), rss_kb(private)
        programs = subscribe(server, args, rate)
        opened = [p.record(90 + args.streams / 50, "opened") for p in programs]
        time.sleep(args.settle)  # the connected, idle server settles
        rss_streams = rss_kb(pids)
        clients = [os.getpid(), *(pid for p in programs for pid in p.pids)]
        cpu0, client0, redis_cpu0 = _cpu(pids), _cpu(clients), redis_cpu(server, private)
        for program in programs:
            program.tell(b"go")
        published = asyncio.run(publish(server, mode, args, rate))
        for program in programs:
            program.tell(b"published")
        drained = [p.record(args.drain_timeout + 60, "drained") for p in programs]
        cpu, client_cpu = _cpu(pids) - cpu0, _cpu(clients) - client0
        redis_cpu1 = redis_cpu(server, private)
        time.sleep(args.settle)
        rss_after, redis_after = rss_kb(pids), server.redis_used_memory()
        ended, redis_rss_after = _disconnects(server), rss_kb(private)
        for program in programs:
            program.tell(b"measured")
        results = [p.record(120, "result") for p in programs]
    except (RuntimeError, OSError, KeyError, ValueError, subprocess.SubprocessError) as exc:
        tail = programs[0].stderr_tail() if programs else ""
        return {**row, "status": "error", "reason": f"{exc} {tail}".strip()[-1500:]}
    finally:
        for program in programs:
            program.close()
        _stop(server)
    delivered, n = sum(r["distinct"] for r in results), args.channels
    first_sent, published_at = published.pop("first_sent"), published.pop("published_at")
    done = max(published_at, *(d["all_complete_at"] or d["last_delivery_at"] or 0 for d in drained))
    return {
        **row,
        "status": "ok",
        "ready": sum(o["ready"] for o in opened),
        **published,
        **{key: sum(int(r[key]) for r in results) for key in SUMMED},
        "delivered": delivered,
        "latency_ms": {
            q: _worst([r["latency_ms"][q] for r in results]) for q in ("p50", "p99", "max")
        },
        "stream_errors": _summed([d["stream_errors"] for d in drained]),
        "reconnects": sum(int(d.get("reconnects", 0)) for d in drained),
        "gaps": sum(int(d.get("gaps", 0)) for d in drained),
        "server_disconnects": ended,
        "publish_s": round(published_at - first_sent, 2),
        "deliver_s": round(done - first_sent, 2),
        "cpu_us_per_message": round(1e6 * cpu / delivered, 1) if delivered else None,
        "client_cpu_us_per_message": round(1e6 * client_cpu / delivered, 1) if delivered else None,
        "cpu_ms_per_channel": round(cpu * 1000 / n, 3),
        "redis_cpu_ms_per_channel": _per(redis_cpu0, redis_cpu1, n / 1000, 3),
        "rss_mb": round(rss_after / 1024),
        "kb_per_stream": round((rss_streams - rss0) / max(args.streams, 1), 2),
        "kb_per_topic": round((rss_after - rss_streams) / n, 2),
        "kb_per_channel": round((rss_after - rss0) / n, 2),
        "redis_bytes_per_channel": _per(redis0, redis_after, n, None),
        "private_redis_rss_kb_per_channel": _per(
            redis_rss0, redis_rss_after if private else None, n, 2
        ),
    }


def _worst(values: list[float | None]) -> float | None:
    return max((v for v in values if v is not None), default=None)


def _per(before: float | None, after: float | None, n: float, digits: int | None) -> Any:
    """(after - before) / n, rounded; None without either."""
    return None if before is None or after is None else round((after - before) / n, digits)


def exact(row: dict[str, Any]) -> bool:
    return (
        row.get("status") == "ok"
        and row["ready"] == row["streams"]
        and row["accepted"] == row["messages"]
        and row["received"] == row["expected"]
        and (row["missing"] == row["duplicates"] == row["out_of_order"] == row["unexpected"] == 0)
    )


COLUMNS: list[Column] = [
    ("server", 18, "server"), ("mode", 6, "mode"), ("N", 6, "channels"), ("S", 6, "streams"),
    ("M", 6, "messages"), ("R/s", 6, "rate"), ("kept/s", 7, "kept_per_s"),
    ("behind", 7, "behind_ms"), ("recv", 6, "received"), ("miss", 5, "missing"),
    ("dup", 4, "duplicates"), ("ooo", 4, "out_of_order"),
    ("p50ms", 7, lambda r: r["latency_ms"]["p50"]), ("p99ms", 7, lambda r: r["latency_ms"]["p99"]),
    ("µs/msg", 7, "cpu_us_per_message"), ("cli µs", 7, "client_cpu_us_per_message"),
    ("kB/stream", 9, "kb_per_stream"), ("kB/topic", 8, "kb_per_topic"),
    ("KB/chan", 8, "kb_per_channel"), ("redis B/ch", 10, "redis_bytes_per_channel"),
    ("publish s", 9, "publish_s"), ("deliver s", 9, "deliver_s"),
]  # fmt: skip


def _parser() -> argparse.ArgumentParser:
    parser = common_parser(__doc__ or "", smoke="N=200, M=400 at 400/s")
    add = parser.add_argument
    add("--scale", action="store_true", help="the 100,000-channel runs' defaults (see above)")
    add("--servers", type=comma_list, help="default pushsvc,nchan (--scale: pushsvc-memory)")
    add("--modes", type=comma_list, help="single, batch")
    add("--rate", type=comma_list, help="messages/s, e.g. 1000,10000, or max")
    add("--channels", "-n", type=int)
    add("--streams", type=int, help="how many of the topics have a stream (default: all)")
    add("--messages", "-m", type=int, help="a multiple of --channels (default: --channels)")
    add("--connections", type=int, help="keep-alive publisher connections")
    add("--batch", type=int, help="messages per cross-topic batch")
    add("--rounds", type=int, default=1, help="the servers take turns within each")
    add("--before-src", default=None, metavar="DIR", help="another tree's src/: pushsvc-before")
    add("--heartbeat", type=int, default=15, metavar="S",
        help="keep-alive comment on a stream idle S seconds (pushsvc's --heartbeat, nchan's "
        "ping interval); default pushsvc's own 15")  # fmt: skip
    add("--reconnect", action="store_true", default=None, help="streams come back when ended")
    add("--no-pin", action="store_true", default=None, help="leave the cores to the kernel")
    add("--server-core", type=int, default=1)
    add("--client-core", type=int, default=0)
    add("--settle", type=float, default=2.0)
    add("--post-timeout", type=float, default=300.0)
    add("--drain-timeout", type=float)
    add("--idle-timeout", type=float)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    for key, value in PRESETS["scale" if args.scale else "personal"].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if args.smoke:
        args.channels, args.messages, args.rate, args.settle = 200, 400, ["400"], 0.3
    args.messages = args.messages or args.channels
    args.streams = min(args.streams or args.channels, args.channels)
    if args.messages % args.channels:
        raise SystemExit("--messages must be a multiple of --channels")
    servers = args.servers or ["pushsvc", "nchan", *(["pushsvc-before"] if args.before_src else [])]
    if "pushsvc-before" in servers and not args.before_src:
        raise SystemExit("pushsvc-before needs --before-src")
    rates = [math.inf if rate == "max" else float(rate) for rate in args.rate]
    if bad := set(args.modes) - set(MODES):
        raise SystemExit(f"bad mode {bad}: {' or '.join(MODES)}")
    report = Report(COLUMNS, json=args.json, ident=6)
    report.say(f"# {machine()}, open files {raise_fd_limit()}")
    # A machine without both cores (CI) runs unpinned, and says so.
    cores = {args.server_core, args.client_core}
    args.pinned = not args.no_pin and cores <= os.sched_getaffinity(0)
    if args.pinned:
        os.sched_setaffinity(0, {args.client_core})  # the C subscribers inherit it
    else:
        report.say(f"# not pinned to cores {args.server_core} and {args.client_core}")
    report.header()
    failed = False
    for round_ in range(1, args.rounds + 1):
        for mode in args.modes:
            for rate in rates:
                for server in servers:
                    row = scenario(server, mode, rate, args)
                    row["round"], row["pinned"] = round_, args.pinned
                    report.row(row)
                    failed |= row["status"] == "error" or (
                        (args.smoke or args.check) and row["status"] == "ok" and not exact(row)
                    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
