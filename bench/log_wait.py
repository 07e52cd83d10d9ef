"""How one reader waits for new log entries across many partitions on a Redis Cluster.

Each partition has its own event log, a Redis Stream `lw<run>:{<tag>}:log` whose hash tag
(`pushsvc.broker.redis.slots.partition_tags`) puts it in the partition's slot. A single XREAD
cannot name streams of two slots (CROSSSLOT), so one reader owning P partitions has to wait
for them some other way. The strategies measured:

* `block`: one blocking `XREAD BLOCK` per partition, each on its own connection and thread
  (the baseline: connections grow with partitions).
* `poll-10ms`, `poll-50ms`: every interval, a non-blocking XREAD of every partition,
  pipelined per primary (one connection per primary).
* `wake`: the writer also `SPUBLISH`es on the partition's channel `lw<run>:{<tag>}:wake` (same
  hash tag, so the same slot and primary); the reader holds one `SSUBSCRIBE` connection per
  primary and XREADs a partition only when woken, plus a safety poll of every partition each
  `--safety-poll` seconds (the wake is fire-and-forget: a reconnect can lose one).

A real cluster of 3 primaries without replicas (harness/redis_cluster.py; replicas would only
add their CPU), per (P, strategy): the reader starts, sits idle `--idle-seconds` (Redis CPU
per second with no appends: what polling costs), then for each rate a writer process appends
XADD to random partitions at that rate for `--seconds`, and the reader's count is drained.
Figures per row: the reader's connections, counted from `CLIENT LIST` on every primary (by
client name); wake latency p50/p99 (the writer's `time.monotonic_ns()` just before its XADD,
carried in the entry, to the reader's just after its read returned: one clock on Linux);
Redis CPU (used_cpu_sys + used_cpu_user of INFO cpu, summed over the primaries) per entry and,
idle, per second, beside the cluster's own idle CPU with no reader at all; the bench process's
CPU (only the reader runs in it) likewise; and that every entry was seen exactly once.

    python -m bench.log_wait                              # P 16,256; 200 and 2000 entries/s
    python -m bench.log_wait --partitions 1024 --rates 2000 --strategies poll-50ms,wake --json
    python -m bench.log_wait --smoke --json               # tiny counts; exit 1 unless exact

No timing is ever judged; `--smoke` and `--check` only check the counts.
"""

from __future__ import annotations

import multiprocessing
import random
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson
import redis
from harness.redis_cluster import RedisClusterServers
from redis.crc import key_slot

from bench.common import Report, machine, parser, percentiles
from pushsvc.broker.redis.slots import partition_tags

READER = "lw-reader"
WRITER = "lw-writer"
STRATEGIES = ("block", "poll-10ms", "poll-50ms", "wake")
# A blocked XREAD returns this often with nothing, so its thread can see the stop flag; a
# reader in service would block for longer, so this slightly overstates the idle cost.
BLOCK_MS = 1000


class Layout:
    """The partitions of one run: their keys and channels, and the primary that owns each."""

    def __init__(self, cluster: RedisClusterServers, count: int) -> None:
        run = uuid.uuid4().hex[:6]  # fresh keys: no entry of an earlier run is read again
        tags = partition_tags(count)
        self.logs = [f"lw{run}:{{{tag}}}:log".encode() for tag in tags]
        self.wakes = [f"lw{run}:{{{tag}}}:wake".encode() for tag in tags]
        owners = cluster.slot_owners()
        self.ports = sorted({port for _, _, port in owners})

        def port_of(key: bytes) -> int:
            slot = key_slot(key)
            return next(port for first, last, port in owners if first <= slot <= last)

        self.port = [port_of(key) for key in self.logs]
        # The channel must live where its log does: the appender publishes on that node.
        assert self.port == [port_of(key) for key in self.wakes]
        self.on_port = {p: [i for i, q in enumerate(self.port) if q == p] for p in self.ports}


def connect(port: int, name: str) -> redis.Redis:
    # Each client makes at most one connection per thread that uses it at once; named, so that
    # CLIENT LIST can count them.
    return redis.Redis(port=port, client_name=name, socket_timeout=30, socket_connect_timeout=5)


