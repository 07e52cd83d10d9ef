"""The delivery promise for Mercure under faults (docs/mercure.md, "Faults"): three publishers
post Mercure updates (`POST /.well-known/mercure`, 30 a second each, each on a topic of its
own, all kept in the hub's one partition of 4) to two web processes, while six
EventSource-like subscribers (`GET /.well-known/mercure?match=…`: one IRI, two, all three, a
URL pattern) stay connected or resume with `Last-Event-ID` = the last event id they received,
to another web process when theirs is gone, some dropping their stream themselves mid-run.
Each receives every acknowledged update (answered `200`) once, all in the order the hub kept
them whatever publishers it selects (one sequence), none twice, and no gap: these faults keep
the history (`mercure.check_mercure`).

Faults, each at two moments of the run (after 25 and after 70 acknowledged updates of the
first publisher), on one redis-server and, the kills with an aggregator's, on a Redis Cluster:

* `web` — kill -9 of a web process under load: its streams break off, POSTs in flight to it
  get no answer (neither is acknowledged; one that was logged must arrive once all the same);
* `web-and-holder` — the same, and kill -9 of the aggregator holding the first publisher's
  partition (Mercure updates are delivered once the aggregator applies them): the other
  aggregator takes the partition over;
* `holder-at-first-bytes` — kill -9 of that aggregator the moment the first bytes of an
  update of the first publisher's topic are published (`moments.KillOnFirstMessage`), and of
  a web process right after;
* Redis shut down (keeping its data), POSTs answered `503` for a few seconds, then started
  again with its data: first with no POST in flight at the shutdown, then with POSTs in
  flight;
* on a Redis Cluster of its own, the primary that holds the first publisher's partition shut
  down the same way, its replica told not to take over (an outage of its slots, not a
  failover: `test_cluster_scenarios.py` has those): the publishers whose partitions it holds
  (all of them: the hub's topics are in one partition) are answered `503`, and all are
  answered `200` once it is back.

Run with `-s` for each case's figures.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import pytest
from harness.live import PushsvcProcess, wait_until
from harness.redis_cluster import RedisClusterServers
from harness.redis_server import RedisServer

from faults.backends import Store, on_both
from faults.mercure import (
    ENV,
    MercurePublisher,
    MercureWatcher,
    check_mercure,
    hub_iris,
    settle,
)
from faults.moments import Case, KillOnFirstMessage
from pushsvc.broker.redis.slots import partition_slot
from pushsvc.core.partitions import partition_of
from pushsvc.deliver.mercure_updates import topic_name

pytestmark = [pytest.mark.redis, pytest.mark.slow]

PARTITIONS = 4
PUBLISHERS = 3
OFFSETS = (25, 70)
"""Acknowledged updates of the first publisher at each fault of a run."""
AFTER = 25
"""Acknowledged updates of each publisher after the last fault, before the run settles."""


class Run:
    """One case: a deployment (`Case`: its own prefix on the test's Redis), its publishers,
    each on a topic IRI of a partition of its own, and its watchers, each primed."""

    def __init__(self, store: Store) -> None:
        self.case = Case(store, lease="1s", env={"PUSHSVC_PARTITIONS": str(PARTITIONS), **ENV})
        self.name = self.case.name
        self.iris = hub_iris(self.name, PUBLISHERS, PARTITIONS)
        self.publishers: list[MercurePublisher] = []
        self.watchers: list[MercureWatcher] = []

    def start(self) -> None:
        self.case.start(webs=2, standbys=1)
        ports = self.case.stack.ports
        pattern = ("match_urlpattern", f"https://example.com/{self.name}/:topic")
        every = set(range(PUBLISHERS))
        kinds: list[tuple[list[tuple[str, str]], set[int], tuple[int, ...]]] = [
            ([("match", self.iris[0])], {0}, ()),
            ([("match", iri) for iri in self.iris], every, (40, 150)),
            ([pattern], every, (90,)),
            ([("match", self.iris[1]), ("match", self.iris[2])], {1, 2}, ()),
            ([pattern], every, ()),
            ([("match", self.iris[2])], {2}, (25,)),
        ]
        for index, (selectors, publishers, drops) in enumerate(kinds):
            watcher = MercureWatcher(ports, selectors, publishers, index, drops=drops)
            self.watchers.append(watcher)
            watcher.start()
        for watcher in self.watchers:
            assert watcher.primed.wait(15), f"{watcher.name} never connected"
        for k, iri in enumerate(self.iris):
            publisher = MercurePublisher(ports, self.name, k, iri)
            self.publishers.append(publisher)
            publisher.start()

    def lease_of(self, k: int) -> str:
        """The lease of publisher k's partition."""
        return self.case.keys.of(topic_name(self.iris[k])).lease

    def finish(self) -> dict[str, object]:
        for publisher in self.publishers:
            publisher.await_acked(len(publisher.acked) + AFTER)
        kept = settle(self.watchers, self.publishers, self.case.redis, self.case.keys)
        return check_mercure(self.watchers, self.publishers, kept)

    def close(self) -> None:
        for publisher in self.publishers:
            publisher.stop()
        for watcher in self.watchers:
            watcher.stop()
        self.case.close()


Fault = Callable[[Run], None]


def _replace_web(run: Run, web: PushsvcProcess) -> None:
    run.case.stack.kill_web(web)
    run.case.stack.start_web()  # where the next resumes and POSTs go


def _take_over(run: Run, killed: PushsvcProcess) -> None:
    """Until another aggregator holds the first publisher's partition; a new standby."""
    run.case.holder(key=run.lease_of(0), besides=[killed], timeout=run.case.takeover_timeout)
    run.case.stack.start_aggregator()


def web(run: Run) -> None:
    _replace_web(run, run.case.stack.webs[0])


def web_and_holder(run: Run) -> None:
    holder = run.case.holder(key=run.lease_of(0))
    run.case.stack.kill_aggregator(holder)
    _replace_web(run, run.case.stack.webs[0])
    _take_over(run, holder)


def holder_at_first_bytes(run: Run) -> None:
    holder = run.case.holder(key=run.lease_of(0))
    killer = KillOnFirstMessage(run.case, topic_name(run.iris[0]), holder.pid)
    assert killer.fired(10), "no update of the first publisher was published"
    run.case.stack.aggregators.remove(holder)
    holder.kill()  # reaped (it is dead already)
    _replace_web(run, run.case.stack.webs[0])
    _take_over(run, holder)


KILLS: dict[str, Fault] = {
    "web": web,
    "web-and-holder": web_and_holder,
    "holder-at-first-bytes": holder_at_first_bytes,
}


CLUSTER_KILLS = ("web-and-holder", "holder-at-first-bytes")
"""The kills that also run on the cluster, both with the aggregator's (`web` alone differs
there only by where the streams' pub/sub runs, which the other two cover;
`TEST_PUSHSVC_EVERY_CASE_ON_CLUSTER=1` runs it there too)."""


def _report(name: str, figures: dict[str, object], started: float) -> None:
    """The case's figures (`-s` shows them). The hub's updates are one sequence (one
    partition), so a resume from any update's id is exact: none passed over, none re-sent."""
    lost = figures.pop("lost_across_partitions")
    assert isinstance(lost, list)
    figures["lost_across_partitions"] = len(lost)
    figures["seconds"] = round(time.monotonic() - started, 1)
    print(f"\nmercure, {name}: {json.dumps(figures)}")
    assert not lost, f"passed over by a resume: {lost[:4]}"
    assert figures["resent_across_partitions"] == 0, figures


@pytest.mark.parametrize(
    ("fault", "backend"), on_both(KILLS, cluster=CLUSTER_KILLS), indirect=["backend"]
)
def test_kill_9_mid_publication(store: Store, backend: str, fault: str) -> None:
    started = time.monotonic()
    run = Run(store)
    try:
        run.start()
        for offset in OFFSETS:
            run.publishers[0].await_acked(offset)
            KILLS[fault](run)
        figures = run.finish()
    finally:
        run.close()
    _report(f"kill -9 {fault}, {backend}", figures, started)


def _await_each(
    publishers: list[MercurePublisher],
    before: list[int],
    count: Callable[[MercurePublisher], int],
    more: int,
    what: str,
) -> None:
    """Until `count` of every one of `publishers` is `more` past what `before` says it was."""
    pairs = list(zip(publishers, before, strict=True))
    wait_until(lambda: all(count(p) >= n + more for p, n in pairs), timeout=20, what=what)


OUTAGES = ("between-posts", "under-load")
"""When Redis goes down, one outage each, at the offsets in turn: between two POSTs of every
publisher (they are paused for it), or with POSTs in flight."""


def test_redis_down_and_back_with_its_data() -> None:
    started = time.monotonic()
    with RedisServer() as server:
        run = Run(server)
        try:
            run.start()
            for offset, moment in zip(OFFSETS, OUTAGES, strict=True):
                run.publishers[0].await_acked(offset)
                if moment == "between-posts":
                    for publisher in run.publishers:
                        publisher.pause()
                refused = [p.statuses[503] for p in run.publishers]
                server.shut_down_keeping_data()
                for publisher in run.publishers:
                    publisher.resume()
                # Down a few seconds: every publisher told `503` a few times.
                _await_each(
                    run.publishers,
                    refused,
                    lambda p: p.statuses[503],
                    3,
                    "503s while Redis is down",
                )
                server.start()
                acked = [len(p.acked) for p in run.publishers]
                _await_each(
                    run.publishers, acked, lambda p: len(p.acked), 1, "a 200 after Redis is back"
                )
            figures = run.finish()
        finally:
            run.close()
    _report("redis down, back with its data", figures, started)


@pytest.fixture
def own_cluster() -> Iterator[RedisClusterServers]:
    """A Redis Cluster of the test's own (3 primaries, a replica each): it takes a node down."""
    with RedisClusterServers() as made:
        yield made


@pytest.mark.cluster
def test_a_cluster_primary_down_and_back_with_its_data(own_cluster: RedisClusterServers) -> None:
    started = time.monotonic()
    run = Run(own_cluster)
    try:
        run.start()
        slots = [
            partition_slot(partition_of(topic_name(i), PARTITIONS), PARTITIONS) for i in run.iris
        ]
        primary = own_cluster.owner_of(slots[0])
        # An outage of its slots until it is back, not a failover to its replica.
        for replica in own_cluster.replicas_of(primary):
            client = own_cluster.client(replica)
            client.config_set("cluster-replica-no-failover", "yes")
            client.close()
        on_it = [
            p
            for p, slot in zip(run.publishers, slots, strict=True)
            if own_cluster.owner_of(slot) is primary
        ]
        for offset, moment in zip(OFFSETS, OUTAGES, strict=True):
            run.publishers[0].await_acked(offset)
            if moment == "between-posts":
                for publisher in run.publishers:
                    publisher.pause()
            refused = [p.statuses[503] for p in on_it]
            elsewhere = [p for p in run.publishers if p not in on_it]
            acked_elsewhere = [len(p.acked) for p in elsewhere]
            primary.shut_down_keeping_data()
            for publisher in run.publishers:
                publisher.resume()
            # Down a few seconds: every publisher of its partitions told `503` a few times,
            # the others' updates acknowledged meanwhile.
            _await_each(on_it, refused, lambda p: p.statuses[503], 3, "503s while it is down")
            _await_each(elsewhere, acked_elsewhere, lambda p: len(p.acked), 3, "200s elsewhere")
            primary.start()
            own_cluster.wait_until_settled()
            acked = [len(p.acked) for p in run.publishers]
            _await_each(run.publishers, acked, lambda p: len(p.acked), 1, "a 200 once it is back")
        figures = run.finish()
    finally:
        run.close()
    figures["publishers_on_the_primary"] = len(on_it)
    _report("cluster: a partition's primary down, back with its data", figures, started)
