"""What open, idle streams cost a server, and how soon it lets go of streams whose clients left.

For each server tree (`--pushsvc-src`, repeatable; this tree's by default), in turn, `--rounds`
times: start `pushsvc serve --tick 0 --heartbeat 600s` (no heartbeat falls due: idle means
nothing is written) — with `--redis`, `pushsvc web` on a redis-server of its own instead,
the web process alone measured — open N streams of one topic on raw sockets, each read up to
its snapshot, and wait until the server counts them all (`pushsvc_subscribers`). With
`--endpoints stream,messages`, the topic's `/stream` and `/messages` take turns too (each
`/messages` stream read up to its first message, a `retry:`). Then, after 2 s to settle:

* idle CPU: the server's user + system CPU seconds (/proc/PID/stat) over `--idle` seconds in
  which nothing is published, read or written, per stream and second; its RSS and RSS per
  stream (over the RSS before the first connect);
* release: close every stream, half with a FIN and half with a reset (SO_LINGER 0), and poll
  `/metrics` every 20 ms until `pushsvc_subscribers` is 0: the seconds from the first close,
  or `-` when streams are still held after `--release-timeout` (their count in `left`).

    python -m bench.idle_streams --streams 10000 --idle 30 --rounds 3 \\
        --pushsvc-src /path/to/before/src --pushsvc-src src [--redis]
    python -m bench.idle_streams --streams 10000 --idle 10 --rounds 3 --endpoints stream,messages
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from harness.live import PushsvcProcess
from harness.procfs import cpu_seconds, rss_kb
from harness.raw_streams import MESSAGES_HEAD, close_cleanly, open_streams, raise_fd_limit, reset
from harness.redis_server import RedisServer

from bench.common import Column, Report, metric, parser
from bench.common import machine as describe_machine
from pushsvc.core.lists import comma_list

REPO = Path(__file__).resolve().parents[1]
TOPIC = "idle"
SETTLE_S = 2.0

COLUMNS: list[Column] = [
    ("src", 28, lambda row: row["src"][-28:]),
    ("endpoint", 8, "endpoint"),
    ("round", 5, "round"),
    ("streams", 7, "streams"),
    ("open s", 6, "open_s"),
    ("idle s", 6, "idle_s"),
    ("cpu s", 6, "cpu_s"),
    ("cpu µs/stream/s", 15, "cpu_us_per_stream_s"),
    ("rss MB", 6, "rss_mb"),
    ("kB/stream", 9, "rss_kb_per_stream"),
    ("release s", 9, "release_s"),
    ("left", 5, "left"),
]


def _subscribers(port: int) -> int:
    value = metric(port, "pushsvc_subscribers")
    return int(value) if value is not None else -1


def run(src: str, endpoint: str, round_: int, args: Any) -> dict[str, object]:
    row: dict[str, object] = {
        "src": src, "endpoint": endpoint, "round": round_, "streams": args.streams,
    }  # fmt: skip
    env = {
        "PYTHONPATH": str(Path(src).resolve()),
        "PUSHSVC_MAX_STREAMS_PER_IP": str(args.streams + 100),
        "PUSHSVC_MAX_STREAMS": str(args.streams + 100),
        "PUSHSVC_LOG_FORMAT": "text",
    }
    redis = RedisServer().start() if args.redis else None
    command: tuple[str, ...]
    if redis is not None:
        command = ("web", "--redis-url", redis.url, "--prefix", f"idle{round_}")
    else:
        command = ("serve", "--tick", "0")
    try:
        proc = PushsvcProcess(*command, "--heartbeat", "600s", env=env).start()
    except BaseException:
        if redis is not None:
            redis.stop()
        raise
    streams = []
    try:
        rss_before = rss_kb([proc.pid])
        started = time.monotonic()
        first = {"first": MESSAGES_HEAD} if endpoint == "messages" else {}
        path = f"/topics/{TOPIC}/{endpoint}"
        streams = open_streams(proc.port, path, args.streams, timeout=300, **first)
        row["open_s"] = round(time.monotonic() - started, 1)
        deadline = time.monotonic() + 30
        while _subscribers(proc.port) != args.streams:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server counts {_subscribers(proc.port)} streams")
            time.sleep(0.1)
        time.sleep(SETTLE_S)
        cpu0, wall0 = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(args.idle)
        cpu1, wall1 = cpu_seconds(proc.pid), time.monotonic()
        assert cpu0 is not None and cpu1 is not None
        idle = wall1 - wall0
        rss = rss_kb([proc.pid])
        row.update(
            idle_s=round(idle, 1),
            cpu_s=round(cpu1 - cpu0, 3),
            cpu_us_per_stream_s=round((cpu1 - cpu0) / idle / args.streams * 1e6, 3),
            rss_mb=round(rss / 1024, 1),
            rss_kb_per_stream=round((rss - rss_before) / args.streams, 2),
        )
        closed_at = time.monotonic()
        for index, sock in enumerate(streams):
            (close_cleanly if index % 2 else reset)(sock)
        streams = []
        row["close_s"] = round(time.monotonic() - closed_at, 3)
        left = _subscribers(proc.port)
        while left and time.monotonic() - closed_at < args.release_timeout:
            time.sleep(0.02)
            left = _subscribers(proc.port)
        row["release_s"] = None if left else round(time.monotonic() - closed_at, 3)
        row["left"] = left
    finally:
        for sock in streams:
            sock.close()
        proc.stop(30)
        if redis is not None:
            redis.stop()
    return row


def main(argv: list[str] | None = None) -> int:
    cli = parser(__doc__ or "")
    cli.add_argument("--streams", "-n", type=int, default=10_000)
    cli.add_argument("--idle", type=float, default=30.0, help="seconds of idleness measured")
    cli.add_argument("--rounds", type=int, default=1)
    cli.add_argument("--release-timeout", type=float, default=10.0)
    cli.add_argument(
        "--redis", action="store_true",
        help="`pushsvc web` on a redis-server of its own (default: `pushsvc serve`, embedded)",
    )  # fmt: skip
    cli.add_argument(
        "--endpoints", type=comma_list, default=["stream"],
        help="the topic's stream endpoints measured in turn: stream (default), messages",
    )  # fmt: skip
    cli.add_argument(
        "--pushsvc-src", action="append", default=[],
        help="a tree's src/ to run pushsvc from (repeat: they take turns within each round)",
    )  # fmt: skip
    args = cli.parse_args(argv)
    if not set(args.endpoints) <= {"stream", "messages"}:
        raise SystemExit(f"bad --endpoints {args.endpoints}: stream, messages")
    srcs = args.pushsvc_src or [str(REPO / "src")]
    # Ours and, inherited, the server's: a socket each per stream.
    raise_fd_limit(args.streams + 1024)
    report = Report(COLUMNS, json=args.json, ident=2)
    report.say(f"# {describe_machine('gevent')}")
    report.header()
    for round_ in range(1, args.rounds + 1):
        for src in srcs:
            for endpoint in args.endpoints:
                try:
                    report.row(run(src, endpoint, round_, args))
                except Exception as exc:  # a row that failed says why; the others still run
                    report.row({"src": src, "endpoint": endpoint, "round": round_,
                                "status": "failed", "reason": str(exc)})  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
