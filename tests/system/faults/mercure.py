"""Mercure under faults: what the Mercure scenarios share (test_mercure_promise.py).

A `MercurePublisher` publishes numbered updates to one topic IRI through
`POST /.well-known/mercure`, one at a time, each with an id of its own (`{run}-p{k}-{n}`),
to the web processes in turn, and remembers which were acknowledged (`200`). Several run at
once, each on a topic of its own: all of the hub's topics are kept in one partition
(`pushsvc.core.partitions`), so the hub's updates are one sequence.

A `MercureWatcher` subscribes as a browser's `EventSource` does: when its stream ends it
reconnects (to another web process when its own is gone) with `Last-Event-ID` = the last
event id it received (`EventStreamParser.last_event_id`, a bare `id:` too), and some drop
their stream themselves at given counts, as a tab that lost its network. It records, per
connection, the id it resumed with.

`check_mercure` holds what each watcher received to the promise: every acknowledged update
of each publisher whose topic it selects, once; all of them in the order the hub kept them
(one sequence, whatever publishers it selects); none it did not select, none that was not
logged, no gap (these faults keep the history). Where each update is kept is read from Redis
after the run (`history_times`). The checks of a re-send or a loss across partitions (a
resume by time, before the hub's topics were kept together) stay, and now fail on any.
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import jwt
import orjson
import redis
from harness.sse_parser import EventStreamParser

from pushsvc.broker.redis.keys import Keys, PartitionKeys
from pushsvc.core.partitions import partition_of
from pushsvc.deliver.mercure_updates import topic_name
from support.mercure_hub import HUB, SECRET
from support.promise import promise_kept

ENV = {"PUSHSVC_MERCURE": "anonymous", "PUSHSVC_JWT_KEY": SECRET}
"""What a deployment's processes need to be a Mercure hub."""


def publisher_token() -> str:
    claims = {"mercure": {"publish": ["*"]}, "exp": int(time.time()) + 3600}
    return jwt.encode(claims, SECRET, algorithm="HS256")


def hub_iris(run: str, count: int, partitions: int) -> list[str]:
    """`count` topic IRIs under `https://example.com/{run}/`: pushsvc topics of their own, all
    kept in the hub's one partition (`pushsvc.core.partitions`), which is checked."""
    iris = [f"https://example.com/{run}/p{k}" for k in range(count)]
    assert len({partition_of(topic_name(iri), partitions) for iri in iris}) == 1
    assert len({topic_name(iri) for iri in iris}) == count
    return iris


class MercurePublisher(threading.Thread):
    """Publishes update n (data `{"k": k, "n": n}`, id `{run}-p{k}-{n}`) to `iri`, one at a
    time (`rate` a second), to the processes `ports()` names in turn."""

    def __init__(
        self, ports: Callable[[], list[int]], run: str, k: int, iri: str, *, rate: float = 30
    ) -> None:
        super().__init__(daemon=True, name=f"mercure-publisher-{k}")
        self.ports = ports
        self.run_name = run
        self.k = k
        self.iri = iri
        self.interval = 1.0 / rate
        self.token = publisher_token()
        self.acked: list[int] = []
        self.unacked: list[int] = []
        """Answered otherwise (503) or not at all (its process died): logged or not."""
        self.statuses: Counter[int] = Counter()
        self.slowest_s = 0.0
        self.stopping = threading.Event()
        self._running = threading.Event()
        self._running.set()
        self._idle = threading.Event()
        self._n = 0

    def update_id(self, n: int) -> str:
        return f"{self.run_name}-p{self.k}-{n}"

    def run(self) -> None:
        while not self.stopping.is_set():
            if not self._running.is_set():
                self._idle.set()
                self._running.wait(0.05)
                continue
            self._idle.clear()
            ports = self.ports()
            if ports:
                self._publish(ports[(self._n + self.k) % len(ports)], self._n)
                self._n += 1
            self.stopping.wait(self.interval)

    def _publish(self, port: int, n: int) -> None:
        form = [
            ("topic", self.iri),
            ("data", json.dumps({"k": self.k, "n": n})),
            ("id", self.update_id(n)),
        ]
        started = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request(
                "POST",
                HUB,
                urlencode(form),
                {
                    "Authorization": f"Bearer {self.token}",
                    "Content-Type": "application/x-www-form-urlencoded",
                },
            )
            response = conn.getresponse()
            status, answer = response.status, response.read()
        except (OSError, http.client.HTTPException):
            status, answer = 0, b""
        finally:
            conn.close()
        self.statuses[status] += 1
        self.slowest_s = max(self.slowest_s, time.monotonic() - started)
        if status == 200:
            assert answer.decode() == self.update_id(n), answer
            self.acked.append(n)
        else:
            self.unacked.append(n)

    def await_acked(self, count: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acked) < count:
            assert time.monotonic() < deadline, f"{self.name}: {count} never acknowledged"
            time.sleep(0.02)

    def pause(self) -> None:
        """Return once no POST is in flight, and none will be until `resume`."""
        self._idle.clear()
        self._running.clear()
        assert self._idle.wait(10), f"{self.name} did not pause"

    def resume(self) -> None:
        self._running.set()

    def stop(self) -> None:
        self.stopping.set()
        self._running.set()
        if self.ident is not None:
            self.join(10)


