"""A legitimate producer's POST latency while an attacker holds unfinished request bodies
(R.U.D.Y.) at the server's default limits.

One `pushsvc serve` (embedded broker), or with `--redis` a `pushsvc web` beside a `pushsvc
aggregate` on a redis-server of the benchmark's own, runs at its default settings
(`--body-timeout 30s`, and a third of it between a body's pieces, the open-file limit raised to
the hard one). A producer POSTs one event at a time, ~40 a second, on one keep-alive connection
(or with `--fresh` a new connection each), from before the attack to its end: alone for 5 s
(`baseline`), then while two attacker processes keep `--connections` connections each with a
head and a `Content-Length: 100000` it never fulfils: whenever the server closes one, the
attacker opens another at once. The `attacked` phase is the `--seconds` after the attacker's
first 5 s (its connections opening). Reported per phase: the producer's p50/p99/max and failed
POSTs; and the server's RSS before the attack and at its peak (VmHWM), the connections the
server shed (`pushsvc_connections_shed_total`), the attacker's opened and cut-off connections.

    python -m bench.hostile_bodies                               # 20,000 connections
    python -m bench.hostile_bodies --connections 2000 --seconds 10 --json
    python -m bench.hostile_bodies --redis
    python -m bench.hostile_bodies --addresses 1              # one address: its share of waiting

Stand-alone on purpose: the standard library only (nothing from tests/), so it runs
against any tree's `src/` (`--src`).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import multiprocessing
import selectors
import socket
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from harness.procfs import peak_rss_kb, rss_kb

from bench import standalone
from bench.common import metric
from bench.loadgen.process import raise_fd_limit
from bench.standalone import SRC, latency_summary

HEAD = (
    b"POST /topics/attacked/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b'Content-Length: 100000\r\n\r\n{"value": '
)


def attack(
    port: int,
    connections: int,
    sources: list[str],
    until: float,
    counts: multiprocessing.Array,  # type: ignore[valid-type]
) -> None:
    """Keep `connections` unfinished bodies open until `until`, from the `sources` addresses
    by turns, opening a new one for each the server closes (run in a process of its own).
    counts: opened, closed by the server."""
    raise_fd_limit()
    selector = selectors.DefaultSelector()
    opened = closed = 0

    def open_one() -> None:
        nonlocal opened
        sock = socket.socket()
        sock.bind((sources[opened % len(sources)], 0))
        sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            sock.connect(("127.0.0.1", port))
        selector.register(sock, selectors.EVENT_WRITE, "connecting")
        opened += 1

    for _ in range(connections):
        open_one()
    while time.monotonic() < until:
        for key, _ in selector.select(timeout=0.2):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            if key.data == "connecting":
                try:
                    sock.send(HEAD)
                    selector.modify(sock, selectors.EVENT_READ, "held")
                    continue
                except OSError:
                    pass  # refused or reset: counted as cut off below
            else:
                try:
                    if sock.recv(65536):
                        continue  # an answer (408): the close comes next
                except OSError:
                    pass
            selector.unregister(sock)
            sock.close()
            closed += 1
            open_one()
    counts[0], counts[1] = opened, closed


def produce(port: int, until: float, fresh: bool, samples: list[tuple[float, float, bool]]) -> None:
    """POST until `until` (monotonic), keeping (when, latency s, ok) of each: on one
    keep-alive connection (opened again when it breaks) as pushsvc's clients post, or with
    `fresh`, on a new connection each, which waits in the kernel's accept queue behind the
    attacker's."""
    conn: http.client.HTTPConnection | None = None
    while time.monotonic() < until:
        started = time.perf_counter()
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("POST", "/topics/producer/events", b'{"value": 1}', {
                "Content-Type": "application/json"
            })  # fmt: skip
            answer = conn.getresponse()
            answer.read()
            ok = answer.status == 202
        except OSError:
            ok = False
        if fresh or not ok:
            if conn is not None:
                conn.close()
            conn = None
        samples.append((time.monotonic(), time.perf_counter() - started, ok))
        time.sleep(0.02)  # the producer's pace: ~40 posts/s
    if conn is not None:
        conn.close()


