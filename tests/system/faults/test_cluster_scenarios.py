"""The fault suite on a real Redis Cluster (3 primaries, a replica each, of the test's own):
two web processes and two elastic aggregators sharing 16 partitions, streaming clients of one
topic that reconnect like EventSource, a producer posting under `MIN_REPLICAS=1`. The Redis
faults hit the primary that holds the watched topic's partition; the others kill an
aggregator (and add one) and a web process. Each test asserts the delivery
promise per watcher (`check_delivery`: every acknowledged event's update exactly once and in
order, the last update's windows the statistics of every applied event, no status but
202/503, no POST slower than 2 s).

With late events mixed in (a rule's grace beyond `--grace`: corrections of published buckets,
and events past the grace kept on the late stream), a partition's slot moves mid-burst at
several moments (the topic's partition at the first late event, or while a correction is due;
the late stream's partition after an event past the grace): every `?series=` watcher gets every
point and correction once, in order, as an uninterrupted run publishes them, every watcher
every update once, and the series reads equal pandas' resample of the accepted events.

Run with `-s` for each scenario's figures (docs/reliability.md)."""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness.live import request
from harness.redis_cluster import RedisClusterServers

from faults.harness import (
    FaultStack,
    Producer,
    Watcher,
    check_delivery,
    drain,
    points_differ,
    published_points,
    under_load,
    wait_for,
)
from pushsvc.broker.redis.slots import partition_slot
from pushsvc.core.lateness import late_topic
from pushsvc.core.partitions import partition_of
from pushsvc.rules.analytics import default_rule, load_rules
from support.series_oracle import check_points

pytestmark = [pytest.mark.redis, pytest.mark.cluster, pytest.mark.slow]

S = 1_000_000
P = 16
WATCHERS = 10
LOAD_S = 3.0  # of steady load before and after each fault


@pytest.fixture
def cluster() -> Iterator[RedisClusterServers]:
    with RedisClusterServers() as made:
        yield made


@contextlib.contextmanager
def _two_webs_and_two_aggregators(
    cluster: RedisClusterServers, prefix: str, **env: str
) -> Iterator[FaultStack]:
    """Two web processes and two aggregators on `P` partitions, a write confirmed by a replica,
    once every partition is owned."""
    made = FaultStack(
        cluster,
        prefix,
        env={"PUSHSVC_PARTITIONS": str(P), "PUSHSVC_REDIS_MIN_REPLICAS": "1", **env},
    )
    try:
        for _ in range(2):
            made.start_web()
        for _ in range(2):
            made.start_aggregator()
        wait_for(lambda: _ready(made), 30, "every partition owned")
        yield made
    finally:
        made.stop()


@pytest.fixture
def deployment(cluster: RedisClusterServers, prefix: str) -> Iterator[FaultStack]:
    with _two_webs_and_two_aggregators(cluster, prefix) as made:
        yield made


def _ready(deployment: FaultStack) -> bool:
    return all(request(port, "GET", "/readyz")[0] == 200 for port in deployment.ports())


def _loaded(deployment: FaultStack) -> tuple[int, list[Watcher], Producer, float]:
    """Watchers and a producer of a fresh topic, after LOAD_S of steady load: the slot of the
    topic's partition, them, and when the load began."""
    topic, watchers, producer = under_load(deployment, WATCHERS)
    started = time.monotonic()
    time.sleep(LOAD_S)
    return partition_slot(partition_of(topic, P), P), watchers, producer, started


def _finish(name: str, watchers: list[Watcher], producer: Producer, started: float) -> None:
    time.sleep(LOAD_S)
    producer.stop()
    drain(watchers, producer, timeout=40)
    for watcher in watchers:
        watcher.stop()
    figures = check_delivery(watchers, producer)
    figures["seconds"] = round(time.monotonic() - started, 1)
    print(f"\n{name}: {json.dumps(figures)}")


def test_kill_9_of_the_primary_of_the_watched_partition(
    cluster: RedisClusterServers, deployment: FaultStack
) -> None:
    slot, watchers, producer, started = _loaded(deployment)
    old = cluster.owner_of(slot)
    acked_before = len(producer.acked)
    killed_at = time.monotonic()
    cluster.kill(old)
    dead_at = time.monotonic()
    wait_for(lambda: cluster.owner_of(slot) is not old, 30, "its replica promoted")
    promoted = time.monotonic() - killed_at
    # With MIN_REPLICAS=1 the promoted primary confirms appends again once it has a replica.
    cluster.add_replica(cluster.owner_of(slot))
    wait_for(lambda: len(producer.acked) > acked_before + 10, 30, "202s again")
    recovered = time.monotonic() - killed_at
    producer.note_unanswered(killed_at, dead_at)
    _finish("cluster: kill -9 of the partition's primary", watchers, producer, started)
    print(f"promoted after {promoted:.2f} s; POSTs acknowledged again {recovered:.2f} s")


