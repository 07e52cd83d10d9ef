"""The soak: pushsvc under steady stream churn and events for M minutes; does anything grow?

It starts the server itself (default `pushsvc serve --redis-url` on a redis-server of its own,
on a free port; `--broker memory` for the embedded broker), with a short `--topic-ttl` (20s)
and windows no wider than it, so that idle topics are forgotten and come back. Then, all on
127.0.0.1, for the whole run:

* churn: `--churn` (100) streams opened per second on random topics (one topic, or two on
  `/stream`), each closed right after its request, after its snapshot, or after a second of
  live updates; half cleanly, half by a reset (SO_LINGER 0, then close);
* events: `--rate` (200) per second over `--topics` (1,000) topics, one per POST; each topic
  is active half of every `--cycle` (120 s) and idle the other half, longer than the TTL;
  each topic's events carry the values 0, 1, 2, ... as they are sent;
* `--subscribers` (5) long-lived streams (`topic=*`, a prefix pattern `soakN.*`, a list of 20
  topics, in turn) that check every accepted event of their topics arrives exactly once, in
  order, under increasing ids (`loadgen/sequences.py`); one the server ends resumes with
  `Last-Event-ID`, and a `"gap": true` snapshot is counted.

Every `--interval` (30 s) one line: elapsed, server RSS and open fds (/proc of its processes),
greenlets and subscribers (its /metrics: `pushsvc_greenlets`, `pushsvc_subscribers`), streams
the soak holds open and the difference (streams the server still counts that the client closed),
Redis `used_memory` (INFO memory), events accepted, streams churned.

The verdict, at the end: RSS, fds, greenlets and subscribers are flat after the warm-up
(`--warmup`, default the first 20 % of the run, at least one interval): the median of every
3 consecutive lines within 10 % of the first such median (counts also within ±10, a few
streams come and go at any instant; a median, so one line caught in a burst is no trend);
once the churn stops, the server's subscribers fall back to the long-lived ones within 5 s;
and every long-lived subscriber got every accepted event of its topics exactly once, in order
(missing, duplicates, out-of-order, gaps all 0), with no publish or churn errors. Exit 1 when
it fails. `--smoke`: seconds, tiny rates, exit 1 unless the counts are exact (flatness is
printed, not judged). The load is bounded: a rate, a duration, at most `--max-open` churn
streams at once, every step with a timeout.

    python -m bench.soak --minutes 30 --json > soak.jsonl
    python -m bench.soak --minutes 3 --server-args='--heartbeat 1s'
    python -m bench.soak --smoke
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shlex
import sys
import time
from statistics import median
from typing import Any
from urllib.parse import urlencode

import orjson
from harness.procfs import cpu_seconds, open_fds, rss_kb

from bench.common import Report, machine, metrics
from bench.common import parser as common_parser
from bench.loadgen.churn import Churn
from bench.loadgen.http1 import ProtocolError
from bench.loadgen.process import raise_fd_limit
from bench.loadgen.process import run as run_loop
from bench.loadgen.publisher import Publisher
from bench.loadgen.sequences import TopicSequences
from bench.loadgen.subscriber import Progress, Subscriber, stream_request
from bench.servers import PushsvcServe
from pushsvc.core.topics import TopicMatcher

HOST = "127.0.0.1"
GROUPS = 10
"""Topic i is `soak{i % GROUPS}.{i:04d}`, so `soakN.*` selects a tenth of them."""
ACTIVE_SHARE = 0.5
PUBLISHERS = 4
TOLERANCE = 0.10
SLACK = {"fds": 10, "greenlets": 10, "subscribers": 10}
"""Counts may also move by this much: streams open and close at every instant."""
SMOOTH = 3
"""Lines per rolling median: one line caught in a burst is not a trend (on a shared machine a
stalled client, or a server slow to send snapshots, holds more streams open for a moment)."""
JUDGED = ("rss_kb", "fds", "greenlets", "subscribers")
RELEASE_TIMEOUT_S = 5.0
DRAIN_TIMEOUT_S = 30.0
DRAIN_IDLE_S = 5.0


def topic_name(i: int) -> str:
    return f"soak{i % GROUPS}.{i:04d}"


def selectors(j: int, topics: list[str]) -> list[str]:
    """Long-lived subscriber j's topics: every one, a prefix pattern, or a list of 20."""
    if j % 3 == 0:
        return ["*"]
    if j % 3 == 1:
        return [f"soak{j % GROUPS}.*"]
    step = max(1, len(topics) // 20)
    return topics[j % step :: step][:20]


class Events:
    """Events at `rate`/s over `topics`, each topic active for half of every `cycle_s`; each
    topic's values 0, 1, 2, ... in the order sent. `accepted`: topic → events answered 202.

    PUBLISHERS connections post at once, each for its own share of the topics, so each
    topic's events stay in order; one request at a time on one connection falls behind on a
    busy shared machine."""

    def __init__(self, port: int, topics: list[str], rate: float, cycle_s: float) -> None:
        self._port, self._topics, self._rate, self._cycle = port, topics, rate, cycle_s
        self.accepted: dict[str, int] = {}
        self.errors: dict[str, int] = {}

    async def run(self, seconds: float) -> None:
        lanes = min(PUBLISHERS, len(self._topics))
        await asyncio.gather(*(self._lane(k, lanes, seconds) for k in range(lanes)))

    async def _lane(self, lane: int, lanes: int, seconds: float) -> None:
        publisher = Publisher(HOST, self._port, "", 202)
        pick = random.Random(lane)
        n, rate = len(self._topics), self._rate / lanes
        loop = asyncio.get_running_loop()
        start = loop.time()
        sent = 0
        try:
            while (elapsed := loop.time() - start) < seconds:
                if sent >= elapsed * rate:
                    await asyncio.sleep(min(0.01, (sent + 1) / rate - elapsed))
                    continue
                sent += 1
                for _ in range(100):  # about two draws: half the topics are active at a time
                    i = pick.randrange(lane, n, lanes)
                    if (i / n + elapsed / self._cycle) % 1 < ACTIVE_SHARE:
                        break  # else (a lane of one or two topics, all idle now): the last
                await self._post(publisher, self._topics[i])
        finally:
            await publisher.disconnect()

    async def _post(self, publisher: Publisher, topic: str) -> None:
        value = self.accepted.get(topic, 0)
        try:
            status = await asyncio.wait_for(
                publisher.post(f"/topics/{topic}/events", b'{"value":%d}' % value), 10
            )
        except (OSError, ProtocolError, asyncio.IncompleteReadError, TimeoutError) as exc:
            # Not counted as accepted: the topic's next event takes this value again.
            self._error(type(exc).__name__)
            await publisher.disconnect()
            return
        if status == 202:
            self.accepted[topic] = value + 1
        else:
            self._error(f"status {status}")

    def _error(self, reason: str) -> None:
        self.errors[reason] = self.errors.get(reason, 0) + 1


class Watcher:
    """One long-lived subscriber: its stream, resumed with `Last-Event-ID` whenever it ends."""

    def __init__(self, port: int, chosen: list[str], accepted: dict[str, int]) -> None:
        self.port, self.selectors = port, chosen
        self.path = "/stream?" + urlencode([("topic", s) for s in chosen])
        self.reader = TopicSequences(TopicMatcher(chosen), accepted)
        self.reconnects = 0
        self.connect_errors = 0
        self._progress = Progress(expected=0)
        self.subscriber: Subscriber | None = None

    async def connect(self) -> bool:
        """Open the stream (resuming after the last id seen); True once it is live."""
        request = stream_request(HOST, self.port, self.path, http10=False)
        if self.reader.last_id is not None:
            resume = self.reader.last_id.text.encode()
            request = request[:-2] + b"Last-Event-ID: %s\r\n\r\n" % resume
            self.reader.reconnected()
        self.subscriber = subscriber = Subscriber(request, self.reader, self._progress)
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(loop.create_connection(lambda: subscriber, HOST, self.port), 10)
            await asyncio.wait_for(subscriber.live.wait(), 20)
        except (OSError, TimeoutError):
            self.connect_errors += 1
            subscriber.close()
            return False
        return not subscriber.ended

    async def keep(self) -> None:
        """Resume the stream whenever the server ends it, until cancelled."""
        while True:
            await asyncio.sleep(0.2)  # the protocol has no "ended" event to await
            if self.subscriber is None or self.subscriber.ended:
                self.reconnects += 1
                if not await self.connect():
                    await asyncio.sleep(1)

    def close(self) -> None:
        if self.subscriber is not None:
            self.subscriber.close()

    @property
    def live(self) -> bool:
        return self.subscriber is not None and not self.subscriber.ended


def sample(deployment: PushsvcServe) -> dict[str, Any]:
    """What the server's processes hold now (blocking: /proc, /metrics, Redis INFO)."""
    pids = deployment.pids()
    found = metrics(deployment.proc.port, "pushsvc_greenlets", "pushsvc_subscribers",
                    "pushsvc_topics_live", "pushsvc_topics_forgotten_total")  # fmt: skip
    used = deployment.redis_used_memory()
    return {
        "cpu_s": sum(cpu for pid in pids if (cpu := cpu_seconds(pid)) is not None),
        "rss_kb": rss_kb(pids),
        "fds": open_fds(pids),
        "greenlets": found["pushsvc_greenlets"],
        "subscribers": found["pushsvc_subscribers"],
        "redis_used_memory": used,
        "topics_live": _int(found["pushsvc_topics_live"]),
        "forgotten": _int(found["pushsvc_topics_forgotten_total"]),
    }


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)