def write(ports: list[int], logs: list[bytes], wakes: list[bytes], where: list[int],
          rate: float, seconds: float, phase: int, publish: bool, ready: Any, go: Any,
          done: Any) -> None:  # fmt: skip
    """The writer, in a process of its own (the reader's GIL is not its business): XADD to a
    random partition `rate` times a second for `seconds`, paced against the clock, each with
    its send time, and with `publish` a SPUBLISH of the partition's wake channel in the same
    round trip. Puts how many it appended on `done`."""
    clients = {port: connect(port, WRITER) for port in ports}
    for client in clients.values():
        client.ping()
    pick = random.Random(phase)
    ready.set()
    go.wait()
    start = time.monotonic()
    sent = 0
    total = int(rate * seconds)
    while sent < total:
        # Whatever is due by now goes out at once, so a slow round trip is caught up on.
        due = min(total, int((time.monotonic() - start) * rate) + 1)
        while sent < due:
            partition = pick.randrange(len(logs))
            pipe = clients[where[partition]].pipeline(transaction=False)
            stamp = time.monotonic_ns()
            pipe.xadd(logs[partition], {"t": stamp, "n": sent, "p": phase})
            if publish:
                pipe.execute_command("SPUBLISH", wakes[partition], b"")
            pipe.execute()
            sent += 1
        pause = start + sent / rate - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    for client in clients.values():
        client.close()
    done.put(sent)


