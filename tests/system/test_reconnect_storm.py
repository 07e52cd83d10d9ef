"""A reconnect storm: 2,000 EventSource-like clients of a web process that restarts while
events flow, each back after its own `retry:` with its `Last-Event-ID`.

pushsvc on Redis: an aggregator, the web process the clients read (restarted) and another
that the producer posts to (a deployment's other web process, behind the same balancer).
Every client must end with every update of its topic exactly once and in order across the
restart, the values the producer got 202 for, with no gap; and the `retry:` they were sent
must be spread (jittered), not one value for all.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from harness.live import PushsvcProcess, aggregator_and_two_webs, metric, wait_until
from harness.raw_streams import raise_fd_limit
from harness.redis_server import RedisServer
from harness.storm_clients import StormClients, StormProducer

pytestmark = pytest.mark.redis

CLIENTS = 2_000
TOPICS = [f"storm.{n}" for n in range(20)]
RETRY_MS = 1_000


@pytest.fixture
def deployment(redis_server: RedisServer, prefix: str) -> Iterator[list[PushsvcProcess]]:
    raise_fd_limit(2 * CLIENTS + 1_000)  # the clients' sockets here, the streams' there
    env = {
        "PUSHSVC_REDIS_URL": redis_server.url,
        "PUSHSVC_PREFIX": prefix,
        "PUSHSVC_TICK": "0",
        "PUSHSVC_RETRY": f"{RETRY_MS}ms",
        "PUSHSVC_MAX_STREAMS_PER_IP": str(2 * CLIENTS),
    }
    with aggregator_and_two_webs(env) as procs:
        yield procs


def test_every_client_gets_every_update_once_in_order_across_a_restart_of_its_web_process(
    deployment: list[PushsvcProcess],
) -> None:
    _, web, other_web = deployment
    port = web.port
    clients = StormClients(port, TOPICS, CLIENTS).start()
    producer = StormProducer(other_web.port, TOPICS)
    try:
        wait_until(lambda: clients.count("live") == CLIENTS, 60, 0.05, what="all subscribed")
        assert metric(port, "pushsvc_subscribers") == CLIENTS
        producer.start()
        wait_until(lambda: clients.behind(dict.fromkeys(TOPICS, 3)) == 0, 30, 0.05,
                   what="updates reach every client")  # fmt: skip

        web.stop()  # SIGTERM: every stream ends at once, every client comes back
        # While it is down, each topic gets updates that every client must then replay.
        missed = producer.posted() + 2
        wait_until(lambda: producer.posted() >= missed, 30, 0.05, what="events while down")
        deployment[1] = web = PushsvcProcess("web", "--port", str(port), env=web.env).start()
        wait_until(lambda: clients.fewer("connects", 2) == 0, 60, 0.05,
                   what="every client reconnected")  # fmt: skip
        # A plain stream's head goes out before it subscribes (its `retry:` first), so a
        # client can have the head a moment before the process counts it.
        wait_until(lambda: metric(port, "pushsvc_subscribers") == CLIENTS, 30, 0.05,
                   what="every client counted")  # fmt: skip
        # Events keep flowing after the storm; then the producer stops and all must arrive.
        after = producer.posted() + 3
        wait_until(lambda: producer.posted() >= after, 30, 0.05, what="events after the storm")
        producer.stop()
        expected = dict(producer.acked)
        # Judged below, client by client, whether or not they all got as many as expected.
        with contextlib.suppress(AssertionError):
            wait_until(lambda: clients.behind(expected) == 0, 20, 0.05, what="all arrived")
    finally:
        producer.stop()
        clients.stop()

    assert not clients.errors and not producer.refused, (clients.errors, producer.refused)
    wrong = [
        (c.topic, c.values[:5], len(c.values))
        for c in clients.clients
        if c.values != list(range(expected[c.topic]))
    ]
    assert not wrong, f"{len(wrong)} clients without every update once in order: {wrong[:5]}"
    assert all(len(set(c.ids)) == len(c.ids) for c in clients.clients)
    assert sum(c.gaps for c in clients.clients) == 0
    assert all(c.connects == 2 for c in clients.clients)

    retries = [ms for c in clients.clients for ms in c.retries]
    assert len(retries) == 2 * CLIENTS
    assert all(RETRY_MS <= ms < 2 * RETRY_MS for ms in retries), (min(retries), max(retries))
    assert len(set(retries)) > RETRY_MS // 4, "the retry: values are not spread"