class Soak:
    def __init__(self, args: argparse.Namespace, deployment: PushsvcServe, report: Report) -> None:
        self.args, self.deployment, self.report = args, deployment, report
        port = deployment.proc.port
        self.topics = [topic_name(i) for i in range(args.topics)]
        self.events = Events(port, self.topics, args.rate, args.cycle)
        self.watchers = [
            Watcher(port, selectors(j, self.topics), self.events.accepted)
            for j in range(args.subscribers)
        ]
        pick = random.Random(2)

        def path(i: int) -> str:
            if i % 4 == 3:  # a quarter on /stream with two topics
                two = pick.sample(self.topics, min(2, len(self.topics)))
                return "/stream?" + urlencode([("topic", t) for t in two])
            return f"/topics/{pick.choice(self.topics)}/stream"

        self.churn = Churn(HOST, port, path, args.churn, args.max_open)
        self.rows: list[dict[str, Any]] = []
        self.start = 0.0

    async def _row(self, phase: str) -> dict[str, Any]:
        server = await asyncio.to_thread(sample, self.deployment)
        open_streams = self.churn.open + sum(w.live for w in self.watchers)
        subscribers = _int(server["subscribers"])
        elapsed = time.monotonic() - self.start
        last = self.rows[-1] if self.rows else None
        span = elapsed - last["elapsed_s"] if last else 0.0
        row = {
            "phase": phase,
            "elapsed_s": round(elapsed, 1),
            **server,
            # Server CPU over the last interval, % of one core; the machine's load beside it.
            "cpu_pct": round(100 * (server["cpu_s"] - last["cpu_s"]) / span) if last else None,
            "loadavg": round(os.getloadavg()[0], 1),
            "greenlets": _int(server["greenlets"]),
            "subscribers": subscribers,
            "client_open": open_streams,
            "excess": None if subscribers is None else subscribers - open_streams,
            "accepted": sum(self.events.accepted.values()),
            "churned": self.churn.counts.started,
            "received_min": min((w.reader.received for w in self.watchers), default=0),
        }
        if last:
            row["events_per_s"] = round((row["accepted"] - last["accepted"]) / span)
        self.rows.append(row)
        self.report.row(row)
        return row

    async def _samples(self) -> None:
        """A line every interval while the load runs; not in its last second, when the churn
        is winding down (the end has its own line, after the drain)."""
        interval, k = self.args.interval, 1
        while k * interval <= self.args.seconds - 1:
            await asyncio.sleep(max(0.0, self.start + k * interval - time.monotonic()))
            await self._row("sample")
            k += 1

    async def run(self) -> dict[str, Any]:
        for watcher in self.watchers:
            if not await watcher.connect():
                raise RuntimeError(f"subscriber {watcher.path} did not connect")
        self.report.header()
        self.start = time.monotonic()
        await self._row("start")
        keepers = [asyncio.create_task(w.keep()) for w in self.watchers]
        sampler = asyncio.create_task(self._samples())
        try:
            await asyncio.gather(self.churn.run(self.args.seconds),
                                 self.events.run(self.args.seconds))  # fmt: skip
            sampler.cancel()
            drained_s = await self._drain()
            released_s = await self._released()
            end = await self._row("end")
        finally:
            for task in [sampler, *keepers]:
                task.cancel()
            for watcher in self.watchers:
                watcher.close()
        return self.verdict(end, drained_s, released_s)

    async def _drain(self) -> float | None:
        """Seconds until every long-lived subscriber has every accepted event (None: not in
        `DRAIN_TIMEOUT_S`, or no progress for `DRAIN_IDLE_S`)."""
        began = last_move = time.monotonic()
        received = -1
        while not all(w.reader.caught_up() for w in self.watchers):
            now = time.monotonic()
            total = sum(w.reader.received for w in self.watchers)
            if total != received:
                received, last_move = total, now
            if now - began > DRAIN_TIMEOUT_S or now - last_move > DRAIN_IDLE_S:
                return None
            await asyncio.sleep(0.1)
        return round(time.monotonic() - began, 2)

    async def _released(self) -> float | None:
        """Seconds until the server counts only the long-lived subscribers again (None: not
        within `RELEASE_TIMEOUT_S`)."""
        began = time.monotonic()
        wanted = len(self.watchers)
        while time.monotonic() - began < RELEASE_TIMEOUT_S:
            found = await asyncio.to_thread(metrics, self.deployment.proc.port,
                                            "pushsvc_subscribers")  # fmt: skip
            if found["pushsvc_subscribers"] == wanted:
                return round(time.monotonic() - began, 2)
            await asyncio.sleep(0.05)  # another process's count: nothing to await
        return None

    def verdict(self, end: dict[str, Any], drained_s: float | None,
                released_s: float | None) -> dict[str, Any]:  # fmt: skip
        samples = [r for r in self.rows if r["phase"] == "sample"]
        warmup = self.args.warmup
        judged = [r for r in samples if r["elapsed_s"] >= warmup]
        flat = {key: flatness(judged, key) for key in JUDGED}
        subscribers = [
            {"selectors": w.selectors, "reconnects": w.reconnects,
             **w.reader.judge().as_dict()}
            for w in self.watchers
        ]  # fmt: skip
        exact = (
            all(w.reader.judge().exact for w in self.watchers)
            and not self.events.errors
            and not self.churn.counts.errors
            and drained_s is not None
        )
        flat_ok = all(f["flat"] is not False for f in flat.values()) and released_s is not None
        return {
            "phase": "verdict",
            "broker": self.args.broker,
            "seconds": self.args.seconds,
            "warmup_s": warmup,
            "flat": flat,
            "released_s": released_s,
            "drained_s": drained_s,
            "accepted": sum(self.events.accepted.values()),
            "topics_used": len(self.events.accepted),
            "publish_errors": self.events.errors,
            "churn": {**vars(self.churn.counts)},
            "subscribers": subscribers,
            "forgotten": end.get("forgotten"),
            "exact": exact,
            "ok": exact and flat_ok,
            "machine": machine("pushsvc", "gevent", "redis"),
        }