class Reader:
    """What every strategy shares: the last id read per partition, and a record of each entry
    seen: (phase, n, latency in ns)."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.last = [b"0-0"] * len(layout.logs)
        self.seen: list[tuple[int, int, int]] = []
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self.errors: list[str] = []
        self.clients: list[redis.Redis] = []

    def client(self, port: int) -> redis.Redis:
        made = connect(port, READER)
        self.clients.append(made)
        return made

    def take(self, partition: int, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        now = time.monotonic_ns()
        for _, fields in entries:
            self.seen.append((int(fields[b"p"]), int(fields[b"n"]), now - int(fields[b"t"])))
        if entries:
            self.last[partition] = entries[-1][0]

    def read_some(self, client: redis.Redis, partitions: list[int]) -> None:
        """One non-blocking XREAD per partition, in one pipeline (one round trip)."""
        pipe = client.pipeline(transaction=False)
        for i in partitions:
            pipe.xread({self.layout.logs[i]: self.last[i]})
        for i, reply in zip(partitions, pipe.execute(), strict=True):
            for _, entries in reply or ():
                self.take(i, entries)

    def spawn(self, target: Callable[..., None], *args: object) -> None:
        def guarded() -> None:
            try:
                target(*args)
            except Exception as error:  # a dead reader must show in its row
                if not self.stopping.is_set():
                    self.errors.append(f"{type(error).__name__}: {error}")

        thread = threading.Thread(target=guarded, daemon=True)
        thread.start()
        self.threads.append(thread)

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=BLOCK_MS / 1000 + 5)
        for client in self.clients:
            client.close()


class Blocking(Reader):
    """(a) A thread and a connection per partition, each in XREAD BLOCK."""

    def start(self) -> None:
        started = threading.Barrier(len(self.layout.logs) + 1)
        for i, port in enumerate(self.layout.port):
            self.spawn(self.wait_on, i, self.client(port), started)
        started.wait(timeout=60)  # every connection is made before anything is measured

    def wait_on(self, i: int, client: redis.Redis, started: threading.Barrier) -> None:
        client.ping()
        started.wait(timeout=60)
        key = self.layout.logs[i]
        while not self.stopping.is_set():
            for _, entries in client.xread({key: self.last[i]}, block=BLOCK_MS) or ():
                self.take(i, entries)


class Polling(Reader):
    """(b) One thread; every `interval` s a pipelined XREAD of every partition per primary."""

    def __init__(self, layout: Layout, interval: float) -> None:
        super().__init__(layout)
        self.interval = interval

    def start(self) -> None:
        clients = {port: self.client(port) for port in self.layout.ports}
        for client in clients.values():
            client.ping()
        self.spawn(self.poll, clients)

    def poll(self, clients: dict[int, redis.Redis]) -> None:
        tick = time.monotonic()
        while not self.stopping.is_set():
            for port, client in clients.items():
                self.read_some(client, self.layout.on_port[port])
            # A fixed schedule, not a fixed pause: the reads' own time is part of the interval.
            tick = max(tick + self.interval, time.monotonic())
            self.stopping.wait(tick - time.monotonic())


class Waking(Reader):
    """(c) Per primary, a thread holding an SSUBSCRIBE connection to the channels of its
    partitions and a command connection for the XREADs of the partitions woken; every
    `safety` s it reads them all anyway."""

    def __init__(self, layout: Layout, safety: float) -> None:
        super().__init__(layout)
        self.safety = safety
        # Subscriptions confirmed, per primary: each thread writes only its own count.
        self.confirmed = dict.fromkeys(layout.ports, 0)

    def start(self) -> None:
        subscribed = []
        for port in self.layout.ports:
            commands = self.client(port)
            commands.ping()
            pubsub = self.client(port).pubsub(ignore_subscribe_messages=False)
            partitions = self.layout.on_port[port]
            for i in partitions:
                # One channel a command: SSUBSCRIBE too refuses channels of two slots.
                pubsub.ssubscribe(self.layout.wakes[i])
            subscribed.append((pubsub, len(partitions)))
            self.spawn(self.wait_on, port, pubsub, commands)
        # Ready once every subscription is confirmed (the thread counts them): no wake is lost
        # to a subscription still on its way.
        deadline = time.monotonic() + 30
        while sum(self.confirmed.values()) < sum(n for _, n in subscribed):
            if self.errors:
                raise RuntimeError(f"a subscription failed: {self.errors[0]}")
            if time.monotonic() > deadline:
                raise RuntimeError("the sharded subscriptions were not confirmed in 30 s")
            time.sleep(0.01)

    def wait_on(self, port: int, pubsub: Any, commands: redis.Redis) -> None:
        partitions = self.layout.on_port[port]
        index = {self.layout.wakes[i]: i for i in partitions}
        next_sweep = time.monotonic() + self.safety
        while not self.stopping.is_set():
            woken: dict[int, None] = {}
            message = pubsub.get_sharded_message(timeout=min(0.5, self.safety))
            while message is not None:
                if message["type"] == "smessage":
                    woken[index[message["channel"]]] = None
                elif message["type"] == "ssubscribe":
                    self.confirmed[port] += 1
                # Whatever else arrived meanwhile is taken now: one XREAD per partition woken,
                # however many wakes it had.
                message = pubsub.get_sharded_message(timeout=0)
            if time.monotonic() >= next_sweep:
                next_sweep = time.monotonic() + self.safety
                woken = dict.fromkeys(partitions)
            if woken:
                self.read_some(commands, list(woken))


def make_reader(strategy: str, layout: Layout, safety: float) -> Reader:
    if strategy == "block":
        return Blocking(layout)
    if strategy.startswith("poll-"):
        return Polling(layout, int(strategy.removeprefix("poll-").removesuffix("ms")) / 1000)
    if strategy == "wake":
        return Waking(layout, safety)
    raise SystemExit(f"bad strategy {strategy!r}: {', '.join(STRATEGIES)}")


def redis_cpu(cluster: RedisClusterServers) -> float:
    """CPU seconds (user + system) the primaries have used since they started."""
    total = 0.0
    for node in cluster.primaries():
        client = cluster.client(node)
        try:
            info = client.info("cpu")
        finally:
            client.close()
        total += float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
    return total


def connections(cluster: RedisClusterServers, name: str) -> int:
    """The connections named `name` on every primary, from CLIENT LIST."""
    count = 0
    for node in cluster.primaries():
        client = cluster.client(node)
        try:
            count += sum(1 for c in client.client_list() if c.get("name") == name)
        finally:
            client.close()
    return count


def idle_cost(cluster: RedisClusterServers, seconds: float) -> tuple[float, float]:
    """(Redis CPU ms, bench-process CPU ms) per second over `seconds` with nothing appended."""
    redis0, own0, wall0 = redis_cpu(cluster), time.process_time(), time.monotonic()
    time.sleep(seconds)  # a measured span of nothing happening: no condition to poll
    wall = time.monotonic() - wall0
    return (
        (redis_cpu(cluster) - redis0) * 1000 / wall,
        (time.process_time() - own0) * 1000 / wall,
    )


def load(cluster: RedisClusterServers, layout: Layout, reader: Reader, strategy: str,
         rate: float, seconds: float, phase: int, baseline: float) -> dict[str, Any]:  # fmt: skip
    """One writer run at `rate` against a running reader, drained; the row's load figures.
    `baseline`: the cluster's Redis CPU seconds per second with no reader."""
    spawn = multiprocessing.get_context("spawn")
    ready, go, done = spawn.Event(), spawn.Event(), spawn.Queue()
    writer = spawn.Process(
        target=write,
        args=(layout.ports, layout.logs, layout.wakes, layout.port, rate, seconds, phase,
              strategy == "wake", ready, go, done),
    )  # fmt: skip
    writer.start()
    try:
        if not ready.wait(60):
            raise RuntimeError("the writer did not start in 60 s")
        redis0, own0, wall0 = redis_cpu(cluster), time.process_time(), time.monotonic()
        go.set()
        sent = done.get(timeout=seconds * 3 + 60)
    finally:
        writer.join(timeout=10)
        if writer.is_alive():
            writer.kill()

    def mine() -> list[tuple[int, int, int]]:
        return [s for s in reader.seen if s[0] == phase]

    # Drained when the reader has seen as many as were sent; the safety poll and a blocked
    # XREAD return within seconds, so a short deadline ends a run that lost entries.
    deadline = time.monotonic() + max(5.0, 2 * reader_period(reader))
    while len(mine()) < sent and time.monotonic() < deadline and not reader.errors:
        time.sleep(0.005)
    redis_used, own_used = redis_cpu(cluster) - redis0, time.process_time() - own0
    # The cluster's own work (cron, cluster bus) goes on whatever the reader does: taken out,
    # what is left is the appends, the reads and the waiting.
    redis_net = redis_used - baseline * (time.monotonic() - wall0)
    got = mine()
    counts = Counter(n for _, n, _ in got)
    p50, p99 = percentiles((lat / 1e6 for _, _, lat in got), (0.5, 0.99))
    return {
        "sent": sent,
        "seen": len(got),
        "missing": sum(1 for n in range(sent) if n not in counts),
        "duplicates": sum(c - 1 for c in counts.values() if c > 1),
        "p50_ms": None if p50 is None else round(p50, 2),
        "p99_ms": None if p99 is None else round(p99, 2),
        "redis_us_per_entry": round(redis_used * 1e6 / sent, 1) if sent else None,
        "redis_net_us_per_entry": round(redis_net * 1e6 / sent, 1) if sent else None,
        "reader_us_per_entry": round(own_used * 1e6 / sent, 1) if sent else None,
    }


