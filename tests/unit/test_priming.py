"""New streams are primed at most `DEFAULT_LIMIT` at once; the others wait their turn,
already subscribed, client after client (deliver/priming, deliver/subscription)."""

from __future__ import annotations

import gevent
import gevent.event
import pytest
from harness.fenced_publish import publish as publish_fenced

from pushsvc.broker.memory import MemoryBroker
from pushsvc.core.topics import TopicMatcher
from pushsvc.core.updates import UpdateDraft
from pushsvc.deliver import priming
from pushsvc.deliver.hub import Hub
from pushsvc.deliver.priming import Priming
from pushsvc.deliver.subscription import subscribe


def test_at_most_limit_primes_run_at_once_and_the_rest_all_get_their_turn() -> None:
    gate = Priming(MemoryBroker.serving(), limit=3)
    go = gevent.event.Event()
    seen: list[int] = []

    def prime() -> None:
        with gate.turn():
            seen.append(gate.in_flight)
            go.wait()

    greenlets = [gevent.spawn(prime) for _ in range(10)]
    gevent.idle()
    assert gate.in_flight == 3 and len(seen) == 3
    go.set()
    gevent.joinall(greenlets, raise_error=True)
    assert len(seen) == 10 and max(seen) == 3 and gate.in_flight == 0


def test_a_stream_waits_for_its_turn_subscribed_and_gets_what_was_published_meanwhile() -> None:
    broker = MemoryBroker.serving()
    hub = Hub(queue_size=100, slow_timeout_us=10**7)
    feed = broker.consume_updates(hub.dispatch)
    gate = priming.install(broker, limit=1)
    try:
        with gate.turn():  # another stream being primed
            waiting = gevent.spawn(subscribe, broker, hub, feed, TopicMatcher(["t"]), None)
            gevent.idle()
            assert not waiting.ready()
            assert hub.subscriber_counts(["t"]) == {"t": 1}  # counted already
            publish_fenced(broker, [UpdateDraft("t", 1, b'{"n":1}')])
        primed = waiting.get(timeout=10)
        assert primed.snapshot is not None and list(primed.snapshot.latest) == ["t"]
        primed.close()
    finally:
        feed.close()
        broker.close()


def test_a_priming_limit_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        Priming(MemoryBroker.serving(), limit=0)


def test_waiting_clients_are_served_in_turns_each_in_the_order_it_came() -> None:
    """One client with many streams waiting (replays nobody reads) delays another client's
    new stream by one prime, not by all of its own."""
    gate = Priming(MemoryBroker.serving(), limit=1)
    order: list[str] = []
    go = gevent.event.Event()

    def prime(name: str) -> None:
        with gate.turn(name[0]):
            order.append(name)
            go.wait()

    holder = gevent.spawn(prime, "h")
    gevent.idle()
    waiting = [gevent.spawn(prime, f"a{n}") for n in range(5)]
    gevent.idle()
    waiting.append(gevent.spawn(prime, "b0"))
    waiting.append(gevent.spawn(prime, "b1"))
    gevent.idle()
    assert gate.waiting == 7 and gate.in_flight == 1
    go.set()
    gevent.joinall([holder, *waiting], raise_error=True)
    assert order == ["h", "a0", "b0", "a1", "b1", "a2", "a3", "a4"]
    assert gate.waiting == gate.in_flight == 0


def test_a_stream_that_leaves_while_waiting_gives_up_its_place_and_its_slot() -> None:
    gate = Priming(MemoryBroker.serving(), limit=1)
    go = gevent.event.Event()
    done: list[str] = []

    def prime(name: str) -> None:
        with gate.turn(name):
            go.wait()
            done.append(name)

    holder = gevent.spawn(prime, "h")
    gevent.idle()
    left, stays = gevent.spawn(prime, "x"), gevent.spawn(prime, "y")
    gevent.idle()
    left.kill()  # its client went away while it waited
    assert gate.waiting == 1
    go.set()
    gevent.joinall([holder, stays], raise_error=True)
    assert done == ["h", "y"] and gate.waiting == gate.in_flight == 0