@dataclass
class Seen:
    """What one watcher received: (connection, id, k, n) of each update, in order; the ids it
    resumed with, per connection (None: none); the count received before each `event: gap`."""

    updates: list[tuple[int, str, int, int]] = field(default_factory=list)
    resumed_with: list[str | None] = field(default_factory=list)
    gaps: list[int] = field(default_factory=list)


class MercureWatcher(threading.Thread):
    """One EventSource-like Mercure subscriber of `selectors` on the processes `ports()`
    names; `publishers`: the indices of the publishers whose topics its selectors match."""

    def __init__(
        self,
        ports: Callable[[], list[int]],
        selectors: Sequence[tuple[str, str]],
        publishers: Collection[int],
        index: int,
        *,
        drops: Sequence[int] = (),
    ) -> None:
        super().__init__(daemon=True, name=f"mercure-watcher-{index}")
        self.ports = ports
        self.path = f"{HUB}?{urlencode(list(selectors))}"
        self.publishers = frozenset(publishers)
        self.index = index
        self.drops = frozenset(drops)
        self.seen = Seen()
        self.last_id: str | None = None
        self.primed = threading.Event()
        """Set once its first stream's first bytes are in: it receives what follows."""
        self.stopping = threading.Event()

    def run(self) -> None:
        attempt = self.index
        while not self.stopping.is_set():
            ports = self.ports()
            if ports:
                with contextlib.suppress(OSError, http.client.HTTPException):
                    self._stream(ports[attempt % len(ports)])
            attempt += 1
            self.stopping.wait(0.1)  # the `retry:` the servers send

    def _stream(self, port: int) -> None:
        headers = {"Last-Event-ID": self.last_id} if self.last_id else {}
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=3)
        try:
            conn.request("GET", self.path, headers=headers)
            response = conn.getresponse()
            if response.status != 200:
                return
            connection = len(self.seen.resumed_with)
            self.seen.resumed_with.append(self.last_id)
            parser = EventStreamParser()
            while not self.stopping.is_set():
                chunk = response.read1(65536)
                if not chunk:
                    return
                self.primed.set()  # its first bytes (`retry:`) follow the priming
                messages = parser.feed(chunk)
                if parser.last_event_id:
                    self.last_id = parser.last_event_id
                for message in messages:
                    if message.event == "gap":
                        self.seen.gaps.append(len(self.seen.updates))
                        continue
                    data = json.loads(message.data)
                    self.seen.updates.append((connection, message.id, data["k"], data["n"]))
                    if len(self.seen.updates) in self.drops:
                        # Dropped: resume with this id (an EventSource's, whatever followed
                        # in the same chunk).
                        self.last_id = message.id
                        return
        finally:
            conn.close()

    def stop(self) -> None:
        self.stopping.set()


@dataclass(frozen=True)
class Kept:
    """Where the history keeps an update: its partition, its history time (ms) and its
    place in its partition's history (the stream entry's id)."""

    partition: int
    ms: int
    place: tuple[int, int] = (0, 0)


def history_times(
    client: redis.Redis, keys: Keys, publishers: Sequence[MercurePublisher]
) -> dict[str, Kept]:
    """Where each publisher's updates are kept, by Mercure id: read from their partitions'
    histories (`{prefix}{p}:history`, the stream id's milliseconds being the update's time)."""
    kept: dict[str, Kept] = {}
    for publisher in publishers:
        topic = topic_name(publisher.iri)
        partition = partition_of(topic, keys.partitions)
        entries: Any = client.xrange(keys.partition(partition).history)
        for entry_id, fields in entries:
            if fields.get(b"t") != topic.encode():
                continue
            body = orjson.loads(fields[b"b"])
            if "event" not in body:
                continue  # a series point of the topic (its messages by type)
            update_id = body["event"]["data"]["id"]
            assert update_id not in kept, f"{update_id} is in the history twice"
            ms, seq = (int(part) for part in entry_id.split(b"-"))
            kept[update_id] = Kept(partition, ms, (ms, seq))
    return kept


