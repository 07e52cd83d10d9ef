"""Faults at chosen moments: what the moment scenarios share (docs/reliability.md, "The fault
suite").

A `Case` is one deployment on the test's Redis (one redis-server or a Redis Cluster:
backends.py) under a fresh key prefix: web processes and
aggregators (the first one started holds the shard's lease, the others stand by), a
`KeyedProducer`, and `subscribers` of three kinds on two web processes — one topic, two
topics, a prefix pattern — some of which drop their stream mid-run and resume on the other
web process with `Last-Event-ID`. `check_exactly_once` holds what each subscriber received
against an uninterrupted run: an in-process `Aggregator` fed the acknowledged batches in
order (every update, byte for byte but its id), and pandas (`harness.oracle`) for the last
windows of each topic.

A moment is reached by waiting on what can be observed — a process logging that it took a
lease, the lease's remaining time in Redis, the applied position, the first bytes of an
update on its channel, an idempotency key appearing — never by sleeping, and each scenario
names its offsets as parameters, so that a failure reproduces.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import orjson
import redis
from harness.live import PushsvcProcess, wait_until
from harness.oracle import Exact, mismatches, rolling

from faults import backends
from faults.backends import Store
from faults.harness import SLOWEST_POST_S, FaultStack, Watcher
from pushsvc.aggregate.aggregator import Aggregator
from pushsvc.broker.redis.wire import decode_events
from pushsvc.config import Settings
from pushsvc.core.event import Event
from pushsvc.core.topics import TopicMatcher
from support.redis_keys import server_keys

T = TypeVar("T")

S = 1_000_000
STEP_US = 20_000
"""Event n has value n and time `base + n * STEP_US`, whatever its topic."""
LEASES = ("1s", "2s") if os.environ.get("TEST_PUSHSVC_EVERY_LEASE") == "1" else ("1s",)
"""The lease periods every moment runs at on real Redis: one, the truth check of each moment.
The same kills and pauses at every other time of the work (a death or a stall before each
call of the core, a pause past the lease) run in the simulation, thousands of times
(tests/simulation); `TEST_PUSHSVC_EVERY_LEASE=1` runs each moment at a 2 s lease too, where
the takeover falls at another time of the work."""
EVERY_MOMENT = os.environ.get("TEST_PUSHSVC_EVERY_MOMENT") == "1"
"""Run on real Redis the moments that are another offset of a kind that runs already (a kill
0.3 s after a handover besides the one at it), and the repeated runs. By default each kind
runs once there, the truth check, and the simulation reaches each kind tens to hundreds of
times a slice, at every offset (`tests/simulation`, whose slices must each reach every one of
its `MOMENTS`)."""


def truth_checks(moments: dict[str, T], offsets: Collection[str]) -> dict[str, T]:
    """`moments` without those of `offsets` (another offset of a kind that runs anyway),
    unless `EVERY_MOMENT`."""
    return {name: m for name, m in moments.items() if EVERY_MOMENT or name not in offsets}


# -- the deployment ----------------------------------------------------------------------------


class Case:
    """One case's deployment on a shared redis-server or Redis Cluster: its own prefix, so its
    log, applied position, leases and history are its own; its topics are `{name}.a`, `.b` and
    `.c`."""

    def __init__(
        self, store: Store, *, lease: str = "1s", env: dict[str, str] | None = None
    ) -> None:
        self.name = f"m{uuid.uuid4().hex[:8]}"
        self.prefix = f"{self.name}:"
        self.store = store
        self.stack = FaultStack(store, self.prefix, lease=lease, env=env)
        self.lease_s = float(lease.removesuffix("s"))
        self.takeover_timeout = 3 * self.lease_s + 5
        """How long a standby may take to hold a lease that lapsed, with room for a busy CI."""
        self.redis = backends.client(store)
        self.topics = tuple(f"{self.name}.{x}" for x in "abc")
        self.keys = server_keys(self.prefix, int(self.stack.env["PUSHSVC_PARTITIONS"]))
        """The names the case's processes use, for the partition count they run with."""
        self.shard_lease = self.keys.partition(0).lease
        self.bridge_lease = self.keys.bridge_lease
        self._threads: list[Watcher | KeyedProducer | IngestProducer] = []

    def updates_channel(self, topic: str) -> str:
        """The channel `topic`'s updates are published on."""
        return (self.keys.of(topic).updates_channel + topic.encode()).decode()

    def own(self, thread: Watcher | KeyedProducer | IngestProducer) -> None:
        """Stop `thread` when the case closes, also when the case failed before it did: a
        producer left running would post into the next case's time."""
        self._threads.append(thread)

    def start(
        self, *, webs: int = 2, standbys: int = 2, holder_url: str | None = None
    ) -> PushsvcProcess:
        """The first aggregator (reaching Redis at `holder_url`, a proxy, when given), once
        it holds both leases; then the web processes and the standbys, side by side."""
        if holder_url is None:
            first = self.stack.start_aggregator()
        else:
            env = {**self.stack.env, "PUSHSVC_REDIS_URL": holder_url}
            first = PushsvcProcess("aggregate", env=env, http=False).start()
            self.stack.aggregators.append(first)
        wait_until(
            lambda: first.holds_lease(self.shard_lease) and first.holds_lease(self.bridge_lease),
            what="the first aggregator holds its leases",
        )
        starters = [threading.Thread(target=self.stack.start_web) for _ in range(webs)]
        starters += [threading.Thread(target=self.stack.start_aggregator) for _ in range(standbys)]
        for starter in starters:
            starter.start()
        for starter in starters:
            starter.join()
        assert len(self.stack.webs) == webs and len(self.stack.aggregators) == 1 + standbys
        return first

    def holder(
        self, *, key: str | None = None, besides: Iterable[PushsvcProcess] = (), timeout: float = 10
    ) -> PushsvcProcess:
        """The aggregator (not one of `besides`) that says it holds `key` (the shard's lease)."""
        key = key or self.shard_lease
        others = [a for a in self.stack.aggregators if a not in set(besides)]
        found: list[PushsvcProcess] = []

        def one() -> bool:
            found[:] = [a for a in others if a.holds_lease(key)]
            return len(found) == 1

        wait_until(one, timeout=timeout, interval=0.002, what=f"one aggregator holds {key}")
        return found[0]

    def applied(self) -> str:
        value = self.redis.hget(self.keys.partition(0).applied, "id")
        return value.decode() if isinstance(value, bytes) else "0-0"

    def last_logged(self) -> str:
        entries: Any = self.redis.xrevrange(self.keys.partition(0).log, count=1)
        return entries[0][0].decode() if entries else "0-0"

    def wait_published(self, timeout: float = 10) -> None:
        """Until everything logged is published: the holder waits in its blocking read."""
        wait_until(
            lambda: self.applied() == self.last_logged(),
            timeout=timeout,
            interval=0.005,
            what="the holder has published everything logged",
        )

    def expires_at(self, key: str) -> float:
        """When (time.monotonic) `key` expires if nobody renews it."""
        pttl = int(self.redis.pttl(key))  # type: ignore[arg-type]
        assert pttl > 0, f"{key} has no expiry ({pttl})"
        return time.monotonic() + pttl / 1000

    def close(self) -> None:
        for thread in self._threads:
            thread.stop()
        self.stack.stop()
        self.redis.close()

    def __enter__(self) -> Case:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def wait_renewed(client: redis.Redis, key: str, what: str) -> None:
    """Until `key`'s remaining time jumps up between two reads: its holder renewed it.

    Each read is compared with the one before it, not with the first: a first read taken just
    as the lease was renewed is the largest remaining time there is, which no later renewal
    exceeds (a bridge moment timed out on exactly that once)."""
    last = int(client.pttl(key))  # type: ignore[arg-type]

    def jumped() -> bool:
        nonlocal last
        now = int(client.pttl(key))  # type: ignore[arg-type]
        up, last = now > last, now
        return up

    wait_until(jumped, interval=0.002, what=what)


