"""What a Mercure resume lookup by update id holds its process's loop for: the longest step
between two turns of the gevent loop while `mercure_resume.resolve_many` searches the whole
retained history for an id it does not keep (the costliest lookup), with the page size the
product reads (`mercure_search.PAGE`), other sizes, and one read of all of it (`--pages 0`:
the search before pages, a replay of the history at once then searched with the pause every
`SLICE` updates).

The history is filled in process through the broker's publish step (a Mercure update's
envelope with `--data` bytes of data, as `POST /.well-known/mercure` makes it), `--partitions`
of `--history` updates each (the defaults: 16 of 10,000), on a redis-server of its own, a
Redis Cluster of its own (3 primaries, a replica each) or the embedded store. The loop's
holds are seen by a greenlet that sleeps `TICK_S` in a loop beside the lookup,
which passes the serving process's pause (`loop_pause.make_way`): each gap between two
of its turns is a step of the lookup, counted in the thread's CPU time (what the step cost,
not what other processes of a busy machine took meanwhile). Printed per page size: the
lookup's wall and CPU time, the pages it read, the longest step (CPU ms) and the number of
steps over 5 ms, best of `--rounds` by the longest step.

    python -m bench.mercure_lookup redis
    python -m bench.mercure_lookup redis --pages 0,64,256,1024
    python -m bench.mercure_lookup cluster --history 2000
    python -m bench.mercure_lookup memory
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
import uuid
from collections.abc import Iterator

import gevent
import orjson
from harness.fenced_publish import publish
from harness.redis_cluster import RedisClusterServers
from harness.redis_server import RedisServer

from pushsvc.broker.base import Broker
from pushsvc.broker.memory import MemoryBroker, Store
from pushsvc.broker.redis import RedisBroker
from pushsvc.broker.shared_log import LogBroker
from pushsvc.core.cursor import EARLIEST, Cursor
from pushsvc.core.partitions import partition_of
from pushsvc.core.updates import UpdateDraft
from pushsvc.deliver import mercure_resume, mercure_search
from pushsvc.deliver.mercure_resume import Resume
from pushsvc.deliver.mercure_updates import envelope, topic_name
from pushsvc.loop_pause import make_way

BATCH = 500
TICK_S = 0.0002
"""How often the watching greenlet asks for a turn: a timer, so that it leaves the loop idle
between (a lookup's pause waits for an idle loop) and costs next to no CPU."""


@contextlib.contextmanager
def broker_on(backend: str, partitions: int, history: int) -> Iterator[LogBroker]:
    if backend == "memory":
        made: LogBroker = MemoryBroker(Store(partitions, clock=time.time, history=history))
        yield made
        made.close()
        return
    store: RedisServer | RedisClusterServers = (
        RedisServer() if backend == "redis" else RedisClusterServers()
    )
    store.start()
    try:
        made = RedisBroker(store.url, prefix="bench:", partitions=partitions, history=history)
        yield made
        made.close()
    finally:
        store.stop()


def fill(broker: LogBroker, partitions: int, history: int, data: int) -> None:
    """`history` Mercure updates in each partition, of 4 topics each."""
    by_partition: dict[int, list[str]] = {p: [] for p in range(partitions)}
    n = 0
    while any(len(iris) < 4 for iris in by_partition.values()):
        iri = f"https://example.com/books/{n}"
        by_partition[partition_of(topic_name(iri), partitions)].append(iri)
        n += 1
    n = 0
    for of_partition in by_partition.values():
        for start in range(0, history, BATCH):
            drafts = []
            for k in range(start, min(history, start + BATCH)):
                iri = of_partition[k % len(of_partition)]
                kept = envelope(
                    [iri],
                    "h" * data,
                    private=False,
                    update_id=f"urn:uuid:{uuid.uuid4()}",
                    retry=None,
                )
                topic = topic_name(iri)
                body = (
                    b'{"topic":'
                    + orjson.dumps(topic)
                    + b',"ts":1,"event":{"value":null,"type":"message","data":'
                    + orjson.dumps(kept)
                    + b"}}"
                )
                drafts.append(UpdateDraft(topic, 1_000_000 + n, body))
                n += 1
            publish(broker, drafts)  # as an aggregator does: fenced by its lease


def one_read(broker: Broker) -> None:
    """The search before pages: the history replayed at once, then searched."""
    starts = mercure_resume.history_starts(broker)
    replayed = broker.replay(Cursor(starts.values()), mercure_search.KEPT)
    assert not mercure_search.find_many(replayed.updates, [f"urn:uuid:{uuid.uuid4()}"], make_way)


def measure(broker: Broker, page: int) -> dict[str, float]:
    """One lookup of an unknown id with pages of `page` entries (0: at once), beside a
    greenlet that records the gaps between its turns."""
    gaps: list[float] = []
    done = False

    def watch() -> None:
        # CPU time, the thread's: what the steps cost, not what the machine's other
        # processes took from it between two turns.
        last = time.thread_time()
        while not done:
            gevent.sleep(TICK_S)
            now = time.thread_time()
            gaps.append(now - last)
            last = now

    watcher = gevent.spawn(watch)
    gevent.sleep(0)
    pauses = 0

    def pause() -> None:
        nonlocal pauses
        pauses += 1
        make_way()

    started, cpu = time.perf_counter(), time.thread_time()
    if page:
        mercure_search.PAGE = page
        answer = mercure_resume.resolve_many(broker, [f"urn:uuid:{uuid.uuid4()}"], pause)
        assert answer == [Resume(None, EARLIEST)]
    else:
        one_read(broker)
    seconds, cpu = time.perf_counter() - started, time.thread_time() - cpu
    done = True
    watcher.join()
    gaps.sort()
    return {
        "lookup_s": round(seconds, 3),
        "cpu_s": round(cpu, 3),
        "pages": pauses + 1 if page else 1,
        "longest_step_ms": round(gaps[-1] * 1000, 2),
        "steps_over_5ms": sum(1 for g in gaps if g > 0.005),
    }


def main() -> None:
    arguments = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    arguments.add_argument("backend", choices=["redis", "cluster", "memory"])
    arguments.add_argument("--partitions", type=int, default=16)
    arguments.add_argument("--history", type=int, default=10_000)
    arguments.add_argument("--data", type=int, default=256, help="bytes of each update's data")
    arguments.add_argument("--pages", default=f"0,{mercure_search.PAGE}")
    arguments.add_argument("--rounds", type=int, default=3)
    options = arguments.parse_args()
    with broker_on(options.backend, options.partitions, options.history) as broker:
        fill(broker, options.partitions, options.history, options.data)
        for page in (int(p) for p in options.pages.split(",")):
            rounds = [measure(broker, page) for _ in range(options.rounds)]
            best = min(rounds, key=lambda r: r["longest_step_ms"])
            figures = {"backend": options.backend, "page": page or "all at once", **best}
            figures["updates"] = options.partitions * options.history
            print(json.dumps(figures))


if __name__ == "__main__":
    main()