def reader_period(reader: Reader) -> float:
    if isinstance(reader, Waking):
        return reader.safety
    return BLOCK_MS / 1000


def scenario(cluster: RedisClusterServers, count: int, strategy: str, rates: list[float],
             args: Any, phase: list[int]) -> list[dict[str, Any]]:  # fmt: skip
    """One reader of `count` partitions with `strategy`: idle, then a writer per rate."""
    layout = Layout(cluster, count)
    reader = make_reader(strategy, layout, args.safety_poll)
    rows = []
    try:
        reader.start()
        idle_redis, idle_reader = idle_cost(cluster, args.idle_seconds)
        for rate in rates:
            phase[0] += 1
            figures = load(cluster, layout, reader, strategy, rate, args.seconds, phase[0],
                           args.baseline)  # fmt: skip
            held = connections(cluster, READER)
            rows.append({
                "partitions": count, "strategy": strategy, "rate": rate, "status": "ok",
                "connections": held, "connections_counted": "CLIENT LIST on every primary",
                **figures,
                "exact": figures["seen"] == figures["sent"] and not figures["missing"]
                and not figures["duplicates"] and not reader.errors,
                "idle_redis_ms_per_s": round(idle_redis, 3),
                "idle_reader_ms_per_s": round(idle_reader, 3),
                "errors": list(reader.errors),
            })  # fmt: skip
    except Exception as error:  # a failed scenario is a row; the rest still run
        rows.append({"partitions": count, "strategy": strategy, "rate": None,
                     "status": "error", "reason": f"{type(error).__name__}: {error}"})  # fmt: skip
    finally:
        reader.stop()
        # The streams are not needed again; deleting them keeps later runs' memory flat.
        for port in layout.ports:
            client = redis.Redis(port=port)
            try:
                for i in layout.on_port[port]:
                    client.delete(layout.logs[i])
            finally:
                client.close()
    return rows


