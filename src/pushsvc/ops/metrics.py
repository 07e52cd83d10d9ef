"""Prometheus metrics. Hot-path counters are plain ints on the hub and aggregator,
read at scrape time by a custom collector, so delivering an update costs no metric call.
Several processes on one machine answer as one (`multiprocess_metrics`)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Info,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from pushsvc.errors import BrokerUnavailable
from pushsvc.ops.multiprocess_metrics import FileMirror, SharedFiles, shared_dir

if TYPE_CHECKING:
    from pushsvc.aggregate.derive import Deriver
    from pushsvc.aggregate.partition_pool import PartitionPool
    from pushsvc.aggregate.sessionize import Sessionizer
    from pushsvc.broker.base import ServingBroker
    from pushsvc.broker.redis.guard import RedisGuard
    from pushsvc.deliver.hub import Hub
    from pushsvc.ingest.outbox import OutboxStats


TIMEOUT_PHASES = ("handshake", "head", "body", "write")
"""The `phase` label of `pushsvc_client_timeouts_total`: part of the metrics' contract."""


class AggregatorStats(Protocol):
    """What the metrics read of an aggregator (or of every one a process holds)."""

    def topics(self) -> list[str]: ...

    def group_count(self) -> int: ...

    @property
    def group_overflow(self) -> int: ...

    @property
    def forecast_bytes(self) -> int: ...

    @property
    def forecasts_made(self) -> int: ...


class _ProcessState(Collector):
    """What this process counts itself: its streams, its aggregators, its deriver."""

    def __init__(self, hub: Hub) -> None:
        self._hub = hub
        self.aggregator: AggregatorStats | None = None
        self.partitions: PartitionPool | None = None
        self.deriver: Deriver | None = None
        self.sessionizer: Sessionizer | None = None
        self.outbox: OutboxStats | None = None
        self.redis = False

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
        yield CounterMetricFamily(
            "pushsvc_stream_connects", "SSE streams opened", value=hub.connects
        )
        disconnects = CounterMetricFamily(
            "pushsvc_stream_disconnects",
            "SSE streams ended, by reason (gone: the client left; slow, expired, shutdown, "
            "reset: a lost broker connection; error)",
            labels=["reason"],
        )
        for reason, count in sorted(hub.disconnects.items()):
            disconnects.add_metric([reason], count)
        yield disconnects
        yield CounterMetricFamily(
            "pushsvc_conflated_runs",
            "Runs of updates offered to a client in conflation (latest-wins) instead of queued",
            value=hub.conflated_runs,
        )
        yield GaugeMetricFamily(
            "pushsvc_queued_runs", "Runs waiting in clients' queues", value=hub.queued_runs
        )
        yield GaugeMetricFamily(
            "pushsvc_stream_pending_bytes",
            "Bytes the streams hold for their clients: queued, and rendered but not yet "
            "taken by their sockets (bounded by 32 times --max-stream-buffer)",
            value=hub.pending.total,
        )
        latency = hub.delivery_latency
        yield HistogramMetricFamily(
            "pushsvc_delivery_seconds",
            "From this process receiving an update to writing it to a client socket",
            buckets=[(_le(bound), count) for bound, count in latency.cumulative()],
            sum_value=latency.sum_us / 1_000_000,
        )
        yield CounterMetricFamily(
            "pushsvc_direct_writes",
            "Socket writes the hub made itself for idle streams (each may carry several updates)",
            value=hub.direct_sends,
        )
        yield CounterMetricFamily(
            "pushsvc_direct_handbacks",
            "Direct writes that found a socket full and handed the rest to the stream",
            value=hub.handbacks,
        )
        yield CounterMetricFamily(
            "pushsvc_updates_received",
            "Updates this process received from the broker (for its own streams)",
            value=hub.received,
        )
        yield CounterMetricFamily(
            "pushsvc_stream_resets",
            "Times every stream was ended to resume after a lost broker connection",
            value=hub.resets,
        )
        if self.aggregator is not None:
            yield GaugeMetricFamily(
                "pushsvc_topics",
                "Topics this aggregator holds",
                value=len(self.aggregator.topics()),
            )
            yield GaugeMetricFamily(
                "pushsvc_groups",
                "Live groups of grouping topics this aggregator holds",
                value=self.aggregator.group_count(),
            )
            yield CounterMetricFamily(
                "pushsvc_group_overflow",
                "Events routed to a topic's (other) group: its rule's max_groups was reached",
                value=self.aggregator.group_overflow,
            )
            yield CounterMetricFamily(
                "pushsvc_forecast_bytes",
                "Bytes of JSON of the forecast messages this process's aggregators made (each "
                "close of a forecast rule's tier, each series; at most MESSAGE_STEPS steps each)",
                value=self.aggregator.forecast_bytes,
            )
            yield CounterMetricFamily(
                "pushsvc_forecasts",
                "Forecasts this process's aggregators made (one per close of a forecast rule's "
                "tier, per series)",
                value=self.aggregator.forecasts_made,
            )
        if self.partitions is not None:
            yield CounterMetricFamily(
                "pushsvc_updates_published",
                "Updates this aggregator published (of events and ticks, series points, alert "
                "changes)",
                value=self.partitions.updates_published,
            )
            yield GaugeMetricFamily(
                "pushsvc_partitions_owned",
                "Partitions whose lease this aggregator process holds (its share of --partitions)",
                value=len(self.partitions.owned),
            )
            yield GaugeMetricFamily(
                "pushsvc_aggregators_live",
                "Aggregator processes sharing the partitions, as this one last saw them",
                value=self.partitions.members,
            )
        if self.deriver is not None:
            derived = CounterMetricFamily(
                "pushsvc_derived_boundaries",
                "Boundaries of [[derive]] rules this process's deriver handled, by outcome "
                "(appended; replayed: logged already; late: refused, the derived topic's clock "
                "had moved past it)",
                labels=["outcome"],
            )
            derived.add_metric(["appended"], self.deriver.appended)
            derived.add_metric(["replayed"], self.deriver.replayed)
            derived.add_metric(["late"], self.deriver.late)
            yield derived
        if self.sessionizer is not None:
            yield from _session_metrics(self.sessionizer)
        if self.outbox is not None:
            yield from _outbox_metrics(self.outbox)
        if self.redis:
            # Imported here: the embedded mode never imports redis-py.
            from pushsvc.broker.redis.wire import refusals

            refused = CounterMetricFamily(
                "pushsvc_redis_refusals",
                "Redis commands of this process refused, by code (broker_full: at maxmemory; "
                "broker_read_only, broker_busy, broker_loading, broker_refused); nothing was "
                "written",
                labels=["code"],
            )
            for code, count in sorted(refusals.items()):
                refused.add_metric([code], count)
            yield refused