def caught_up(watchers: Sequence[MercureWatcher], newest: dict[int, int], timeout: float) -> bool:
    """Wait until every watcher has update `newest[k]` of each publisher k it selects (False
    if not in time: the check then says what is missing)."""

    def has_newest(watcher: MercureWatcher) -> bool:
        had: dict[int, int] = {}
        for _, _, k, n in watcher.seen.updates:
            had[k] = max(n, had.get(k, -1))
        return all(had.get(k, -1) >= n for k, n in newest.items() if k in watcher.publishers)

    deadline = time.monotonic() + timeout
    while not all(has_newest(w) for w in watchers):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def wait_applied(client: redis.Redis, keys: Keys, timeout: float = 30) -> None:
    """Until every partition has applied everything logged (the history holds it all)."""

    def applied(partition: PartitionKeys) -> bool:
        last: Any = client.xrevrange(partition.log, count=1)
        if not last:
            return True
        position = client.hget(partition.applied, "id")
        return bool(position == last[0][0])

    deadline = time.monotonic() + timeout
    while not all(applied(partition) for partition in keys):
        assert time.monotonic() < deadline, "the log was never applied"
        time.sleep(0.05)


def settle(
    watchers: Sequence[MercureWatcher],
    publishers: Sequence[MercurePublisher],
    client: redis.Redis,
    keys: Keys,
    timeout: float = 30,
) -> dict[str, Kept]:
    """Stop the publishers, let every watcher receive what was logged, stop them; where the
    history keeps each update (`history_times`)."""
    for publisher in publishers:
        publisher.stop()
    newest = {p.k: p.acked[-1] for p in publishers if p.acked}
    caught_up(watchers, newest, timeout)
    wait_applied(client, keys, timeout)
    kept = history_times(client, keys, publishers)
    for publisher in publishers:
        logged = [n for n in publisher.unacked if publisher.update_id(n) in kept]
        newest[publisher.k] = max([newest.get(publisher.k, -1), *logged])
    caught_up(watchers, newest, timeout)
    for watcher in watchers:
        watcher.stop()
    return kept


def check_mercure(
    watchers: Sequence[MercureWatcher],
    publishers: Sequence[MercurePublisher],
    kept: dict[str, Kept],
) -> dict[str, object]:
    """The delivery promise for Mercure, per watcher and per publisher it selects (see the
    module docstring). Figures for the report."""
    by_k = {p.k: p for p in publishers}
    for publisher in publishers:
        assert publisher.acked, f"{publisher.name}: nothing was acknowledged"
        assert set(publisher.statuses) <= {200, 503, 0}, publisher.statuses
        assert publisher.slowest_s < 5.0, f"a POST took {publisher.slowest_s:.2f} s"
        # Every acknowledged update is kept: what follows reads its history time.
        missing = [n for n in publisher.acked if publisher.update_id(n) not in kept]
        assert not missing, f"{publisher.name}: acknowledged, not in the history: {missing[:8]}"
    # What was logged: the acknowledged, and the unacknowledged the history holds.
    logged = {
        p.k: sorted({*p.acked, *(n for n in p.unacked if p.update_id(n) in kept)})
        for p in publishers
    }
    resent = 0
    lost: list[str | None] = []
    with promise_kept():
        for watcher in watchers:
            name = f"{watcher.name} ({watcher.path})"
            assert not watcher.seen.gaps, f"{name}: a gap {watcher.seen.gaps}: the history was kept"
            had: set[str] = set()
            firsts: dict[int, list[int]] = {k: [] for k in watcher.publishers}
            for connection, update_id, k, n in watcher.seen.updates:
                assert k in watcher.publishers, f"{name}: an update of publisher {k}, not selected"
                assert update_id == by_k[k].update_id(n), f"{name}: {update_id} for {k}/{n}"
                if update_id in had:
                    _check_resent(name, update_id, watcher.seen.resumed_with[connection], kept)
                    resent += 1
                    continue
                had.add(update_id)
                firsts[k].append(n)
            # One sequence: whatever publishers it selects, in the order the hub kept them.
            order = [kept[i].place for _, i, _, _ in watcher.seen.updates if i in kept]
            later = [b for a, b in itertools.pairwise(order) if b <= a]
            where = _resumes(watcher, kept)
            assert not later, f"{name}: not in the hub's order at {later[:4]}; {where}"
            for k, numbers in firsts.items():
                want = logged[k]
                difference = _difference(numbers, want)
                problem = f"{name}, publisher {k}: {difference}; {_resumes(watcher, kept)}"
                assert numbers == sorted(numbers) and set(numbers) <= set(want), problem
                missing = sorted(set(want) - set(numbers))
                passed = {n: _skipped(watcher, by_k[k].update_id(n), k, n, kept) for n in missing}
                other = [n for n, by in passed.items() if by is None]
                assert not other, f"{problem}; not passed over by a resume: {other[:8]}"
                lost += [f"{watcher.name}: {by}" for by in passed.values()]
    return {
        "acknowledged": sum(len(p.acked) for p in publishers),
        "unacknowledged, logged": sum(len(v) for v in logged.values())
        - sum(len(p.acked) for p in publishers),
        "statuses": dict(sum((p.statuses for p in publishers), Counter())),
        "slowest_post_s": round(max(p.slowest_s for p in publishers), 3),
        "updates_checked": sum(len(w.seen.updates) for w in watchers),
        "reconnects": sum(len(w.seen.resumed_with) - 1 for w in watchers),
        "resent_across_partitions": resent,
        "lost_across_partitions": lost,
    }