def freeze(process: PushsvcProcess) -> None:
    """SIGSTOP: a long pause (a VM stall, a swapped-out process); its sockets stay open."""
    os.kill(process.pid, signal.SIGSTOP)


def thaw(process: PushsvcProcess) -> None:
    os.kill(process.pid, signal.SIGCONT)


def sleep_until(moment: float) -> None:
    """Wait for a moment computed from Redis (a lease's expiry), not for a guess."""
    time.sleep(max(0.0, moment - time.monotonic()))


_KILLER = """
import os, signal, socket, sys
port, pid = int(sys.argv[1]), int(sys.argv[4])
command, channel = sys.argv[2].encode(), sys.argv[3].encode()
def bulk(text):
    return b"$%d\\r\\n%s\\r\\n" % (len(text), text)
sock = socket.create_connection(("127.0.0.1", port))
sock.sendall(b"*2\\r\\n" + bulk(command) + bulk(channel))
confirmed = b"*3\\r\\n" + bulk(command.lower()) + bulk(channel) + b":1\\r\\n"
got = b""
while len(got) < len(confirmed):
    chunk = sock.recv(len(confirmed) - len(got))
    if not chunk:
        sys.exit(2)
    got += chunk
print("subscribed" if got == confirmed else got, flush=True)
if sock.recv(1):
    os.kill(pid, signal.SIGKILL)
    sys.exit(0)
sys.exit(1)
"""


