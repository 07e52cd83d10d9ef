"""kill -9 of a web process at chosen moments, its streams resuming on the other one, and a
producer retrying with the same Idempotency-Key across the kill.

Each case runs two web processes with the six streams of `moments.subscribers` (three on each),
two aggregators, and a producer posting 60 events a second, each POST with an
Idempotency-Key, retried with that key on the other web process when it gets no answer. A web
process is killed at the case's moment and a new one started; afterwards every stream holds
every acknowledged event once, in order, equal to an uninterrupted run, and no event was
acknowledged twice (`moments.check_exactly_once`). Each moment runs on one redis-server, and
those of `CLUSTER_MOMENTS` on a Redis Cluster too (backends.py). Moments:

* `under-load` — while the producer posts (a POST in flight to it is retried on the other);
* `mid-run` — while a 600-event batch's run is being delivered: killed from the thread of one
  of its streams once that has read 100 updates of the run (what the kernel had of the rest
  still arrives; the stream then resumes on the other web process);
* `request-not-read` — frozen (SIGSTOP), sent a POST that its kernel takes but it never
  reads, killed: the retry with the key is logged as a first request;
* `answer-lost` — killed as soon as the POST's key is in Redis (logged with its batch), its
  answer never read: the retry with the key is answered from the key, `Idempotent-Replayed`;
* `answer-lost-holder-killed` — the same, and the lease-holding aggregator killed with it:
  the retry is answered during the aggregator's failover, and yields its updates once.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable

import pytest
from harness.live import PushsvcProcess, wait_until

from faults.backends import Store, on_both
from faults.harness import Watcher
from faults.moments import (
    Batch,
    Case,
    KeyedProducer,
    check_exactly_once,
    freeze,
    paused,
    reads,
    report,
    settle,
    subscribers,
    wait_received,
)

pytestmark = [pytest.mark.redis, pytest.mark.slow]

RUN = 600
"""Events in the batch whose run is being delivered when its web process is killed."""

Moment = Callable[[Case, KeyedProducer, list[Watcher], PushsvcProcess], dict[str, object]]
"""Kills the web process at its moment (the aggregator holder is the last argument)."""


def _send_unread(port: int, batch: Batch) -> socket.socket:
    """A POST sent whole on a connection of our own, its answer left unread."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(batch.request())
    return sock


def _key_logged(case: Case, batch: Batch) -> bool:
    return bool(case.redis.exists(case.keys.of(batch.topic).idempotency(batch.topic, batch.key)))


def under_load(
    case: Case, producer: KeyedProducer, watchers: list[Watcher], holder: PushsvcProcess
) -> dict:
    case.stack.kill_web(case.stack.webs[0])
    return {}


def mid_run(
    case: Case, producer: KeyedProducer, watchers: list[Watcher], holder: PushsvcProcess
) -> dict:
    web = case.stack.webs[0]
    first = watchers[0]  # on web 0 (watchers alternate), reading topic a
    assert reads(first)(case.topics[0])
    with paused(producer):
        wait_received(watchers, producer.acked, 10)
        before = len(first.received.updates)
        # Killed from the stream's own thread once it has read 100 updates of the run.
        first.on_update = lambda count: (
            os.kill(web.pid, signal.SIGKILL) if count == before + 100 else None
        )
        producer.deliver(producer.next_batch(RUN, case.topics[0]))
        wait_until(lambda: web.proc.poll() is not None, what="the kill")  # type: ignore[union-attr]
        case.stack.kill_web(web)
    wait_received(watchers, producer.acked, 10)
    ended = [n - before for port, n in first.received.ends if port == web.port]
    return {"stream_had_of_the_run_at_its_end": ended[-1] if ended else None}


def request_not_read(
    case: Case, producer: KeyedProducer, watchers: list[Watcher], holder: PushsvcProcess
) -> dict:
    web = case.stack.webs[0]
    with paused(producer):
        batch = producer.next_batch(3)
        freeze(web)
        sock = _send_unread(web.port, batch)
        case.stack.kill_web(web)
        sock.close()
        assert not _key_logged(case, batch)
        replayed = producer.deliver(batch)
    assert not replayed, "nothing was logged: the retry is a first request"
    return {}


def answer_lost(*, kill_holder: bool) -> Moment:
    def moment(
        case: Case, producer: KeyedProducer, watchers: list[Watcher], holder: PushsvcProcess
    ) -> dict:
        web = case.stack.webs[0]
        with paused(producer):
            batch = producer.next_batch(3)
            sock = _send_unread(web.port, batch)
            wait_until(lambda: _key_logged(case, batch), interval=0.001, what="the append")
            case.stack.kill_web(web)
            if kill_holder:
                case.stack.kill_aggregator(holder)
            sock.close()  # the answer, if it came, is lost
            replayed = producer.deliver(batch)
        assert replayed, "logged with its key: the retry must be answered from it"
        if kill_holder:
            case.holder(besides=[holder], timeout=3 * case.lease_s + 5)
        return {}

    return moment


MOMENTS: dict[str, Moment] = {
    "under-load": under_load,
    "mid-run": mid_run,
    "request-not-read": request_not_read,
    "answer-lost": answer_lost(kill_holder=False),
    "answer-lost-holder-killed": answer_lost(kill_holder=True),
}

CLUSTER_MOMENTS = ("under-load", "mid-run", "answer-lost-holder-killed")
"""The moments that also run on the cluster: streams resuming by cursor on the other web
process (under load, and in the middle of a run on sharded pub/sub), and a replayed key while
the aggregator fails over. The others try an Idempotency-Key alone, one key alike on both
(`TEST_PUSHSVC_EVERY_CASE_ON_CLUSTER=1` runs them there too)."""


@pytest.mark.parametrize(
    ("moment", "backend"), on_both(MOMENTS, cluster=CLUSTER_MOMENTS), indirect=["backend"]
)
def test_kill_9_of_a_web_process_at_a_moment(store: Store, backend: str, moment: str) -> None:
    with Case(store, lease="1s") as case:
        holder = case.start(standbys=1)
        watchers = subscribers(case)
        producer = KeyedProducer(case)
        producer.start()
        wait_until(lambda: all(len(w.received.updates) >= 5 for w in watchers), timeout=10)
        killed = time.monotonic()
        figures = MOMENTS[moment](case, producer, watchers, holder)
        case.stack.start_web()  # a replacement, where the next resumes go
        # Every stream of the killed process resumed on another and caught up.
        wait_until(lambda: wait_received(watchers, producer.acked, 0.5), timeout=20)
        figures["resumed_s"] = round(time.monotonic() - killed, 2)
        after = producer.acked_values() + 30
        wait_until(lambda: producer.acked_values() >= after, timeout=10)
        settle(watchers, producer)
        figures |= producer.figures() | check_exactly_once(watchers, producer.acked, case.topics)
    report(f"web {moment}, {backend}", figures)
