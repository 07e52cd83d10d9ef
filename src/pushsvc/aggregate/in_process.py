"""Driving the aggregator inside the embedded broker's process (`pushsvc serve` without
Redis): each appended batch is applied and published as it is appended, idle ticks run every
`--tick`, idle topics are forgotten (`--topic-ttl`) and deleted topics dropped in order with
the batches (`DELETE /topics/{topic}`). There is no log to write first: the
process is the whole deployment, and a restart starts from nothing (docs/reliability.md)."""

from __future__ import annotations

import logging
import math
import time

import gevent.event

from pushsvc.aggregate.aggregator import Aggregator, sweep_interval_s
from pushsvc.broker.base import InProcessBroker, Subscription
from pushsvc.core.event import Event

log = logging.getLogger(__name__)


class InProcessDriver:
    """Feeds one aggregator from an `InProcessBroker` and publishes what it makes. `start`
    subscribes; one greenlet runs `run` (the idle ticks and sweeps) until `stop` is set."""

    def __init__(
        self, broker: InProcessBroker, aggregator: Aggregator, *, tick_us: int, topic_ttl_us: int
    ) -> None:
        self.aggregator = aggregator
        self._broker = broker
        self._tick_s = tick_us / 1_000_000
        self._topic_ttl_us = topic_ttl_us
        self._subscriptions: list[Subscription] = []

    def start(self) -> None:
        broker, aggregator = self._broker, self.aggregator

        def apply(topic: str, events: list[Event]) -> None:
            broker.publish_updates(aggregator.apply_events(topic, events))

        def delete(topic: str) -> None:
            broker.publish_updates(aggregator.delete(topic))

        self._subscriptions = [
            broker.consume_events(apply),
            broker.consume_forgets(aggregator.forget),
            broker.consume_deletes(delete),
        ]

    def run(self, stop: gevent.event.Event) -> None:
        """Idle ticks every `tick`, and idle topics forgotten, until `stop` is set."""
        tick_s, ttl_us = self._tick_s, self._topic_ttl_us
        if not tick_s and not ttl_us:
            return
        sweep_s = sweep_interval_s(ttl_us)

        def idle() -> dict[str, int]:
            return self.aggregator.idle_topics(ttl_us, ticking=tick_s > 0)

        now = time.monotonic()
        next_tick = now + tick_s if tick_s else math.inf
        next_sweep = now + sweep_s if ttl_us else math.inf
        while not stop.wait(max(0.0, min(next_tick, next_sweep) - time.monotonic())):
            now = time.monotonic()
            try:
                if now >= next_tick:
                    next_tick = now + tick_s
                    derived = self.aggregator.derived_topics()
                    through = self._broker.derived_through(derived) if derived else None
                    self._broker.publish_updates(self.aggregator.tick(through))
                if now >= next_sweep:
                    next_sweep = now + sweep_s
                    self._broker.forget_topics(idle)
            except Exception:  # a failing round must not end the rounds for good
                log.exception("idle tick or topic sweep failed")

    def close(self) -> None:
        for subscription in self._subscriptions:
            subscription.close()
        self._subscriptions.clear()