class KillOnFirstMessage:
    """kill -9 of `pid` the moment the first bytes of an update of `topic` arrive: a raw
    socket subscribed to its channel (on a cluster, `SSUBSCRIBE`d on the primary of its slot),
    nothing parsed on the way (an update run of a big batch is megabytes; a client library
    would wait for all of it), in a process of its own (a thread of the test would wait for the
    GIL behind the streams, which receive the same updates at that very moment)."""

    def __init__(self, case: Case, topic: str, pid: int) -> None:
        channel = case.updates_channel(topic)
        port, command = backends.updates_subscription(case.store, channel.encode())
        argv = [sys.executable, "-c", _KILLER, str(port), command, channel, str(pid)]
        self._proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline().strip()
        assert line == "subscribed", line

    def fired(self, timeout: float) -> bool:
        """Whether it killed, within `timeout`."""
        try:
            return self._proc.wait(timeout) == 0
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
            return False
        finally:
            assert self._proc.stdout is not None
            self._proc.stdout.close()


# -- the producer ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    """One POST: consecutive events of one topic, and the Idempotency-Key it goes with."""

    topic: str
    values: tuple[float, ...]
    ts_us: tuple[int, ...]
    key: str

    def body(self) -> bytes:
        if len(self.values) == 1:
            return orjson.dumps({"value": self.values[0], "ts": self.ts_us[0] / S})
        pairs = zip(self.values, self.ts_us, strict=True)
        return orjson.dumps([{"value": v, "ts": t / S} for v, t in pairs])

    def request(self) -> bytes:
        """The whole HTTP request, for a test that sends it on a socket of its own."""
        body = self.body()
        head = (
            f"POST /topics/{self.topic}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/json\r\nIdempotency-Key: {self.key}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body


class Numbering:
    """Event n has value n and time `base + n * STEP_US`; a batch of one event goes to the
    case's topics in turn, a bigger one to the topic named."""

    def __init__(self, topics: Sequence[str]) -> None:
        self.topics = tuple(topics)
        self.base_us = (time.time_ns() // 1000 // S) * S
        self._next = 0

    def next_batch(self, size: int = 1, topic: str | None = None) -> Batch:
        n = self._next
        self._next += size
        return Batch(
            topic or self.topics[n % len(self.topics)],
            tuple(float(n + i) for i in range(size)),
            tuple(self.base_us + (n + i) * STEP_US for i in range(size)),
            uuid.uuid4().hex,
        )


class KeyedProducer(threading.Thread):
    """Posts one event at a time (`rate` a second) to the case's topics in turn and to the web
    processes in turn, each POST with an Idempotency-Key; a POST that gets no 202 (its web
    process died, a 503) is sent again with the same key to the next web process until one
    answers 202. So every event is acknowledged exactly once, in order: `acked`.

    A test that times a POST itself pauses the producer (no POST in flight), takes the next
    batch (`next_batch`) and hands it to `deliver` from its own thread."""

    def __init__(self, case: Case, *, rate: float = 60.0) -> None:
        super().__init__(daemon=True, name="keyed-producer")
        case.own(self)
        self.stack = case.stack
        self.numbering = Numbering(case.topics)
        self.next_batch = self.numbering.next_batch
        self.interval = 1.0 / rate
        self.acked: list[Batch] = []
        self.replayed: list[Batch] = []
        """Batches acknowledged by a 202 with `Idempotent-Replayed: true`."""
        self.statuses: Counter[int] = Counter()  # per attempt; 0: no answer
        self.slowest_s = 0.0
        self._turn = 0
        self.stopping = threading.Event()
        self._running = threading.Event()
        self._running.set()
        self._idle = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            if not self._running.is_set():
                self._idle.set()
                self._running.wait(0.05)
                continue
            self._idle.clear()
            self.deliver(self.next_batch())
            self.stopping.wait(self.interval)

    def deliver(self, batch: Batch, *, timeout: float = 30) -> bool:
        """POST `batch` until a 202 (or the producer is stopped); whether that 202 was a
        replay of its key."""
        deadline = time.monotonic() + timeout
        while not self.stopping.is_set():
            ports = self.stack.ports()
            if ports:
                self._turn += 1
                status, replayed = self.send(ports[self._turn % len(ports)], batch)
                if status == 202:
                    self.acked.append(batch)
                    if replayed:
                        self.replayed.append(batch)
                    return replayed
            assert time.monotonic() < deadline, f"no 202 for {batch.key} in {timeout} s"
            time.sleep(0.05)
        return False

    def send(self, port: int, batch: Batch) -> tuple[int, bool]:
        """One attempt: the status (0 for none) and whether it was a replay."""
        started = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request(
                "POST",
                f"/topics/{batch.topic}/events",
                batch.body(),
                {"Content-Type": "application/json", "Idempotency-Key": batch.key},
            )
            response = conn.getresponse()
            status, replayed = response.status, response.getheader("Idempotent-Replayed")
            response.read()
        except (OSError, http.client.HTTPException):
            status, replayed = 0, None
        finally:
            conn.close()
        self.statuses[status] += 1
        if len(batch.values) == 1:  # the steady load; a big batch takes its time
            self.slowest_s = max(self.slowest_s, time.monotonic() - started)
        return status, replayed == "true"

    def pause(self) -> None:
        """Return once no POST of this thread is in flight, and none will be until `resume`."""
        self._idle.clear()
        self._running.clear()
        assert self._idle.wait(10), "the producer did not pause"

    def resume(self) -> None:
        self._running.set()

    def stop(self) -> None:
        self.stopping.set()
        self._running.set()
        if self.ident is not None:  # started
            self.join(10)

    def acked_values(self) -> int:
        return sum(len(b.values) for b in self.acked)

    def figures(self) -> dict[str, object]:
        """How the POSTs went: only 202s, and attempts that got no answer or a 503 (retried
        with their key); none of one event slower than SLOWEST_POST_S."""
        assert set(self.statuses) <= {202, 503, 0}, self.statuses
        assert self.slowest_s < SLOWEST_POST_S, f"a POST took {self.slowest_s:.2f} s"
        return {
            "events": self.acked_values(),
            "posts": len(self.acked),
            "replayed": len(self.replayed),
            "statuses": dict(sorted(self.statuses.items())),
            "slowest_post_s": round(self.slowest_s, 3),
        }


class IngestProducer(threading.Thread):
    """A producer on Redis: PUBLISHes one event at a time (`rate` a second) to
    `{prefix}ingest:{topic}`, numbered as `Numbering` does, and remembers of each how many
    bridges were subscribed to hear it (PUBLISH's answer, on the bridge's node of a cluster:
    `backends.ingest_port`) and when (`heard`). Pub/sub is at most once: what the bridge
    appended is in the log (`logged_batches`)."""

    def __init__(self, case: Case, *, rate: float = 60.0) -> None:
        super().__init__(daemon=True, name="ingest-producer")
        case.own(self)
        self.client = redis.Redis(port=backends.ingest_port(case.store))
        self.channel = f"{case.prefix}ingest:"
        self.numbering = Numbering(case.topics)
        self.interval = 1.0 / rate
        self.heard: list[tuple[Batch, int, float]] = []
        self.stopping = threading.Event()
        self._lock = threading.Lock()

    def run(self) -> None:
        while not self.stopping.wait(self.interval):
            self.publish(1)

    def publish(self, count: int) -> None:
        """`count` events, one message each, pipelined (a burst when more than one)."""
        with self._lock:
            batches = [self.numbering.next_batch() for _ in range(count)]
            pipe = self.client.pipeline(transaction=False)
            for batch in batches:
                pipe.publish(self.channel + batch.topic, batch.body())
            sent_at = time.monotonic()
            receivers = pipe.execute()
            self.heard += [(b, int(r), sent_at) for b, r in zip(batches, receivers, strict=True)]

    def stop(self) -> None:
        self.stopping.set()
        if self.ident is not None:  # started
            self.join(10)
        self.client.close()


def logged_batches(case: Case) -> list[Batch]:
    """The batches the shard's event log holds, in log order (none is trimmed in a case: the
    widest window is 5 minutes)."""
    entries: Any = case.redis.xrange(case.keys.partition(0).log)
    batches = []
    for entry_id, fields in entries:
        if fields.get(b"k") == b"e":
            events = decode_events(fields[b"v"])
            batches.append(
                Batch(
                    fields[b"t"].decode(),
                    tuple(e.value for e in events),
                    tuple(e.ts_us for e in events),
                    entry_id.decode(),
                )
            )
    return batches


# -- the subscribers ---------------------------------------------------------------------------


def subscribers(case: Case) -> list[Watcher]:
    """Six streams, alternately on the two web processes, each subscribed (its snapshot in)
    before anything is posted: one topic, a prefix pattern (three of them), two topics, and
    another topic; four drop their stream at fixed counts and resume on the other web process
    with their Last-Event-ID (the last count of the last one falls inside a big batch)."""
    a, b, c = case.topics
    pattern = f"/stream?topic={case.name}.*"
    kinds: list[tuple[str, tuple[int, ...]]] = [
        (f"/topics/{a}/stream", ()),
        (pattern, (25, 140)),
        (f"/stream?topic={a}&topic={b}", (50,)),
        (pattern, ()),
        (f"/topics/{c}/stream", (12,)),
        (pattern, (70, 2500)),
    ]
    watchers = []
    for index, (path, drops) in enumerate(kinds):
        watcher = Watcher(case.stack, a, index, drops=drops)
        watcher.path = path
        case.own(watcher)
        watchers.append(watcher)
        watcher.start()
    for watcher in watchers:
        assert watcher.subscribed.wait(10), f"{watcher.name} never got its snapshot"
    return watchers


def reads(watcher: Watcher) -> TopicMatcher:
    """The topics a watcher's stream reads."""
    parts = urlsplit(watcher.path)
    if parts.path.startswith("/topics/"):
        return TopicMatcher([parts.path.split("/")[2]])
    return TopicMatcher(parse_qs(parts.query)["topic"])


def wait_received(watchers: Sequence[Watcher], batches: Sequence[Batch], timeout: float) -> bool:
    """Until every watcher has as many updates as `batches` hold events it reads (or the time
    is up: the check then says what is missing). Whether they all had."""
    wanted = [sum(len(b.values) for b in batches if reads(w)(b.topic)) for w in watchers]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(len(w.received.updates) >= n for w, n in zip(watchers, wanted, strict=True)):
            return True
        time.sleep(0.02)
    return False


def settle(watchers: Sequence[Watcher], producer: KeyedProducer, timeout: float = 30) -> None:
    """Stop the producer, let every watcher receive what was acknowledged, stop them."""
    producer.stop()
    wait_received(watchers, producer.acked, timeout)
    for watcher in watchers:
        watcher.stop()


# -- the promise -------------------------------------------------------------------------------


def uninterrupted(batches: Sequence[Batch]) -> dict[float, dict[str, Any]]:
    """What an uninterrupted run publishes for these batches, by event value (without ids):
    one in-process Aggregator with the deployment's default rules, fed them in order."""
    settings = Settings.load(environ={})
    aggregator = Aggregator(
        rules=settings.rules,
        wall_clock=lambda: 0,
        topic_ttl_us=settings.topic_ttl_us,
        lateness_us=settings.grace_us,
    )
    bodies: dict[float, dict[str, Any]] = {}
    for batch in batches:
        events = [Event(v, t, None) for v, t in zip(batch.values, batch.ts_us, strict=True)]
        for draft in aggregator.apply_events(batch.topic, events):
            if draft.series is None and draft.instance is None:
                body = orjson.loads(draft.body)
                bodies[body["event"]["value"]] = body
    return bodies


def check_exactly_once(
    watchers: Sequence[Watcher], batches: Sequence[Batch], topics: Sequence[str]
) -> dict[str, object]:
    """The delivery promise, per watcher: every event of `batches` (acknowledged, or logged)
    of the topics it reads yields exactly one update, in order per topic, none of anything
    else, no `gap` snapshot; each update equal to an uninterrupted run's; the last windows of
    each of `topics` equal to pandas' on those events. Figures for the report."""
    assert batches, "nothing was acknowledged"
    keys = [b.key for b in batches]
    assert len(set(keys)) == len(keys), "a batch was acknowledged twice"
    bodies = uninterrupted(batches)
    topic_of = {v: b.topic for b in batches for v in b.values}
    for watcher in watchers:
        matcher = reads(watcher)
        expected = [v for b in batches if matcher(b.topic) for v in b.values]
        updates = watcher.received.updates
        ids = [i for i, _, _ in updates]
        assert len(set(ids)) == len(ids), f"{watcher.name} ({watcher.path}): an id arrived twice"
        gaps = [s for s in watcher.received.snapshots if s["gap"]]
        assert not gaps, f"{watcher.name} ({watcher.path}): a gap snapshot"
        for topic in sorted({topic_of[v] for v in expected}):
            got = [v for _, v, data in updates if data["topic"] == topic]
            want = [v for v in expected if topic_of[v] == topic]
            assert got == want, f"{watcher.name} ({watcher.path}), {topic}: " + _difference(
                got, want
            )
        assert len(updates) == len(expected), f"{watcher.name}: updates of other events"
        for _, value, data in updates:
            body = {k: v for k, v in data.items() if k != "id"}
            assert body == bodies[value], f"{watcher.name}: event {value} is not the reference's"
    for topic in topics:
        events = [
            (t, v)
            for b in batches
            if b.topic == topic
            for v, t in zip(b.values, b.ts_us, strict=True)
        ]
        if events:
            last = bodies[events[-1][1]]
            _windows_match_pandas(last["windows"], sorted(events, key=lambda e: e[0]))
    return {
        "updates_checked": sum(len(w.received.updates) for w in watchers),
        "reconnects": sum(w.received.connects - 1 for w in watchers),
    }


def _difference(got: list[float], want: list[float]) -> str:
    doubled = sorted(v for v, n in Counter(got).items() if n > 1)
    missing = sorted(set(want) - set(got))
    pairs = enumerate(zip(got, want, strict=False))  # lengths may differ: that is the point
    first = next((i for i, (g, w) in pairs if g != w), min(len(got), len(want)))
    return (
        f"{len(got)} updates for {len(want)} events: {len(missing)} missing {missing[:8]}, "
        f"{len(doubled)} doubled {doubled[:8]}, first difference at {first}"
    )


_WINDOWS_US = {"10s": 10 * S, "1m": 60 * S, "5m": 300 * S}


def _windows_match_pandas(windows: dict[str, Any], events: list[tuple[int, float]]) -> None:
    """The windows after the last of `events` ((ts_us, value), by time): count, min, max and
    quantiles as pandas' rolling computes them, the moments exactly (harness/oracle.py)."""
    clock = events[-1][0]
    order = rolling([events], list(_WINDOWS_US.values()))
    for label, width in _WINDOWS_US.items():
        inside = [v for t, v in events if t > clock - width]
        row = {name: float(column[0]) for name, column in order[width].items()}
        wrong = mismatches(windows[label], row, Exact.of(inside), list(windows[label]))
        assert not wrong, (label, wrong)


def report(name: str, figures: dict[str, object]) -> None:
    """One line per case for docs/reliability.md (pytest -s shows it)."""
    print(f"\n{name}: {json.dumps(figures)}")


@contextlib.contextmanager
def paused(producer: KeyedProducer) -> Any:
    """No POST of the producer's own while the test times one itself."""
    producer.pause()
    try:
        yield
    finally:
        producer.resume()