COLUMNS = [
    ("P", 5, "partitions"),
    ("strategy", 10, "strategy"),
    ("rate/s", 7, "rate"),
    ("conns", 6, "connections"),
    ("sent", 6, "sent"),
    ("seen", 6, "seen"),
    ("exact", 6, "exact"),
    ("p50 ms", 7, "p50_ms"),
    ("p99 ms", 7, "p99_ms"),
    ("redis us/e", 10, "redis_us_per_entry"),
    ("net us/e", 8, "redis_net_us_per_entry"),
    ("reader us/e", 11, "reader_us_per_entry"),
    ("idle redis ms/s", 15, "idle_redis_ms_per_s"),
    ("idle reader ms/s", 16, "idle_reader_ms_per_s"),
]


def main(argv: list[str] | None = None) -> int:
    cli = parser(__doc__, smoke="P=16, 100 entries/s for 1 s")
    add = cli.add_argument
    add("--partitions", default=None, help="comma-separated partition counts (default 16,256)")
    add("--rates", default=None, help="comma-separated entries/s (default 200,2000)")
    add("--strategies", default=",".join(STRATEGIES), help=f"of {', '.join(STRATEGIES)}")
    add("--seconds", type=float, default=None, help="seconds of appends per rate (default 5)")
    add("--idle-seconds", type=float, default=None, help="idle span measured (default 4)")
    add("--safety-poll", type=float, default=1.0, help="wake: seconds between full reads")
    args = cli.parse_args(argv)
    counts = [int(p) for p in (args.partitions or ("16" if args.smoke else "16,256")).split(",")]
    rates = [float(r) for r in (args.rates or ("100" if args.smoke else "200,2000")).split(",")]
    strategies = args.strategies.split(",")
    for strategy in strategies:
        if strategy not in STRATEGIES:
            raise SystemExit(f"bad strategy {strategy!r}: {', '.join(STRATEGIES)}")
    args.seconds = args.seconds or (1.0 if args.smoke else 5.0)
    args.idle_seconds = args.idle_seconds or (0.5 if args.smoke else 4.0)

    report = Report(COLUMNS, json=args.json, ident=2)
    about = machine("redis", "hiredis")
    report.say(f"machine: {about}")
    cluster = RedisClusterServers(primaries=3, replicas_per_primary=0).start()
    failed = False
    try:
        version = cluster.client(cluster.primaries()[0]).info("server")["redis_version"]
        baseline, _ = idle_cost(cluster, args.idle_seconds)
        args.baseline = baseline / 1000
        header = {"machine": about, "redis_version": version, "primaries": 3,
                  "seconds": args.seconds, "idle_seconds": args.idle_seconds,
                  "safety_poll_s": args.safety_poll, "block_ms": BLOCK_MS,
                  "cluster_idle_redis_ms_per_s": round(baseline, 3)}  # fmt: skip
        report.say(f"redis {version}, 3 primaries; the cluster alone, idle: "
                   f"{baseline:.3f} ms of Redis CPU per second")  # fmt: skip
        if args.json:
            sys.stdout.buffer.write(orjson.dumps(header) + b"\n")
        report.header()
        phase = [0]
        for count in counts:
            for strategy in strategies:
                for row in scenario(cluster, count, strategy, rates, args, phase):
                    report.row(row)
                    if row["status"] != "ok" or ((args.smoke or args.check) and not row["exact"]):
                        failed = True
    finally:
        cluster.stop()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
