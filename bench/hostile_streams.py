"""Streams that never read, against `pushsvc serve`, beside a legitimate producer and subscriber.

Two attacks, each on a fresh `pushsvc serve --tick 0`, or with `--redis` on a fresh `pushsvc web
--tick 0` beside a `pushsvc aggregate` on a redis-server of the benchmark's own (the web
process's `--max-stream-buffer`,
`--stream-buffer-budget` and `--slow-client-timeout` as given here; the server's defaults
otherwise):

* **replays**: the history is filled (`--history` updates of about 1.4 kB, in a history
  with room for twice as many), then `--replays` streams from one
  address (127.0.0.1; the default `--max-streams-per-ip` lets 256 in) each ask for all of it
  (`Last-Event-ID` = the oldest id) and never read;
* **live**: one stream that never reads while `--batches` batches of `--batch` events are
  posted to its topic, one after the other.

A control runs the live attack's batches with no attacker: what the batches alone cost the
legitimate producer's latency (one process aggregates them).

Throughout, a legitimate producer posts two events every 50 ms to a topic of its own, and a
legitimate subscriber (from 127.0.0.2: another address) reads them. Per attack: the
legitimate POSTs' p50 and p99, the updates the legitimate subscriber missed or got out of
order (0 expected), the server's RSS growth from the attack's start (peak, sampled every
100 ms) against the budget, the peak of `pushsvc_stream_pending_bytes`, the never-readers
ended as slow (`pushsvc_slow_disconnects_total`) and the seconds from the attack's start to
each such disconnect (first, median, last; sampled every 100 ms).

    python -m bench.hostile_streams              # full scale: 256 replays, 30 batches of 10,000
    python -m bench.hostile_streams --scale 0.25 --slow-client-timeout 5s
    python -m bench.hostile_streams --redis      # the same against a web process on Redis

`--scale` scales how many replays and batches, not their sizes: a replay or a batch must
outgrow the kernel's socket buffers (up to 4 MiB a connection on Linux) to test anything.

Standalone: it starts the server and speaks HTTP itself (nothing from tests/).
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.procfs import rss_kb

from bench.standalone import SRC, serving

MIB = 1 << 20


@dataclass
class Server:
    proc: subprocess.Popen[str]
    port: int


@contextmanager
def serve(args: list[str], src: str, redis: bool = False) -> Iterator[Server]:
    """`pushsvc serve` on a free port, or with `redis` a `pushsvc web` beside a `pushsvc
    aggregate` on a redis-server of its own; stopped on the way out."""
    # The aggregator keeps the history and takes the batches: the web's settings for them,
    # given through the environment to both.
    settings = {
        "PUSHSVC_" + flag[2:].replace("-", "_").upper(): value
        for flag, value in zip(args[::2], args[1::2], strict=True)
        if flag in ("--history", "--max-batch")
    }
    with serving(Path(src), redis=redis, args=args, settings=settings) as (proc, port):
        yield Server(proc, port)


def http_request(
    port: int, method: str, path: str, body: Any = None, timeout: float = 60
) -> tuple[int, bytes]:
    """`body`: JSON to encode, or bytes encoded already (a batch posted again and again: its
    encoding, ~10 ms of this process's GIL for 10,000 events, would delay the legitimate
    producer's thread and count as the server's latency)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
        headers = {} if data is None else {"Content-Type": "application/json"}
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def metric(port: int, name: str) -> float:
    text = http_request(port, "GET", "/metrics")[1].decode()
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(found[1]) if found else 0.0