def _phase(samples: list[tuple[float, float, bool]], start: float, end: float) -> dict[str, float]:
    """The latency summary of the POSTs that ended between `start` and `end`."""
    within = [(took, ok) for when, took, ok in samples if start <= when < end]
    return latency_summary([took for took, _ in within], sum(not ok for _, ok in within))


def run(
    src: Path, connections: int, seconds: float, redis: bool, fresh: bool, addresses: int
) -> dict[str, object]:
    raise_fd_limit()
    ctx = multiprocessing.get_context("spawn")
    with standalone.serving(src, redis=redis) as (proc, port):
        pid = proc.pid
        # One producer throughout, as a deployment's producers are connected before an
        # attack: its baseline is the 5 s before the attack, its attacked phase the attack's
        # `seconds` once the attacker's connections hold.
        samples: list[tuple[float, float, bool]] = []
        began = time.monotonic()
        attack_at = began + 5
        until = attack_at + 5 + seconds
        producer = threading.Thread(target=produce, args=(port, until, fresh, samples))
        producer.start()
        time.sleep(max(0.0, attack_at - time.monotonic()))
        rss_before = rss_kb([pid])
        # Two attacker processes: one process's open-file limit (often 20,000) holds not
        # quite 20,000 connections of its own.
        shares = [connections // 2, connections - connections // 2]
        # 127.0.1.x: this machine's too, and not the producer's 127.0.0.1.
        sources = [f"127.0.{1 + n // 250}.{1 + n % 250}" for n in range(addresses)]
        counts = [ctx.Array("q", 2) for _ in shares]
        attackers = [
            ctx.Process(target=attack, args=(port, share, sources, until, count))
            for share, count in zip(shares, counts, strict=True)
        ]
        for attacker in attackers:
            attacker.start()
        producer.join()
        for attacker in attackers:
            attacker.join()
        baseline = _phase(samples, began, attack_at)
        # The attacker's connections are opening for 5 s: measured once they hold.
        attacked = _phase(samples, attack_at + 5, until)
        return {
            "server": "web on Redis" if redis else "serve",
            "producer": "a connection per POST" if fresh else "keep-alive",
            "connections": connections,
            "attacker_addresses": addresses,
            "baseline": baseline,
            "attacked": attacked,
            "rss_before_mb": round(rss_before / 1024, 1),
            "rss_peak_mb": round(peak_rss_kb(pid) / 1024, 1),
            "shed": int(metric(port, "pushsvc_connections_shed_total") or 0),
            "attacker_opened": sum(count[0] for count in counts),
            "attacker_cut_off": sum(count[1] for count in counts),
        }


def main(argv: Sequence[str] | None = None) -> None:
    cli = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    cli.add_argument("--connections", type=int, default=20_000)
    cli.add_argument("--seconds", type=float, default=30.0, help="of the attack")
    cli.add_argument("--redis", action="store_true", help="pushsvc web + aggregate on Redis")
    cli.add_argument("--fresh", action="store_true", help="the producer: a connection per POST")
    cli.add_argument(
        "--addresses", type=int, default=100, help="the attacker's (each: --max-waiting / 16)"
    )
    cli.add_argument("--src", type=Path, default=SRC, help="the src/ of the pushsvc to run")
    cli.add_argument("--json", action="store_true", help="one JSON line instead of text")
    args = cli.parse_args(argv)
    result = run(args.src, args.connections, args.seconds, args.redis, args.fresh, args.addresses)
    result["src"] = str(args.src)
    result["date"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"{result['server']}: {args.connections} unfinished bodies from {args.addresses} "
        "addresses, producer "
        f"{result['producer']}, src {args.src}"
    )
    for phase in ("baseline", "attacked"):
        print(f"  {phase:<9} {result[phase]}")
    print(
        f"  RSS {result['rss_before_mb']} MB before, peak {result['rss_peak_mb']} MB; "
        f"shed {result['shed']}; attacker opened {result['attacker_opened']}, "
        f"cut off {result['attacker_cut_off']}"
    )


if __name__ == "__main__":
    main()