def _outbox_metrics(stats: OutboxStats) -> Iterator[Metric]:
    """The PostgreSQL outbox reader of this process (`pushsvc.ingest.outbox`): rows, never
    topics. The lag is the reading process's (a standby shows none)."""
    yield GaugeMetricFamily(
        "pushsvc_outbox_active",
        "1 while this process holds the outbox's lease and reads it",
        value=int(stats.active),
    )
    yield GaugeMetricFamily(
        "pushsvc_outbox_rows_waiting",
        "Committed outbox rows not yet appended (counted up to 100000)",
        value=stats.waiting,
    )
    yield GaugeMetricFamily(
        "pushsvc_outbox_oldest_row_seconds",
        "Age of the oldest outbox row not yet appended (0: none)",
        value=stats.oldest_age_s,
    )
    yield CounterMetricFamily(
        "pushsvc_outbox_rows_appended",
        "Outbox rows appended to the event log",
        value=stats.appended,
    )
    yield CounterMetricFamily(
        "pushsvc_outbox_rows_replayed",
        "Outbox rows read again after their append (the reader stopped before deleting "
        "them): nothing logged, their idempotency key was",
        value=stats.replayed,
    )
    dead = CounterMetricFamily(
        "pushsvc_outbox_rows_dead",
        "Outbox rows moved to the dead-letter table, by reason (the POST error code)",
        labels=["reason"],
    )
    for reason, count in sorted(stats.dead.items()):
        dead.add_metric([reason], count)
    yield dead


def _session_metrics(sessionizer: Sessionizer) -> Iterator[Metric]:
    """What this process's sessionizer counts (`[[session]]` rules)."""
    ended = CounterMetricFamily(
        "pushsvc_sessions_ended",
        "Sessions this process's sessionizer handled, by outcome (appended to the session "
        "topic; replayed: logged already, by a predecessor)",
        labels=["outcome"],
    )
    ended.add_metric(["appended"], sessionizer.appended)
    ended.add_metric(["replayed"], sessionizer.replayed)
    yield ended
    yield CounterMetricFamily(
        "pushsvc_sessions_evicted",
        "Sessions ended early because max_open sessions were open (marked evicted)",
        value=sessionizer.evicted,
    )
    yield CounterMetricFamily(
        "pushsvc_session_events_late",
        "Source events older than their session rule's clock less the allowed lateness: "
        "they make no session",
        value=sessionizer.late,
    )
    yield CounterMetricFamily(
        "pushsvc_session_gaps",
        "Times source updates were trimmed from the history before the sessionizer read them",
        value=sessionizer.gaps,
    )
    # One figure for all session topics: /metrics is public and names no topic (a session
    # topic's readers have its `active` statistic).
    yield GaugeMetricFamily(
        "pushsvc_sessions_open",
        "Sessions open now, all session topics together (in the process that assembles them)",
        value=sum(sessionizer.open_sessions().values()),
    )


