"""The PostgreSQL outbox against POSTs: rows per second into the event log, and latency from
the write to the subscriber at a steady rate.

One Redis deployment (a redis-server of its own, one `pushsvc aggregate` reading the outbox,
one `pushsvc web`) and a PostgreSQL of its own (harness/postgres_server.py, fsync on, as a
database is run). On fresh topics each time:

* throughput, outbox: M rows committed in one transaction, one event each; from the commit
  until the reader has appended and deleted the last (the table is empty). POST: the same M
  events, one a request, from `--publishers` threads on keep-alive connections, until the
  last 202.
* latency at `--rate` rows/s for `--seconds`: `--writers` threads write one event each
  1/rate s between them (the outbox: an INSERT in a transaction of its own, committed; POST:
  one request), each on a connection of its own, each event carrying its number; a
  subscriber's stream on the web process takes the updates. Latency is from just before the
  write (the INSERT, the request) to the update read by the subscriber, one clock (this
  process's): it includes the commit's or the POST's own time (p50/p99/max). `after` is from
  the write's return (the commit, the 202) to the update (p50/p99): commit-to-delivery.
  `write99` is the write's own p99, `behind` how far a writer fell behind its schedule. The
  harness's Redis keeps no AOF, PostgreSQL fsyncs each commit: the writes' costs differ as in
  most deployments.

    python -m bench.outbox                                   # 20000 rows; 1000 rows/s for 10 s
    python -m bench.outbox --rows 5000 --rate 500 --seconds 5 --json
    python -m bench.outbox --no-notify --poll 20ms            # polling only, no NOTIFY
    python -m bench.outbox --smoke --json                     # tiny; exit 1 unless exact

No timing is judged; `--smoke` and `--check` check that every row arrived once, each writer's
in its order.
"""

from __future__ import annotations

import http.client
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson
import psycopg
from harness.live import SSEClient
from harness.postgres_server import PostgresServer

from bench.common import Report, machine, parser, percentiles
from bench.posting import batches, publish
from bench.servers import PushsvcRedis
from pushsvc.ingest.outbox_sql import ddl

TABLE = "bench_outbox"


def _empty(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute(f"SELECT NOT EXISTS (SELECT 1 FROM {TABLE})").fetchone()
    return bool(row and row[0])


def outbox_throughput(dsn: str, rows: int) -> dict[str, Any]:
    topic = f"o-{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        with (
            conn.transaction(),
            conn.cursor() as cur,
            cur.copy(f"COPY {TABLE} (topic, event) FROM STDIN") as copy,
        ):
            for n in range(rows):
                copy.write_row((topic, f'{{"value": {n}}}'))
        # The clock starts at the commit, just above, when the rows became visible.
        committed = time.monotonic()
        while not _empty(conn):
            time.sleep(0.005)  # the reader deletes what it appended: poll the table
        done = time.monotonic()
    return {
        "path": "outbox",
        "publishers": 1,
        "rows": rows,
        "per_s": round(rows / (done - committed)),
        "status": "ok",
    }


def post_throughput(base: str, rows: int, publishers: int) -> dict[str, Any]:
    done = publish([base], f"/topics/h-{uuid.uuid4().hex[:8]}/events", batches(rows, 1),
                   publishers, 600)  # fmt: skip
    return {
        "path": "post",
        "publishers": publishers,
        "rows": done.accepted,
        "per_s": round(done.accepted / (done.last_accepted - done.first_sent)),
        "status": "ok" if done.accepted == rows else "lost",
        "reason": str(done.errors),
    }


Writer = Callable[[str, int], None]
"""Writes event n of a topic (an INSERT committed, a POST answered)."""


