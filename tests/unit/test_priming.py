"""New streams are primed at most `DEFAULT_LIMIT` at once; the others wait their turn,
already subscribed (deliver/priming, deliver/subscription)."""

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