class _DeploymentState(Collector):
    """What every process reads alike from the broker at scrape time (the lag, the topics,
    the bridge, Redis's memory): answered by the process scraped, never summed."""

    def __init__(self, broker: ServingBroker) -> None:
        self._broker = broker
        self.redis_guard: RedisGuard | None = None

    def collect(self) -> Iterator[Metric]:
        yield from self._lag()
        yield from self._redis_memory()
        yield from self._bridge()
        yield from self._topic_counts()

    def _topic_counts(self) -> Iterator[Metric]:
        try:
            stats = self._broker.topic_stats()
        except BrokerUnavailable:
            return
        yield GaugeMetricFamily(
            "pushsvc_topics_live",
            "Topics the deployment keeps, counted against --max-topics",
            value=stats.live,
        )
        yield CounterMetricFamily(
            "pushsvc_topics_forgotten",
            "Idle topics forgotten (--topic-ttl)",
            value=stats.forgotten,
        )

    def _redis_memory(self) -> Iterator[Metric]:
        if self.redis_guard is None:
            return
        memory = self.redis_guard.memory
        if memory is None:
            return
        yield GaugeMetricFamily(
            "pushsvc_redis_full",
            "1 while Redis is at maxmemory (appends refused) as the check every 5 s last saw it",
            value=int(memory.full),
        )
        yield GaugeMetricFamily(
            "pushsvc_redis_evicts",
            "1 while Redis's maxmemory-policy is not noeviction (it may drop pushsvc's data)",
            value=int(memory.evicts),
        )
        yield GaugeMetricFamily(
            "pushsvc_redis_used_memory_bytes",
            "Redis's used_memory as the check every 5 s last saw it",
            value=memory.used_bytes,
        )
        yield GaugeMetricFamily(
            "pushsvc_redis_maxmemory_bytes",
            "Redis's maxmemory (0: no limit) as the check every 5 s last saw it",
            value=memory.max_bytes,
        )

    def _bridge(self) -> Iterator[Metric]:
        try:
            stats = self._broker.bridge_stats()
        except BrokerUnavailable:
            return
        if stats is None:
            return
        yield GaugeMetricFamily(
            "pushsvc_bridge_active",
            "1 while a bridge holds its lease and takes producers' messages from Redis",
            value=int(stats.active),
        )
        yield CounterMetricFamily(
            "pushsvc_bridge_events",
            "Events the Redis bridge appended to the event log",
            value=stats.events,
        )
        rejected = CounterMetricFamily(
            "pushsvc_bridge_rejected",
            "Messages the Redis bridge refused, by reason (the POST error code)",
            labels=["reason"],
        )
        for reason, count in sorted(stats.rejected.items()):
            rejected.add_metric([reason], count)
        yield rejected

    def _lag(self) -> Iterator[Metric]:
        try:
            lags = self._broker.lag()
        except BrokerUnavailable:
            return
        entries = GaugeMetricFamily(
            "pushsvc_log_lag_entries", "Event log entries not yet applied", labels=["shard"]
        )
        age = GaugeMetricFamily(
            "pushsvc_log_lag_seconds",
            "Age of the oldest event log entry not yet applied (0: none)",
            labels=["shard"],
        )
        for lag in lags:
            shard = f"{lag.shard[0]}/{lag.shard[1]}"
            entries.add_metric([shard], lag.entries)
            age.add_metric([shard], lag.oldest_age_s or 0.0)
        yield entries
        yield age


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


# How each gauge this process mirrors is combined over the live processes (the rest are
# summed): the members an aggregator sees, and the limits and start of the processes.
_GAUGE_MODES = {
    "pushsvc_aggregators_live": "livemax",
    "process_start_time_seconds": "livemin",
    "process_max_fds": "livemin",
}