class _Outboxes:
    """A writer a thread: a connection of its own, each row a transaction of its own."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.opened: list[psycopg.Connection[Any]] = []

    def __call__(self) -> Writer:
        conn = psycopg.connect(self.dsn, autocommit=True)
        self.opened.append(conn)

        def insert(topic: str, n: int) -> None:
            conn.execute(
                f"INSERT INTO {TABLE} (topic, event) VALUES (%s, %s)", (topic, f'{{"value": {n}}}')
            )

        return insert

    def close(self) -> None:
        for conn in self.opened:
            conn.close()


class _Posts:
    """A writer a thread: a keep-alive connection of its own."""

    def __init__(self, base: str) -> None:
        self.host, port = base.removeprefix("http://").split(":")
        self.port = int(port)
        self.opened: list[http.client.HTTPConnection] = []

    def __call__(self) -> Writer:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=30)
        self.opened.append(connection)

        def post(topic: str, n: int) -> None:
            connection.request("POST", f"/topics/{topic}/events", f'{{"value": {n}}}',
                               {"Content-Type": "application/json"})  # fmt: skip
            answer = connection.getresponse()
            answer.read()
            assert answer.status == 202, answer.status

        return post

    def close(self) -> None:
        for connection in self.opened:
            connection.close()


def paced(
    make: Callable[[], Writer], topic: str, rate: float, count: int, writers: int,
    sent: list[float], done: list[float],
) -> dict[str, float]:  # fmt: skip
    """Write events 0..count-1 at `rate` per second, event n due at n/rate, by `writers`
    threads (thread w writes n = w, w + writers, ...: each in order, one at a time, so a
    thread's events are committed in their order); sent[n] is when its write began, done[n]
    when it returned."""
    start = time.monotonic()
    worst = [0.0] * writers

    def run(w: int, write: Writer) -> None:
        for n in range(w, count, writers):
            due = start + n / rate
            now = time.monotonic()
            if now < due:
                time.sleep(due - now)
            else:
                worst[w] = max(worst[w], now - due)
            sent[n] = time.monotonic()
            write(topic, n)
            done[n] = time.monotonic()

    threads = [threading.Thread(target=run, args=(w, make()), daemon=True) for w in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"behind_s": round(max(worst), 3), "wrote_s": round(time.monotonic() - start, 2)}


def latency(
    port: int, path: str, rate: float, seconds: float, writers: int, make: Callable[[], Writer]
) -> dict[str, Any]:
    topic = f"{path[0]}-{uuid.uuid4().hex[:8]}"
    count = int(rate * seconds)
    sent = [0.0] * count
    done = [0.0] * count
    arrived: dict[int, float] = {}
    order: list[int] = []
    with SSEClient(port, f"/topics/{topic}/stream", timeout=60) as stream:
        stream.next_data("snapshot")

        def read() -> None:
            while len(order) < count:
                _, data = stream.next_data()
                n = int(data["event"]["value"])
                arrived.setdefault(n, time.monotonic())
                order.append(n)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        pace = paced(make, topic, rate, count, writers, sent, done)
        reader.join(120)
    waits = [(arrived[n] - sent[n]) * 1000 for n in range(count) if n in arrived]
    p50, p99, top = percentiles(waits, (0.5, 0.99, 1.0))
    after = [(arrived[n] - done[n]) * 1000 for n in range(count) if n in arrived]
    writes = [(done[n] - sent[n]) * 1000 for n in range(count)]
    after_p50, after_p99 = percentiles(after, (0.5, 0.99))
    (write_p99,) = percentiles(writes, (0.99,))
    # Each once; and each writer's in its order (the order they were committed in).
    once = sorted(order) == list(range(count))
    ordered = all(
        (mine := [n for n in order if n % writers == w]) == sorted(mine) for w in range(writers)
    )
    return {
        "path": path,
        "publishers": writers,
        "rate": rate,
        "rows": len(order),
        "p50_ms": p50,
        "p99_ms": p99,
        "max_ms": top,
        "after_p50_ms": after_p50,
        "after_p99_ms": after_p99,
        "write_p99_ms": write_p99,
        **pace,
        "status": "ok" if once and ordered else "inexact",
        "reason": "" if once and ordered else f"{len(order)} of {count}, each once: {once}",
    }


def main() -> None:
    cli = parser(__doc__.split("\n\n")[0], smoke="200 rows, 100 rows/s for 1 s")
    cli.add_argument("--rows", type=int, default=20_000)
    cli.add_argument("--publishers", type=int, default=4, help="POST threads (throughput)")
    cli.add_argument("--rate", type=float, default=1000.0)
    cli.add_argument("--seconds", type=float, default=10.0)
    cli.add_argument(
        "--writers", type=int, default=4, help="threads writing at --rate together (latency)"
    )
    cli.add_argument(
        "--no-notify", action="store_true",
        help="the table's NOTIFY trigger disabled: the reader polls (--poll) only",
    )  # fmt: skip
    cli.add_argument("--poll", default="1s", help="the reader's --outbox-poll")
    args = cli.parse_args()
    if args.smoke:
        args.rows, args.rate, args.seconds, args.publishers, args.writers = 200, 100.0, 1.0, 2, 2
    postgres = PostgresServer(fsync=True).start()
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        conn.execute(ddl(TABLE))
        if args.no_notify:
            conn.execute(f"ALTER TABLE {TABLE} DISABLE TRIGGER {TABLE}_notify")
    deployment = PushsvcRedis(
        1,
        extra_args=(
            "--outbox-dsn",
            postgres.dsn,
            "--outbox-table",
            TABLE,
            "--outbox-poll",
            args.poll,
        ),
    )
    rows: list[dict[str, Any]] = []
    try:
        deployment.start()
        assert deployment.aggregator is not None
        deployment.aggregator.wait_for_log("outbox: reading")
        web = deployment.webs[0]
        report = Report(
            [("test", 10, "test"), ("path", 6, "path"), ("pub", 4, "publishers"),
             ("rows", 6, "rows"), ("rows/s", 7, "per_s"), ("p50 ms", 7, "p50_ms"),
             ("p99 ms", 7, "p99_ms"), ("max ms", 7, "max_ms"), ("after50", 7, "after_p50_ms"),
             ("after99", 7, "after_p99_ms"), ("write99", 7, "write_p99_ms"),
             ("behind s", 8, "behind_s")],
            json=args.json, ident=2,
        )  # fmt: skip
        if args.json:  # the first line: where it ran
            print(orjson.dumps({"machine": machine("psycopg", "gevent")}).decode(), flush=True)
        report.header()
        empty = dict.fromkeys(
            ("p50_ms", "p99_ms", "max_ms", "after_p50_ms", "after_p99_ms", "write_p99_ms",
             "behind_s"),
        )  # fmt: skip
        for row in (
            outbox_throughput(postgres.dsn, args.rows),
            post_throughput(web.base, args.rows, 1),
            post_throughput(web.base, args.rows, args.publishers),
        ):
            rows.append({"test": "throughput", **empty, **row})
            report.row(rows[-1])

        for path, make in (("outbox", _Outboxes(postgres.dsn)), ("post", _Posts(web.base))):
            row = latency(web.port, path, args.rate, args.seconds, args.writers, make)
            make.close()
            rows.append({"test": "latency", "per_s": args.rate, **row})
            report.row(rows[-1])
    finally:
        deployment.stop()
        postgres.close()
    if (args.smoke or args.check) and any(r["status"] != "ok" for r in rows):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
