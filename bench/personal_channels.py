"""A channel per user, side by side with nginx + nchan: N channels (`/topics/u{i}/messages`),
one subscriber each, fed M messages at R a second.

The shape of "your order shipped": every message goes to one subscriber. Each server runs in
turn, pinned to its own core (`--server-core`, with `taskset -a`: every thread of every
process), while this driver, its publisher and the C subscribers (bench/loadgen/sse_clients.c
`{i}` in the path: stream i reads channel u{i}) run on the other (`--client-core`). Message k
goes to channel u{k mod N} with value k div N, the 100-byte body of the relay benchmark
(`bench/loadgen/kinds.message_body`), the same bytes on both servers.

Publishing modes:

* `single` — one POST a message (`POST /topics/u{j}/events` with `{"type": "message",
  "data": …}`; nchan: the body itself to its publisher location), paced at R/s over
  `--connections` keep-alive connections (message k due at k/R, on connection k mod C);
* `batch` — the cross-topic batch (`POST /events`, a JSON array of `--batch` messages, each
  naming its topic), batch b due at b·B/R; pushsvc only: nchan has none.

`tags.sent` is each POST's send time; latency is the subscriber's read time minus it (the
C client, nearest rank). `kept/s` is messages accepted ÷ (last answer - first send): a
server that answers late makes the paced publisher fall behind. `µs/msg` is the server's
user + system CPU from /proc (every process) from the first publish to the end of the drain,
÷ messages delivered (publish and delivery). `KB/chan` is the server's RSS after every
channel had its messages, less its RSS before the subscribers connected, ÷ N: a connection,
a subscription, a channel and its history.

Keep-alives: an idle stream gets a comment line every `--heartbeat` seconds on both servers
(pushsvc's default 15 s; nchan sends none unless asked, so it is asked for the same). With
the streams opened a few seconds before publishing, most of them are due one while messages
flow: the CPU per message counts them on both.

    python -m bench.personal_channels                      # 10,000 channels, 1,000/s, single
    python -m bench.personal_channels --modes single,batch --rate 1000,10000 --rounds 3 --json
    python -m bench.personal_channels --before-src /tmp/before/src   # adds `pushsvc-before`

`--before-src` adds a server `pushsvc-before`: `pushsvc serve` from another tree's src/ (a
before/after in interleaved rounds). `--smoke`: 200 channels, 400 messages at 400/s; exit 1
unless every message arrived once, in order.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import time
from typing import Any

from harness.procfs import cpu_seconds, rss_kb

from bench.child import JsonLinesChild, c_subscribers
from bench.common import Report, machine
from bench.common import parser as common_parser
from bench.loadgen.kinds import message_body
from bench.loadgen.process import raise_fd_limit
from bench.loadgen.publisher import Publisher
from bench.servers import Nchan, PushsvcServe, ServerUnderTest, nginx_version
from pushsvc.core.lists import comma_list

SERVERS = ("pushsvc", "nchan")
MODES = ("single", "batch")
COUNTS = ("expected", "received", "missing", "duplicates", "out_of_order", "unexpected",
          "latency_ms")  # fmt: skip
ACCEPTED = frozenset({201, 202})
"""nchan answers 201 to a publish with subscribers (202 without); pushsvc 202."""


def deployment(
    server: str, channels: int, before_src: str | None, heartbeat_s: int
) -> ServerUnderTest:
    if server == "nchan":
        nchan = Nchan(1, connections=2 * channels + 100)
        nchan.ping_s = heartbeat_s
        return nchan
    pushsvc = PushsvcServe(extra_args=("--heartbeat", f"{heartbeat_s}s"))
    pushsvc.name = server
    if server == "pushsvc-before":
        assert before_src is not None
        pushsvc.env["PYTHONPATH"] = os.path.abspath(before_src)
    return pushsvc


def pin(pids: list[int], core: int) -> None:
    """Every thread of `pids` onto `core`."""
    for pid in pids:
        subprocess.run(["taskset", "-a", "-p", "-c", str(core), str(pid)],
                       check=True, capture_output=True)  # fmt: skip


def _cpu(pids: list[int]) -> float:
    return sum(cpu for pid in pids if (cpu := cpu_seconds(pid)) is not None)


def single_body(server: str, channel: int, value: int, sent: float) -> tuple[str, bytes]:
    payload = message_body(value, sent)
    if server == "nchan":
        return f"/topics/u{channel}/events", payload
    return f"/topics/u{channel}/events", b'{"type":"message","data":%s}' % payload


def batch_body(first: int, size: int, channels: int, sent: float) -> bytes:
    items = (
        b'{"topic":"u%d","type":"message","data":%s}'
        % (k % channels, message_body(k // channels, sent))
        for k in range(first, first + size)
    )
    return b"[" + b",".join(items) + b"]"


async def publish(
    base: str, server: str, mode: str, args: argparse.Namespace, rate: float
) -> dict[str, Any]:
    """Publish every message paced at `rate`/s; what was accepted, when, and how late the
    publisher ran behind its schedule."""
    host, port = base.removeprefix("http://").split(":")
    step = args.batch if mode == "batch" else 1
    posts = list(range(0, args.messages, step))
    connections = [
        Publisher(host, int(port), "/", ACCEPTED, quickack=True) for _ in range(args.connections)
    ]
    accepted, errors, behind = 0, {}, [0.0]
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05
    first_sent = time.time() + 0.05

    async def run(lane: int) -> None:
        nonlocal accepted
        publisher = connections[lane]
        for first in posts[lane :: args.connections]:
            due = start + first / rate
            if (delay := due - loop.time()) > 0:
                await asyncio.sleep(delay)
            else:
                behind[0] = max(behind[0], -delay)
            size = min(step, args.messages - first)
            sent = time.time()
            if mode == "batch":
                path, body = "/events", batch_body(first, size, args.channels, sent)
            else:
                channel, value = first % args.channels, first // args.channels
                path, body = single_body(server, channel, value, sent)
            try:
                status = await asyncio.wait_for(publisher.post(path, body), args.post_timeout)
            except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + size
                await publisher.disconnect()
                continue
            if status in ACCEPTED:
                accepted += size
            else:
                errors[f"status {status}"] = errors.get(f"status {status}", 0) + size

    try:
        await asyncio.gather(*(run(lane) for lane in range(args.connections)))
    finally:
        for publisher in connections:
            await publisher.disconnect()
    last = time.time()
    return {
        "accepted": accepted,
        "publish_errors": errors,
        "kept_per_s": round(accepted / max(last - first_sent, 1e-9), 1),
        "behind_ms": round(1000 * behind[0], 1),
    }


def scenario(server: str, mode: str, rate: float, args: argparse.Namespace) -> dict[str, Any]:
    row: dict[str, Any] = {"server": server, "mode": mode, "channels": args.channels,
                           "messages": args.messages, "rate": rate}  # fmt: skip
    if mode == "batch" and server == "nchan":
        return {**row, "status": "skipped", "reason": "nchan has no cross-topic batch"}
    if server == "nchan" and (why := Nchan.missing()) is not None:
        return {**row, "status": "skipped", "reason": why}
    if args.messages % args.channels:
        raise SystemExit("--messages must be a multiple of --channels")
    per_channel = args.messages // args.channels
    target = deployment(server, args.channels, args.before_src, args.heartbeat)
    subscribers: JsonLinesChild | None = None
    try:
        target.start()
        if server == "nchan":
            row["versions"] = nginx_version()
        if args.pinned:
            pin(target.pids(), args.server_core)
        time.sleep(args.settle)
        pids = target.pids()
        rss_before = rss_kb(pids)
        stream = (
            f"{target.bases()[0]}/topics/u{{i}}/stream"
            if server == "nchan"
            else f"{target.bases()[0]}/topics/u{{i}}/messages"
        )
        timeouts = {"connect": 60 + args.channels / 200, "publish": 60 + args.messages / rate,
                    "drain": args.drain_timeout, "idle": args.idle_timeout}  # fmt: skip
        subscribers = c_subscribers(
            stream, args.channels, per_channel, timeouts,
            "--wait-go", "--hold", "--messages",
        )  # fmt: skip
        opened = subscribers.record(timeout=timeouts["connect"] + 30, phase="opened")
        time.sleep(args.settle)  # the connected, idle server settles
        rss_idle = rss_kb(pids)
        cpu_before, client_before = _cpu(pids), _cpu([os.getpid(), *subscribers.pids])
        subscribers.tell(b"go")
        published = asyncio.run(publish(target.bases()[0], server, mode, args, rate))
        subscribers.tell(b"published")
        drained = subscribers.record(timeout=timeouts["drain"] + 60, phase="drained")
        cpu = _cpu(pids) - cpu_before
        client_cpu = _cpu([os.getpid(), *subscribers.pids]) - client_before
        time.sleep(args.settle)
        rss_after = rss_kb(pids)
        subscribers.tell(b"measured")
        result = subscribers.record(timeout=60, phase="result")
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        tail = subscribers.stderr_tail() if subscribers is not None else ""
        return {**row, "status": "error", "reason": f"{exc} {tail}".strip()[-1500:]}
    finally:
        if subscribers is not None:
            subscribers.close()
        with contextlib.suppress(Exception):
            target.stop()
    delivered = result["distinct"]
    return {
        **row,
        "status": "ok",
        "ready": opened["ready"],
        **published,
        **{key: result[key] for key in COUNTS},
        "stream_errors": drained["stream_errors"],
        "cpu_us_per_message": round(1e6 * cpu / delivered, 1) if delivered else None,
        "client_cpu_us_per_message": round(1e6 * client_cpu / delivered, 1) if delivered else None,
        "kb_per_channel_idle": round((rss_idle - rss_before) / args.channels, 2),
        "kb_per_channel": round((rss_after - rss_before) / args.channels, 2),
    }


def exact(row: dict[str, Any]) -> bool:
    return (
        row.get("status") == "ok"
        and row["received"] == row["expected"] == row["accepted"]
        and (row["missing"] == row["duplicates"] == row["out_of_order"] == row["unexpected"] == 0)
    )


COLUMNS = (
    ("server", 15, "server"), ("mode", 6, "mode"), ("N", 6, "channels"), ("M", 6, "messages"),
    ("R/s", 6, "rate"), ("kept/s", 7, "kept_per_s"), ("behind", 7, "behind_ms"),
    ("recv", 6, "received"), ("miss", 5, "missing"), ("dup", 4, "duplicates"),
    ("ooo", 4, "out_of_order"),
    ("p50ms", 7, lambda r: r["latency_ms"]["p50"]), ("p99ms", 7, lambda r: r["latency_ms"]["p99"]),
    ("maxms", 7, lambda r: r["latency_ms"]["max"]), ("µs/msg", 7, "cpu_us_per_message"),
    ("cli µs", 7, "client_cpu_us_per_message"), ("KB/idle", 8, "kb_per_channel_idle"),
    ("KB/chan", 8, "kb_per_channel"),
)  # fmt: skip


def _parser() -> argparse.ArgumentParser:
    parser = common_parser(__doc__, smoke="N=200, M=400 at 400/s")
    add = parser.add_argument
    add("--servers", type=comma_list, default=None,
        help="pushsvc, nchan (default both); pushsvc-before with --before-src")  # fmt: skip
    add("--modes", type=comma_list, default=["single"], help="single, batch")
    add("--rate", type=comma_list, default=None, help="messages/s, e.g. 1000,10000")
    add("--channels", "-n", type=int, default=10_000)
    add("--messages", "-m", type=int, default=10_000, help="a multiple of --channels")
    add("--connections", type=int, default=32, help="keep-alive publisher connections")
    add("--batch", type=int, default=100, help="messages per cross-topic batch")
    add("--rounds", type=int, default=1, help="the servers take turns within each")
    add("--before-src", default=None, metavar="DIR", help="another tree's src/: pushsvc-before")
    add("--heartbeat", type=int, default=15, metavar="S",
        help="keep-alive comment on a stream idle S seconds, on both servers (pushsvc's "
        "--heartbeat, nchan's ping interval); default pushsvc's own 15")  # fmt: skip
    add("--server-core", type=int, default=1)
    add("--client-core", type=int, default=0)
    add("--settle", type=float, default=2.0)
    add("--post-timeout", type=float, default=30.0)
    add("--drain-timeout", type=float, default=30.0)
    add("--idle-timeout", type=float, default=5.0)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.smoke:
        args.channels, args.messages, args.rate, args.settle = 200, 400, ["400"], 0.3
    servers = args.servers or [*SERVERS, *(["pushsvc-before"] if args.before_src else [])]
    rates = [float(rate) for rate in args.rate or ["1000"]]
    for name in servers:
        if name not in (*SERVERS, "pushsvc-before") or (
            name == "pushsvc-before" and not args.before_src
        ):
            raise SystemExit(f"bad server {name!r}")
    for mode in args.modes:
        if mode not in MODES:
            raise SystemExit(f"bad mode {mode!r}: {' or '.join(MODES)}")
    raise_fd_limit()
    report = Report(COLUMNS, json=args.json, ident=5)
    report.say(f"# {machine()}")
    # A machine without both cores (CI) runs unpinned, and says so.
    args.pinned = {args.server_core, args.client_core} <= os.sched_getaffinity(0)
    if args.pinned:
        os.sched_setaffinity(0, {args.client_core})  # the C subscribers inherit it
    else:
        report.say(f"# not pinned: cores {args.server_core} and {args.client_core} not both here")
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