class Metrics:
    """One registry per app, so several apps in one process (tests) do not collide.

    With `PROMETHEUS_MULTIPROC_DIR` set (`serve --workers N` sets it for its children), a
    scrape answers for every process sharing that directory (`multiprocess_metrics`)."""

    def __init__(self, hub: Hub, broker: ServingBroker) -> None:
        shared = shared_dir()
        self.registry = CollectorRegistry(auto_describe=True)
        self._process = _ProcessState(hub)
        self._deployment = _DeploymentState(broker)
        # The Counters and Gauges below write their own files when shared: not registered,
        # the files are (else each would be counted twice).
        own = self.registry if shared is None else None
        self._own = own
        self.events_accepted = Counter(
            "pushsvc_events_accepted", "Events accepted by the producer API", registry=own
        )
        self.late_events = Counter(
            "pushsvc_late_events",
            "Events posted past their topic's grace, logged on its late stream (<topic>.late) "
            "(a message among them is pushed on its topic all the same)",
            registry=own,
        )
        self.idempotent_replays = Counter(
            "pushsvc_idempotent_replays",
            "POSTs answered with an earlier request's answer (same Idempotency-Key): "
            "nothing logged, nothing counted as accepted",
            registry=own,
        )
        self.idempotency_keys_evicted = Counter(
            "pushsvc_idempotency_keys_evicted",
            "Idempotency keys forgotten before their window ended because their partition "
            "held as many as it keeps (100,000): counted by the process whose POST made room",
            registry=own,
        )
        self.requests_rejected = Counter(
            "pushsvc_requests_rejected",
            "Requests answered with an error, by error code",
            ["code"],
            registry=own,
        )
        self.alertmanager_posts = Counter(
            "pushsvc_alertmanager_posts",
            "POSTs of alerts to an Alertmanager, by outcome (ok, error: unreachable or refused)",
            ["outcome"],
            registry=own,
        )
        self.auth_asks = Counter(
            "pushsvc_auth_asks",
            "Asks sent to the application's auth backend (--auth-url), by outcome (granted, "
            "denied, failed: no answer in time, an error or a malformed answer)",
            ["outcome"],
            registry=own,
        )
        # CPU, memory and open files of this process (shared: summed over the processes).
        process = ProcessCollector(registry=own)
        self.mirror: FileMirror | None = None
        if shared is None:
            self.registry.register(self._process)
        else:
            self.mirror = FileMirror(shared, [self._process], _GAUGE_MODES, slow=[process])
            self.registry.register(SharedFiles(shared))
        self.registry.register(self._deployment)
        # Which process answered (`serve --workers` runs several behind one port).
        Info("pushsvc_process", "This process", registry=self.registry).info(
            {"pid": str(os.getpid())}
        )

    def greenlet_gauge(self) -> Gauge:
        """The gauge pushsvc's own server keeps (under gunicorn there is none: its worker runs
        the connections). Counted where each greenlet starts and ends, not found at scrape time:
        walking gc.get_objects() would stall the loop for every stream."""
        return Gauge(
            "pushsvc_greenlets",
            "Greenlets serving HTTP connections, one per open connection (streams included); "
            "the process's few others are not counted",
            registry=self._own,
            multiprocess_mode="livesum",
        )

    def shed_counter(self) -> Counter:
        """What pushsvc's own server counts as it sheds connections that keep it waiting
        (`pushsvc.http.waiting_clients`)."""
        return Counter(
            "pushsvc_connections_shed",
            "Connections closed while they waited on their client (head, body or keep-alive), "
            "the longest-waiting first, to keep descriptors for the others",
            registry=self._own,
        )

    def timeout_counter(self) -> Counter:
        """What pushsvc's own server counts as it closes connections whose client did not
        send or take in time, by phase: each is logged only at DEBUG, since an attack
        (slowloris, R.U.D.Y.) times out thousands a minute and a line each would flood the log
        and hold the loop writing it. Every phase is shown from the start, at 0."""
        counter = Counter(
            "pushsvc_client_timeouts",
            "Connections closed because their client did not send or take in time: "
            "handshake (TLS) and head within a third of --body-timeout, body within it (and "
            "a third of it between pieces), write: an answer it took nothing of for "
            "--body-timeout",
            ["phase"],
            registry=self._own,
        )
        for phase in TIMEOUT_PHASES:
            counter.labels(phase)
        return counter

    def refused_counter(self) -> Counter:
        """What pushsvc's own server counts as it resets connections just accepted while
        strained (`pushsvc.http.waiting_clients`)."""
        return Counter(
            "pushsvc_connections_refused",
            "Connections reset as soon as accepted, while the connections waiting on their "
            "client were at their caps and their shedding at its pace, from an address "
            "keeping the server waiting",
            registry=self._own,
        )

    def watch_aggregator(self, aggregator: AggregatorStats) -> None:
        self._process.aggregator = aggregator

    def watch_partitions(self, pool: PartitionPool) -> None:
        self._process.partitions = pool

    def watch_deriver(self, deriver: Deriver) -> None:
        self._process.deriver = deriver

    def watch_sessionizer(self, sessionizer: Sessionizer) -> None:
        self._process.sessionizer = sessionizer

    def watch_outbox(self, stats: OutboxStats) -> None:
        self._process.outbox = stats

    def watch_redis(self, guard: RedisGuard) -> None:
        self._process.redis = True
        self._deployment.redis_guard = guard

    def render(self) -> bytes:
        if self.mirror is not None:
            self.mirror.flush()  # this process's own counts as of now
        return generate_latest(self.registry)