def _skipped(
    watcher: MercureWatcher, update_id: str, k: int, n: int, kept: dict[str, Kept]
) -> str | None:
    """The update X of another partition, kept later than update n of publisher k (never
    received), whose resume passed over it (`mercure_resume` resumes every other partition
    from X's millisecond): a connection resumed from X while the watcher had nothing of k after
    n yet, and nothing of k before n came on it or after. None when there is none."""
    u = kept[update_id]
    before = [c for c, _, j, m in watcher.seen.updates if j == k and m < n]
    after = [c for c, _, j, m in watcher.seen.updates if j == k and m > n]
    first = max(before, default=0)
    last = min(after, default=len(watcher.seen.resumed_with) - 1)
    for connection in range(first + 1, last + 1):
        resumed = watcher.seen.resumed_with[connection] or ""
        x = kept.get(resumed)
        if x is not None and x.partition != u.partition and u.ms < x.ms:
            return f"{update_id} (p{u.partition} {u.ms}) by {resumed} (p{x.partition} {x.ms})"
    return None


def _check_resent(
    name: str, update_id: str, resumed_with: str | None, kept: dict[str, Kept]
) -> None:
    """A second copy of `update_id` is allowed only as mercure_resume's cross-partition
    re-send: in a stream resumed from a Mercure update X of another partition, at or after
    X's millisecond."""
    twice = f"{name}: {update_id} arrived twice"
    assert resumed_with is not None and resumed_with in kept, f"{twice} (resumed {resumed_with})"
    x, u = kept[resumed_with], kept[update_id]
    assert u.partition != x.partition, f"{twice}, of the partition of {resumed_with}"
    assert u.ms >= x.ms, f"{twice}, {x.ms - u.ms} ms before {resumed_with}"


def _resumes(watcher: MercureWatcher, kept: dict[str, Kept]) -> str:
    """Where each of its connections resumed, and what it received first and last on each:
    (connection, id, partition, history ms)."""

    def where(update_id: str | None) -> str:
        at = kept.get(update_id or "")
        return f"{update_id} (p{at.partition} {at.ms})" if at else str(update_id)

    lines = []
    for connection, resumed in enumerate(watcher.seen.resumed_with):
        got = [i for c, i, _, _ in watcher.seen.updates if c == connection]
        ends = f"{where(got[0])} .. {where(got[-1])}" if got else "nothing"
        lines.append(f"[{connection}] resumed after {where(resumed)}: {ends}")
    return "; ".join(lines)


def _difference(got: list[int], want: list[int]) -> str:
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    disorder = [a for a, b in itertools.pairwise(got) if b <= a]
    return (
        f"{len(got)} updates for {len(want)} logged: {len(missing)} missing {missing[:8]}, "
        f"{len(extra)} not logged {extra[:8]}, out of order after {disorder[:8]}"
    )