def never_reader(port: int, path: str, last_event_id: str | None = None) -> socket.socket:
    """A client that asks for a stream and never reads it, with a tiny receive buffer."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    resume = f"Last-Event-ID: {last_event_id}\r\n" if last_event_id else ""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n{resume}\r\n".encode())
    return sock


class Legitimate:
    """A producer posting two events every 50 ms to its topic, and a subscriber reading them
    from another address, noting each update's value: every one, in order, is the promise."""

    def __init__(self, port: int, topic: str) -> None:
        self.port, self.topic = port, topic
        self.latencies: list[float] = []
        self.sent = 0
        self.received: list[float] = []
        self._stop = threading.Event()
        self._sock = socket.create_connection(("127.0.0.1", port), source_address=("127.0.0.2", 0))
        self._sock.sendall(f"GET /topics/{topic}/stream HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._producer = threading.Thread(target=self._produce, daemon=True)

    def start(self) -> Legitimate:
        self._reader.start()
        self._producer.start()
        return self

    def _produce(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        while not self._stop.wait(0.05):
            events = [{"value": self.sent}, {"value": self.sent + 1}]
            started = time.monotonic()
            conn.request(
                "POST",
                f"/topics/{self.topic}/events",
                body=json.dumps(events).encode(),
                headers={"Content-Type": "application/json"},
            )
            response = conn.getresponse()
            response.read()
            self.latencies.append(time.monotonic() - started)
            if response.status == 202:
                self.sent += 2
        conn.close()

    def _read(self) -> None:
        buffer = b""
        try:
            while True:
                chunk = self._sock.recv(1 << 16)
                if not chunk:
                    return
                buffer += chunk
                *messages, buffer = buffer.split(b"\n\n")
                for message in messages:
                    if b"event: stats" in message:
                        data = message.split(b"data: ", 1)[1].split(b"\n", 1)[0]
                        self.received.append(json.loads(data)["event"]["value"])
        except OSError:
            return

    def stop(self) -> dict[str, object]:
        self._stop.set()
        self._producer.join(60)
        # The aggregator may be seconds behind the batches when they stop: missed is missed
        # only once it has caught up.
        deadline = time.monotonic() + 60
        while len(self.received) < self.sent and time.monotonic() < deadline:
            time.sleep(0.05)
        self._sock.close()
        expected = [float(v) for v in range(self.sent)]
        lat = sorted(self.latencies)
        return {
            "posts": len(lat),
            "post_p50_ms": round(1000 * lat[len(lat) // 2], 1) if lat else None,
            "post_p99_ms": round(1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))], 1)
            if lat
            else None,
            "legit_missed": len(set(expected) - set(self.received)),
            "legit_in_order": self.received[: len(expected)] == expected,
        }


class Watch:
    """Samples the server every 100 ms: RSS, pending bytes, and when each slow disconnect came."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.start_s = time.monotonic()
        self.rss0 = rss_kb([server.proc.pid]) * 1024
        self.slow0 = metric(server.port, "pushsvc_slow_disconnects_total")
        self.peak_rss = self.rss0
        self.peak_pending = 0.0
        self.disconnects: list[float] = []

    def sample(self) -> None:
        port = self.server.port
        self.peak_rss = max(self.peak_rss, rss_kb([self.server.proc.pid]) * 1024)
        self.peak_pending = max(self.peak_pending, metric(port, "pushsvc_stream_pending_bytes"))
        slow = int(metric(port, "pushsvc_slow_disconnects_total") - self.slow0)
        at = time.monotonic() - self.start_s
        self.disconnects += [at] * (slow - len(self.disconnects))

    def until(self, done: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.disconnects) < done and time.monotonic() < deadline:
            self.sample()
            time.sleep(0.1)
        self.sample()

    def row(self, attackers: int, budget: int) -> dict[str, object]:
        times = self.disconnects
        growth = self.peak_rss - self.rss0
        return {
            "attackers": attackers,
            "slow": len(times),
            "first_s": round(times[0], 1) if times else None,
            "median_s": round(statistics.median(times), 1) if times else None,
            "last_s": round(times[-1], 1) if times else None,
            "rss_growth_mb": round(growth / MIB, 1),
            "of_budget": round(growth / budget, 2),
            "peak_pending_mb": round(self.peak_pending / MIB, 2),
        }


def server_args(args: argparse.Namespace) -> list[str]:
    out = ["--history", str(args.history), "--max-batch", str(max(args.batch, 10_000))]
    for flag in ("max_stream_buffer", "stream_buffer_budget", "slow_client_timeout"):
        value = getattr(args, flag)
        if value is not None:
            out += [f"--{flag.replace('_', '-')}", str(value)]
    return out


def timeout_s(args: argparse.Namespace) -> float:
    given = args.slow_client_timeout or "30s"
    number = float(re.sub(r"[a-z]+$", "", given))
    return number / 1000 if given.endswith("ms") else number


def replays(args: argparse.Namespace, budget: int) -> dict[str, object]:
    count = max(1, round(args.replays * args.scale))
    history = args.history
    # Twice the room: the legitimate producer's updates must not trim the oldest replayed.
    with serve([*server_args(args), "--history", str(2 * history)], args.src, args.redis) as server:
        port = server.port
        tags = {f"k{i}": "v" * 100 for i in range(8)}  # ~1.4 kB an update: 14 MB a replay
        for first in range(0, history, 500):
            events = [{"value": first + i, "tags": tags} for i in range(min(500, history - first))]
            assert http_request(port, "POST", "/topics/kept/events", events)[0] == 202
        # A 202 means logged: the fill's updates follow. The oldest is read, and the legitimate
        # producer started, once the last is published, so that its latencies are the
        # attack's, not the fill's.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            newest = json.loads(http_request(port, "GET", "/topics/kept/history?limit=1")[1])
            if newest["updates"] and newest["updates"][-1]["event"]["value"] == history - 1:
                break
            time.sleep(0.1)
        page = json.loads(http_request(port, "GET", "/topics/kept/history?since=0&limit=1")[1])
        oldest = page["updates"][0]["id"]
        legit = Legitimate(port, "legit").start()
        time.sleep(0.5)
        watch = Watch(server)
        attackers = [never_reader(port, "/topics/kept/stream", oldest) for _ in range(count)]
        watch.until(count, timeout_s(args) + 30)
        row = {
            "attack": "replays",
            "server": "web on Redis" if args.redis else "serve",
            "history": history,
            **watch.row(count, budget),
        }
        row.update(legit.stop())
        for sock in attackers:
            sock.close()
    return row


def live(args: argparse.Namespace, budget: int, *, attacked: bool = True) -> dict[str, object]:
    batch = args.batch
    batches = max(1, round(args.batches * args.scale))
    with serve(server_args(args), args.src, args.redis) as server:
        port = server.port
        events = json.dumps([{"value": i} for i in range(batch)]).encode()
        for _ in range(2):  # the history fills first: the server's own growth is not counted
            http_request(port, "POST", "/topics/big/events", events)
        legit = Legitimate(port, "legit").start()
        time.sleep(0.5)
        watch = Watch(server)
        attacker = never_reader(port, "/topics/big/stream") if attacked else None
        for _ in range(batches):
            assert http_request(port, "POST", "/topics/big/events", events)[0] == 202
            watch.sample()
        watch.until(1 if attacked else 0, timeout_s(args) + 30)
        row = {
            "attack": "live" if attacked else "control",
            "server": "web on Redis" if args.redis else "serve",
            "batch": batch,
            "batches": batches,
            **watch.row(1 if attacked else 0, budget),
        }
        row.update(legit.stop())
        if attacker is not None:
            attacker.close()
    return row


COLUMNS = [
    ("attack", 7),
    ("attackers", 9),
    ("slow", 4),
    ("first_s", 7),
    ("median_s", 8),
    ("last_s", 6),
    ("rss_growth_mb", 13),
    ("of_budget", 9),
    ("peak_pending_mb", 15),
    ("post_p50_ms", 11),
    ("post_p99_ms", 11),
    ("legit_missed", 12),
    ("legit_in_order", 14),
]


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    cli.add_argument(
        "--scale", type=float, default=1.0,
        help="of the replays' and the batches' counts (not their sizes: a small replay or batch "
        "would fit in the kernel's socket buffers and test nothing)",
    )  # fmt: skip
    cli.add_argument("--replays", type=int, default=256)
    cli.add_argument("--history", type=int, default=10_000)
    cli.add_argument("--batch", type=int, default=10_000)
    cli.add_argument("--batches", type=int, default=30)
    cli.add_argument("--max-stream-buffer", type=int)
    cli.add_argument("--stream-buffer-budget", type=int)
    cli.add_argument("--slow-client-timeout", help="e.g. 5s (the server's default: 30s)")
    cli.add_argument(
        "--attack", choices=("replays", "live", "control"), action="append",
        help="repeatable; default: all three (control: the live attack's batches, no attacker)",
    )  # fmt: skip
    cli.add_argument("--src", default=str(SRC), help="the tree's src/ to run pushsvc from")
    cli.add_argument(
        "--redis", action="store_true",
        help="attack a `pushsvc web` beside a `pushsvc aggregate` on a redis-server of its own",
    )  # fmt: skip
    cli.add_argument("--json", action="store_true", help="JSON lines on stdout")
    args = cli.parse_args(argv)
    budget = args.stream_buffer_budget or 256 * MIB
    table = sys.stderr if args.json else sys.stdout
    print(" ".join(f"{name:>{width}}" for name, width in COLUMNS), file=table, flush=True)
    for attack in args.attack or ["replays", "live", "control"]:
        if attack == "replays":
            row = replays(args, budget)
        else:
            row = live(args, budget, attacked=attack == "live")
        cells = ["-" if row.get(name) is None else str(row[name]) for name, _ in COLUMNS]
        line = " ".join(f"{c:>{w}}" for c, (_, w) in zip(cells, COLUMNS, strict=True))
        print(line, file=table, flush=True)
        if args.json:
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