def flatness(rows: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """Whether `key` stays flat over `rows` (the lines after the warm-up): each rolling median of
    SMOOTH lines within TOLERANCE (or SLACK, for counts) of the first one, the baseline;
    `flat` None: too few lines to judge."""
    values = [r[key] for r in rows if r[key] is not None]
    medians = [median(values[i : i + SMOOTH]) for i in range(len(values) - SMOOTH + 1)]
    if len(medians) < 2:
        return {"baseline": medians[0] if medians else None, "flat": None}
    base = medians[0]
    allowed = max(TOLERANCE * base, SLACK.get(key, 0))
    worst = max(medians[1:], key=lambda v: abs(v - base))
    return {"baseline": base, "worst": worst, "min": min(values), "max": max(values),
            "last": values[-1], "worst_change": round((worst - base) / base, 3) if base else None,
            "flat": abs(worst - base) <= allowed}  # fmt: skip


def say_verdict(report: Report, verdict: dict[str, Any]) -> None:
    say = report.say
    say(f"verdict after {verdict['seconds']:.0f} s ({verdict['broker']}), warm-up "
        f"{verdict['warmup_s']:.0f} s:")  # fmt: skip
    for key, f in verdict["flat"].items():
        state = {True: "flat", False: "GROWS/MOVES", None: "not judged (too few lines)"}
        detail = "" if f["flat"] is None else (
            f" baseline {f['baseline']}, furthest median {f['worst']}; lines: min {f['min']}, "
            f"max {f['max']}, last {f['last']}"
        )  # fmt: skip
        say(f"  {key:<12} {state[f['flat']]}{detail}")
    released = verdict["released_s"]
    say(f"  released     {'NOT' if released is None else f'in {released:.2f} s'}"
        f" (subscribers back to the long-lived ones after the churn)")  # fmt: skip
    churn = verdict["churn"]
    say(f"  events       {verdict['accepted']} accepted over {verdict['topics_used']} topics, "
        f"publish errors {verdict['publish_errors'] or 0}")  # fmt: skip
    say(f"  churn        {churn['started']} streams ({churn['snapshots']} read a snapshot, "
        f"{churn['resets']} reset, {churn['clean']} clean, {churn['skipped']} skipped), "
        f"errors {churn['errors'] or 0}")  # fmt: skip
    for s in verdict["subscribers"]:
        say(f"  {' '.join(s['selectors'])[:24]:<24} received {s['received']} missing "
            f"{s['missing']} duplicates {s['duplicates']} out-of-order {s['out_of_order']} "
            f"unexpected {s['unexpected']} gaps {s['gaps']} id regressions "
            f"{s['id_regressions']} reconnects {s['reconnects']}")  # fmt: skip
    say(f"  deliveries   {'EXACT' if verdict['exact'] else 'NOT EXACT'}"
        f" (drained in {verdict['drained_s']} s)")  # fmt: skip
    say(f"  verdict      {'PASS' if verdict['ok'] else 'FAIL'}")


COLUMNS = (
    ("elapsed s", 9, lambda r: round(r["elapsed_s"])),
    ("RSS MB", 7, lambda r: round(r["rss_kb"] / 1024, 1)),
    ("fds", 6, "fds"), ("greenlets", 9, "greenlets"), ("subs", 6, "subscribers"),
    ("open", 6, "client_open"), ("excess", 6, "excess"),
    ("redis MB", 8, lambda r: None if r["redis_used_memory"] is None
     else round(r["redis_used_memory"] / 2**20, 1)),
    ("live", 5, "topics_live"), ("forgot", 6, "forgotten"), ("accepted", 9, "accepted"),
    ("ev/s", 5, lambda r: r.get("events_per_s")), ("churned", 8, "churned"),
    ("cpu %", 5, "cpu_pct"), ("load", 5, "loadavg"),
)  # fmt: skip


def _parser() -> argparse.ArgumentParser:
    parser = common_parser(
        __doc__, smoke="8 s, 20 topics, 20 events/s, 10 streams/s, 3 subscribers"
    )
    add = parser.add_argument
    add("--minutes", type=float, default=3.0, help="how long (default 3)")
    add("--seconds", type=float, default=None, help="how long, in seconds (wins over --minutes)")
    add("--broker", choices=("redis", "memory"), default="redis")
    add("--topics", type=int, default=1000)
    add("--rate", type=float, default=200.0, help="events per second")
    add("--churn", type=float, default=100.0, help="streams opened (and closed) per second")
    add("--subscribers", type=int, default=5, help="long-lived subscribers")
    add("--topic-ttl", default="20s", help="the server's --topic-ttl")
    add("--windows", default=None, help="the server's --windows (default: 10s and the TTL)")
    add("--cycle", type=float, default=120.0,
        help="seconds per topic cycle: active the first half, idle the second")  # fmt: skip
    add("--interval", type=float, default=None, help="seconds between lines (default 30)")
    add(
        "--warmup",
        type=float,
        default=None,
        help="seconds not judged for flatness (default 20 %% of the run, at least one interval)",
    )
    add("--max-open", type=int, default=2000, help="churn streams under way at most")
    add("--server-args", default="", help="more flags for `pushsvc serve`, e.g. '--heartbeat 1s'")
    return parser


def _settle(args: argparse.Namespace) -> None:
    if args.smoke:
        args.seconds = args.seconds or 8.0
        args.topics, args.rate, args.churn = min(args.topics, 20), min(args.rate, 20.0), 10.0
        args.subscribers = min(args.subscribers, 3)
        args.interval = args.interval or 2.0
    args.seconds = args.seconds if args.seconds is not None else args.minutes * 60
    args.interval = args.interval or 30.0
    if args.warmup is None:
        args.warmup = max(0.2 * args.seconds, args.interval)
    for name in ("seconds", "rate", "churn", "interval", "cycle"):
        if not getattr(args, name) > 0:
            raise SystemExit(f"--{name} must be above 0")
    if args.topics < 1 or args.subscribers < 1:
        raise SystemExit("--topics and --subscribers: at least 1")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _settle(args)
    raise_fd_limit()
    ttl = args.topic_ttl
    server_args = ["--topic-ttl", ttl, "--windows", args.windows or f"10s,{ttl}",
                   *shlex.split(args.server_args)]  # fmt: skip
    deployment = PushsvcServe(redis=args.broker == "redis", extra_args=server_args)
    report = Report(COLUMNS, json=args.json)
    report.say(f"soak: {args.seconds:.0f} s on {deployment.name} {' '.join(server_args)}; "
               f"{args.churn:g} streams/s, {args.rate:g} events/s over {args.topics} topics, "
               f"{args.subscribers} long-lived subscribers")  # fmt: skip
    deployment.start()
    try:
        verdict: dict[str, Any] = {}

        async def soak() -> None:
            verdict.update(await Soak(args, deployment, report).run())

        run_loop(soak(), uvloop_allowed=True)
    finally:
        deployment.stop()
    say_verdict(report, verdict)
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(verdict) + b"\n")
        sys.stdout.flush()
    if args.smoke or args.check:
        return 0 if verdict["exact"] else 1
    return 0 if verdict["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
