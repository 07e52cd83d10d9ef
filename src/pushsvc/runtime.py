"""What one process runs: the broker, its hub and, where it aggregates, the aggregator."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import gevent

from pushsvc.aggregator import Aggregator
from pushsvc.broker import make_broker
from pushsvc.broker.base import Broker, Subscription
from pushsvc.config import Settings
from pushsvc.events import Limits
from pushsvc.hub import Hub
from pushsvc.metrics import Metrics

log = logging.getLogger(__name__)


def wall_clock_us() -> int:
    return time.time_ns() // 1000


@dataclass
class Runtime:
    """Everything stateful behind one app; lives in `app.extensions["pushsvc"]`."""

    settings: Settings
    broker: Broker
    hub: Hub
    metrics: Metrics
    limits: Limits
    aggregator: Aggregator | None = None
    _subscriptions: list[Subscription] = field(default_factory=list)
    _greenlets: list[gevent.Greenlet] = field(default_factory=list)

    @classmethod
    def build(cls, settings: Settings, *, web: bool, aggregate: bool) -> Runtime:
        broker = make_broker(settings.redis_url, prefix=settings.prefix, history=settings.history)
        hub = Hub(queue_size=settings.queue_size, slow_timeout_us=settings.slow_client_timeout)
        limits = Limits(max_body_bytes=settings.max_body, max_batch=settings.max_batch)
        runtime = cls(settings, broker, hub, Metrics(hub), limits)
        if web:
            runtime._subscriptions.append(broker.consume_updates(hub.dispatch))
        if aggregate:
            runtime.aggregator = Aggregator(
                windows_us=settings.windows,
                labels=settings.window_labels,
                stats=settings.stats,
                allowed_lateness_us=settings.allowed_lateness,
                publish=broker.publish_updates,
                wall_clock=wall_clock_us,
                shard=settings.shard,
            )
            runtime.metrics.watch_aggregator(runtime.aggregator)
            runtime._subscriptions.append(broker.consume_events(runtime.aggregator.handle))
            if settings.tick:
                runtime._greenlets.append(gevent.spawn(runtime._tick_loop))
        return runtime

    def _tick_loop(self) -> None:
        assert self.aggregator is not None
        interval = self.settings.tick / 1_000_000
        while True:
            gevent.sleep(interval)
            try:
                self.aggregator.tick()
            except Exception:  # a broker outage must not end the ticks for good
                log.exception("tick failed")

    def close(self) -> None:
        """Stop streams, background work and the broker; idempotent."""
        self.hub.close()
        gevent.killall(self._greenlets)
        self._greenlets.clear()
        for subscription in self._subscriptions:
            subscription.close()
        self._subscriptions.clear()
        self.broker.close()