def _move_under_load(cluster: RedisClusterServers, slot: int) -> float:
    """Move `slot` to another primary one key at a time, the load running between (appends
    and publications meet the slot half moved); how long it took."""
    source = cluster.owner_of(slot)
    target = next(p for p in cluster.primaries() if p is not source)
    moved_at = time.monotonic()
    cluster.move_slot(slot, target, keys_at_once=1, between=lambda: time.sleep(0.02))
    moving_s = time.monotonic() - moved_at
    assert cluster.owner_of(slot) is target
    return moving_s


def test_the_watched_partition_moved_to_another_primary_under_load(
    cluster: RedisClusterServers, deployment: FaultStack
) -> None:
    slot, watchers, producer, started = _loaded(deployment)
    moving_s = _move_under_load(cluster, slot)
    _finish("cluster: the partition's slot moved under load", watchers, producer, started)
    print(f"the slot moved in {moving_s:.2f} s")


def test_kill_9_of_an_aggregator_then_one_added(deployment: FaultStack) -> None:
    _, watchers, producer, started = _loaded(deployment)
    survivor = deployment.aggregators[1]
    deployment.kill_aggregator(deployment.aggregators[0])  # its partitions move to the other
    killed_at = time.monotonic()
    leases = [part.lease for part in deployment.keys]
    wait_for(lambda: all(survivor.holds_lease(k) for k in leases), 30, "the survivor owns all")
    moved = time.monotonic() - killed_at
    deployment.start_aggregator()  # the newcomer takes its share from the survivor
    _finish("cluster: kill -9 of an aggregator, then one added", watchers, producer, started)
    print(f"the survivor owned every partition {moved:.2f} s after the kill")


def test_kill_9_of_a_web_process(deployment: FaultStack) -> None:
    _, watchers, producer, started = _loaded(deployment)
    deployment.kill_web(deployment.webs[0])  # its streams resume on the other, by cursor
    deployment.start_web()
    _finish("cluster: kill -9 of a web process", watchers, producer, started)


# -- late events and corrections through a reshard ------------------------------------------

LATE_RULES = """
[[rule]]
topics = ["late.*"]
windows = ["10s", "1m", "5m"]
grace = "30s"
series = ["1s:15m", "10s:1h"]
"""
LATE_TIERS = (("1s", 1 * S), ("10s", 10 * S))
SERIES_WATCHERS = 3
PLAIN_WATCHERS = 3
BURST = 600
"""Events per run: 6 s at 100/s, 12 s of event time (20 ms apart)."""


def _late_lag_us(n: int) -> int:
    """One event in ten late within the 30 s grace (by 1 to 19 s, so into buckets published
    already: a correction each), one in forty past it (on the late stream)."""
    if n % 10 == 5:
        return ((n * 7919) % 900 + 50) * 20_000
    if n % 40 == 17:
        return (45 + n % 7) * S
    return 0


def _within_grace(n: int) -> bool:
    return 0 < _late_lag_us(n) < 30 * S


def _past_grace(n: int) -> bool:
    return _late_lag_us(n) >= 30 * S


# When the reshard starts (in the producer's thread, the moment event n is answered 202), and
# which partition it moves: the topic's, or its late stream's (the same one, since a late
# stream lives in its topic's partition: moved just after an event past the grace).
RESHARD_MOMENTS = {
    # The first late event: its bucket's correction and the first points are all to come.
    "at-the-first-late-event": (lambda n: n == 5, "topic"),
    # Mid-burst, a late event just logged and its correction not yet due (the clock passes
    # the next whole second 50 events later): the slot half moved when it is published.
    "while-a-correction-is-due": (lambda n: n >= 250 and _within_grace(n), "topic"),
    # The partition of the late stream, just after an event past the grace was kept there.
    "the-late-stream-after-an-event-past-the-grace": (
        lambda n: n >= 250 and _past_grace(n),
        "late",
    ),
}


@pytest.fixture
def late_deployment(
    cluster: RedisClusterServers, prefix: str, tmp_path: Path
) -> Iterator[FaultStack]:
    rules = tmp_path / "rules.toml"
    rules.write_text(LATE_RULES)
    with _two_webs_and_two_aggregators(
        cluster,
        prefix,
        PUSHSVC_RULES=str(rules),
        PUSHSVC_GRACE="1s",  # buckets publish 1 s after their end; the rule keeps 30 s
        PUSHSVC_SERIES=",".join(f"{label}:1h" for label, _ in LATE_TIERS),
    ) as made:
        yield made


def _late_topic() -> str:
    """A fresh topic (its late stream is in its partition: one append logs both)."""
    topic = f"late.{uuid.uuid4().hex[:8]}"
    assert partition_of(topic, P) == partition_of(late_topic(topic), P)
    return topic


