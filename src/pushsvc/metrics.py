"""Prometheus metrics. Hot-path counters are plain ints on the hub and aggregator,
read at scrape time by a custom collector, so delivering an update costs no metric call."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from pushsvc.aggregator import Aggregator
    from pushsvc.hub import Hub


class _StateCollector(Collector):
    def __init__(self, hub: Hub) -> None:
        self._hub = hub
        self.aggregator: Aggregator | None = None

    def collect(self) -> Iterator[Metric]:
        hub = self._hub
        yield GaugeMetricFamily(
            "pushsvc_subscribers", "SSE streams open in this process", value=hub.client_count
        )
        yield CounterMetricFamily(
            "pushsvc_deliveries", "Updates queued to subscribers", value=hub.delivered
        )
        yield CounterMetricFamily(
            "pushsvc_slow_disconnects",
            "Subscribers disconnected for not keeping up",
            value=hub.slow_disconnects,
        )
        if self.aggregator is not None:
            yield GaugeMetricFamily(
                "pushsvc_topics",
                "Topics this aggregator holds",
                value=len(self.aggregator.topics()),
            )
            yield CounterMetricFamily(
                "pushsvc_late_dropped",
                "Events dropped by the aggregator as too late",
                value=self.aggregator.late_dropped,
            )


class Metrics:
    """One registry per app, so several apps in one process (tests) do not collide."""

    def __init__(self, hub: Hub) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._state = _StateCollector(hub)
        self.registry.register(self._state)
        self.events_accepted = Counter(
            "pushsvc_events_accepted", "Events accepted by the producer API", registry=self.registry
        )
        self.requests_rejected = Counter(
            "pushsvc_requests_rejected",
            "Requests answered with an error, by error code",
            ["code"],
            registry=self.registry,
        )

    def watch_aggregator(self, aggregator: Aggregator) -> None:
        self._state.aggregator = aggregator

    def render(self) -> bytes:
        return generate_latest(self.registry)