@pytest.mark.parametrize("moment", list(RESHARD_MOMENTS))
def test_late_events_and_corrections_through_a_reshard(
    cluster: RedisClusterServers, late_deployment: FaultStack, tmp_path: Path, moment: str
) -> None:
    """Producers' events, some late within the rule's grace (each correcting a published
    bucket) and some past it, while a partition's slot moves to another primary at `moment`.
    Every watcher of `/stream` gets every update once, in order, and every watcher of
    `?series=` every point and every correction once, in order (exactly what an uninterrupted
    run publishes); the series reads equal pandas' resample of the accepted events; the late
    stream holds each event past the grace once. Every POST is answered 202."""
    deployment = late_deployment
    topic = _late_topic()
    watchers = [
        Watcher(deployment, topic, i, query="?series=1s&series=10s" if i < SERIES_WATCHERS else "")
        for i in range(SERIES_WATCHERS + PLAIN_WATCHERS)
    ]
    for watcher in watchers:
        watcher.start()
    for watcher in watchers:
        assert watcher.subscribed.wait(10), "a watcher never got its snapshot"
    producer = Producer(deployment, topic, rate=100.0, lag_us=_late_lag_us)
    starts, moved = RESHARD_MOMENTS[moment]
    reshard_now = threading.Event()
    producer.on_acked = lambda n: reshard_now.set() if starts(n) else None
    started = time.monotonic()
    producer.start()
    assert reshard_now.wait(30), "the moment never came"
    acked_at_move = len(producer.acked) + len(producer.kept_late)
    slot = partition_slot(partition_of(late_topic(topic) if moved == "late" else topic, P), P)
    moving_s = _move_under_load(cluster, slot)
    wait_for(lambda: len(producer.acked) + len(producer.kept_late) >= BURST, 60, "the burst")
    producer.stop()
    # One event past every bucket's grace: each bucket is published and corrected for good.
    flush_ts = max(ts for _, ts in producer.acked) + 40 * S
    flush = (float(BURST + 1000), flush_ts)
    status, _, _ = request(
        deployment.ports()[0], "POST", f"/topics/{topic}/events",
        {"value": flush[0], "ts": flush_ts / S},
    )  # fmt: skip
    assert status == 202
    producer.acked.append(flush)
    drain(watchers, producer, timeout=40)

    rules = load_rules(str(tmp_path / "rules.toml"), default_rule((10 * S,), ("count",)))
    expected = published_points(rules, producer.acked, topic, grace_us=1 * S)
    corrections = [m for m in expected if m.get("correction")]
    assert len(corrections) >= 10 and {m["resolution"] for m in corrections} == {"1s", "10s"}
    series_watchers = watchers[:SERIES_WATCHERS]
    # A point follows the update that closed it: wait for the last ones (what is missing
    # then shows in the comparison below).
    with contextlib.suppress(AssertionError):
        wait_for(
            lambda: all(len(w.received.points) >= len(expected) for w in series_watchers), 20, ""
        )
    for watcher in watchers:
        watcher.stop()
    figures = check_delivery(watchers, producer)
    assert set(producer.statuses) == {202}, producer.statuses
    for watcher in series_watchers:
        ids = [i for i, _ in watcher.received.points]
        assert len(set(ids)) == len(ids), f"{watcher.name}: a point arrived twice"
        got = [{k: v for k, v in data.items() if k != "id"} for _, data in watcher.received.points]
        assert got == expected, points_differ(watcher, got, expected)
    for watcher in watchers[SERIES_WATCHERS:]:
        assert watcher.received.points == [], watcher.name
    accepted = [(ts, value) for value, ts in producer.acked if ts < flush_ts]
    port = deployment.ports()[0]
    for label, width in LATE_TIERS:
        status, _, body = request(port, "GET", f"/topics/{topic}/series?resolution={label}")
        assert status == 200, body
        points = [p for p in json.loads(body)["points"] if p["t"] * S < flush_ts - width]
        check_points(points, accepted, label=label, width_us=width, exact_percentiles=label == "1s")
    # Past the grace: each on the late stream once, in order.
    status, _, body = request(port, "GET", f"/topics/{late_topic(topic)}/history?limit=10000")
    assert status == 200, body
    kept = [u["event"]["value"] for u in json.loads(body)["updates"] if u.get("event")]
    assert kept == [value for value, _ in producer.kept_late]
    assert len(kept) >= 10
    figures |= {
        "kept late": len(producer.kept_late),
        "corrections": len(corrections),
        "posted before the move": acked_at_move,
        "seconds": round(time.monotonic() - started, 1),
    }
    print(f"\ncluster: late events, reshard {moment}: {json.dumps(figures)}")
    print(f"the slot moved in {moving_s:.2f} s")
