"""What one process runs: the broker, its hub and, where it aggregates, the aggregator.

The broker is chosen once, from the settings (`_backend`): the embedded one (its store in
this process) or Redis. Either way the aggregators run the one shared-log core: the partitions
this process takes its share of (`pushsvc.aggregate.partition_pool`); on Redis the bridge and
the memory guard run beside it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import gevent
import gevent.event

from pushsvc.aggregate.aggregator import Aggregator
from pushsvc.aggregate.derive import Deriver
from pushsvc.aggregate.partition_pool import PartitionPool
from pushsvc.aggregate.sessionize import Sessionizer
from pushsvc.broker.base import ServingBroker, UpdatesFeed
from pushsvc.broker.memory import MemoryBroker
from pushsvc.broker.redis import RedisBroker
from pushsvc.broker.redis.guard import RedisGuard, check_at_start
from pushsvc.broker.redis.lease import RedisLease
from pushsvc.broker.redis.mercure_subscriptions import RedisSubscriptions
from pushsvc.broker.redis.presence import RedisPresence
from pushsvc.broker.shared_log import LogBroker
from pushsvc.config import Settings
from pushsvc.core.presence import PresenceRegistry, PresenceSource
from pushsvc.core.subscription_registry import SubscriptionRegistry
from pushsvc.core.topics import validate_topic
from pushsvc.deliver import priming
from pushsvc.deliver.hub import Hub
from pushsvc.deliver.mercure_active import (
    ActiveSubscriptions,
    LocalSubscriptions,
    SubscriptionStore,
)
from pushsvc.deliver.mercure_subscriptions import SUBSCRIPTIONS_TOPIC
from pushsvc.deliver.presence import LocalPresence
from pushsvc.deliver.presence_events import PresenceEvents
from pushsvc.ingest import InputLimits
from pushsvc.ingest.accept import ingest
from pushsvc.ingest.redis_bridge import Bridge
from pushsvc.loop_pause import let_others_run, take_turns
from pushsvc.ops.metrics import Metrics
from pushsvc.security.access import Gate
from pushsvc.security.backend_auth import BackendAuth
from pushsvc.security.grant_cache import GrantCache
from pushsvc.security.limits import RateLimiter, StreamSlots
from pushsvc.security.mercure_auth import MercureGrant
from pushsvc.security.scopes import Scope
from pushsvc.security.tokens import Verifier
from pushsvc.security.topic_shares import TopicShares

log = logging.getLogger(__name__)

MERCURE_PUBLISHERS = 256
"""Verified Mercure publisher tokens a process keeps: publishers are the application's own
servers, a few tokens each (`pushsvc.http.api.mercure`)."""

_SETTLE_MS = 1000
"""How old (by Redis's clock in its stream ids) a source update must be before the sessionizer
reads it: one written to another partition at the same moment is visible by then, so every
read of the same stretch sees the same order (`pushsvc.aggregate.sessionize`)."""
_SKEW_US = 30_000_000
"""On Redis, how much later than the allowed lateness a source event may still join its
session: a partition whose aggregator is taking over publishes its backlog after the others'
newer events (a lease period or two). Sessions end that much later."""


def wall_clock_us() -> int:
    return time.time_ns() // 1000


@dataclass
class Runtime:
    """Everything stateful behind one app; lives in `app.extensions["pushsvc"]`."""

    settings: Settings
    broker: ServingBroker
    hub: Hub
    metrics: Metrics
    limits: InputLimits
    gate: Gate
    stream_slots: StreamSlots
    publish_rate: RateLimiter | None = None
    topic_shares: TopicShares | None = None
    """Each publisher's share of `--max-topics` (a web runtime)."""
    feed: UpdatesFeed | None = None
    partitions: PartitionPool | None = None
    """In an aggregating process: its share of the partitions (an aggregator each)."""
    redis_guard: RedisGuard | None = None
    presence: PresenceSource = field(default_factory=lambda: LocalPresence(PresenceRegistry()))
    """Who watches each topic (`pushsvc.core.presence`): set up in a web runtime."""
    presence_events: PresenceEvents | None = None
    mercure_subscriptions: ActiveSubscriptions | None = None
    mercure_publishers: GrantCache[MercureGrant] = field(
        default_factory=lambda: GrantCache(MERCURE_PUBLISHERS)
    )
    """The Mercure publishers' verified tokens (`pushsvc.http.api.mercure`)."""
    """The Mercure hub's active subscriptions (`--mercure-subscriptions`, a web runtime)."""
    stop: gevent.event.Event = field(default_factory=gevent.event.Event)
    _closers: list[Callable[[], None]] = field(default_factory=list)
    _greenlets: list[gevent.Greenlet[..., object]] = field(default_factory=list)

    @classmethod
    def build(cls, settings: Settings, *, web: bool, aggregate: bool) -> Runtime:
        backend = _backend(settings)
        broker = backend.broker
        hub = Hub(
            slow_timeout_us=settings.slow_client_timeout_us,
            max_stream_buffer=settings.max_stream_buffer,
            stream_buffer_budget=settings.stream_buffer_budget,
        )
        priming.install(broker, pause=take_turns)
        limits = InputLimits(
            max_body_bytes=settings.max_body_bytes,
            max_future_us=settings.max_future_us,
            max_message_bytes=settings.max_message_bytes,
            derived_topics=settings.rules.derived_topics,
            session_topics=settings.rules.session_topics,
        )
        runtime = cls(
            settings,
            broker,
            hub,
            Metrics(hub, broker),
            limits,
            gate=_gate(settings),
            stream_slots=StreamSlots(
                per_ip=settings.max_streams_per_ip, total=settings.max_streams
            ),
            publish_rate=(
                None if settings.publish_rate is None else RateLimiter(settings.publish_rate)
            ),
            # A share of the whole table is no share: the table's own bound answers.
            topic_shares=(
                None
                if settings.topic_share >= settings.max_topics
                else TopicShares(
                    settings.topic_share,
                    ttl_s=settings.topic_ttl_us / 1_000_000,
                    max_topics=settings.max_topics,
                )
            ),
        )
        backend.watch(runtime)
        if runtime.gate.backend is not None:
            asks = runtime.metrics.auth_asks
            runtime.gate.backend.on_ask = lambda outcome: asks.labels(outcome).inc()
            runtime.on_close(runtime.gate.backend.close)
        mirror = runtime.metrics.mirror
        if mirror is not None:  # several processes answer /metrics as one
            runtime.spawn(mirror.run, runtime.stop)
            runtime.on_close(mirror.close)
        if web:
            # Updates may have been missed (Redis connection lost): end the streams, which
            # resume from the history (EventSource reconnects by itself).
            runtime.feed = broker.consume_updates(hub.dispatch, on_reset=hub.reset)
            _watch_presence(runtime)
            if settings.mercure_subscriptions:
                _track_mercure_subscriptions(runtime)
        if aggregate:
            # Said by the process that applies the rules: once per deployment.
            for line in settings.rules.never_applied:
                log.warning("%s", line)

            def new_aggregator() -> Aggregator:
                return Aggregator(
                    rules=settings.rules,
                    wall_clock=wall_clock_us,
                    topic_ttl_us=settings.topic_ttl_us,
                    lateness_us=settings.grace_us,
                    # A big batch lets the loop serve producers and streams meanwhile.
                    pause=let_others_run,
                )

            backend.drive(runtime, new_aggregator)
            if settings.outbox_dsn is not None:
                _read_outbox(runtime)
        return runtime

    def send_alerts(
        self,
        *,
        holding: Callable[[], bool] = lambda: True,
        mine: Callable[[str], bool] = lambda topic: True,
    ) -> None:
        """Post this aggregator's firing and resolved alert instances to the Alertmanagers
        (`--alertmanager-url`), in a greenlet of their own: while `holding()`, those of the
        topics that are `mine`."""
        urls = self.settings.alertmanager_url
        if not urls or not self.settings.rules.alerts:
            return
        from pushsvc.alerts.alertmanager import AlertmanagerSender

        posts = self.metrics.alertmanager_posts
        sender = AlertmanagerSender(
            urls,
            self.broker.active_alerts,
            holding=holding,
            mine=mine,
            on_post=lambda outcome: posts.labels(outcome).inc(),
        )
        self.spawn(sender.run, self.stop)

    def spawn(self, run: Callable[..., object], *args: object) -> None:
        """Run this in a greenlet that `close` stops."""
        self._greenlets.append(gevent.spawn(run, *args))

    def on_close(self, close: Callable[[], None]) -> None:
        """Call this when the runtime closes, after its greenlets stopped."""
        self._closers.append(close)

    def close(self) -> None:
        """Stop streams, background work and the broker; idempotent."""
        self.hub.close()
        self.stop.set()
        gevent.joinall(self._greenlets, timeout=3)
        gevent.killall(self._greenlets)
        self._greenlets.clear()
        if self.feed is not None:
            self.feed.close()
            self.feed = None
        for close in self._closers:
            close()
        self._closers.clear()
        self.broker.close()


class _Backend(Protocol):
    """A broker and the way its aggregator is driven, chosen together (`_backend`)."""

    @property
    def broker(self) -> ServingBroker: ...

    def watch(self, runtime: Runtime) -> None:
        """Start whatever watches the broker itself (every process)."""
        ...

    def drive(self, runtime: Runtime, new_aggregator: Callable[[], Aggregator]) -> None:
        """Feed aggregators made by `new_aggregator` and publish what they make (an
        aggregating process)."""
        ...


def _backend(settings: Settings) -> _Backend:
    """The Redis broker when a URL is given, else the embedded one (the same core, its store
    in this process); the one place that chooses."""
    if settings.redis_url is None:
        return _Embedded(
            MemoryBroker.serving(
                history=settings.history,
                history_bytes=settings.history_bytes,
                max_topics=settings.max_topics,
                alert_retention_us=settings.alert_keep_us,
                pause=let_others_run,
            )
        )
    broker = RedisBroker(
        settings.redis_url,
        prefix=settings.prefix,
        history=settings.history,
        history_bytes=settings.history_bytes,
        partitions=settings.partitions,
        min_replicas=settings.redis_min_replicas,
        max_topics=settings.max_topics,
        alert_retention_us=settings.alert_keep_us,
    )
    try:
        check_at_start(broker)  # UnsafeRedis: an evicting Redis would lose data
    except BaseException:
        broker.close()
        raise
    return _OnRedis(broker)


def _drive_partitions(
    runtime: Runtime,
    broker: LogBroker,
    new_aggregator: Callable[[], Aggregator],
    *,
    alone: bool = False,
) -> PartitionPool:
    """This process's share of the partitions, by leases, applied and published exactly
    once (`PartitionPool`): what every mode runs. `alone`: no other process can hold a
    lease (the embedded broker)."""
    settings = runtime.settings
    pool = runtime.partitions = PartitionPool(
        broker,
        new_aggregator,
        lease_us=settings.lease_us,
        tick_us=settings.tick_us,
        topic_ttl_us=settings.topic_ttl_us,
        checkpoint_interval_s=settings.checkpoint_interval_us / 1_000_000,
        alone=alone,
    )
    runtime.metrics.watch_aggregator(pool)
    runtime.metrics.watch_partitions(pool)
    runtime.spawn(pool.run, runtime.stop)
    # Alerts of the partitions held now: they follow the partitions as they move.
    runtime.send_alerts(holding=lambda: pool.holding, mine=pool.owns)
    return pool


@dataclass(frozen=True)
class _Embedded:
    """The embedded broker: the shared-log core with its store in this process, which is
    the whole deployment (it holds every partition, the deriver and the sessionizer)."""

    broker: MemoryBroker

    def watch(self, runtime: Runtime) -> None:
        pass  # nothing outside this process to watch

    def drive(self, runtime: Runtime, new_aggregator: Callable[[], Aggregator]) -> None:
        settings = runtime.settings
        _drive_partitions(runtime, self.broker, new_aggregator, alone=True)
        if settings.rules.derives:
            deriver = Deriver(
                self.broker,
                settings.rules,
                lateness_us=settings.rules.widest_grace_us(settings.grace_us),
            )
            runtime.metrics.watch_deriver(deriver)
            runtime.spawn(deriver.run, runtime.stop)
        if settings.rules.sessions:
            # One process publishes every partition: an update is read as soon as it is
            # published, in publish order.
            sessionizer = Sessionizer(
                self.broker,
                settings.rules.sessions,
                lateness_us=settings.grace_us,
                analytics=settings.rules,
            )
            runtime.metrics.watch_sessionizer(sessionizer)
            runtime.spawn(sessionizer.run, runtime.stop)


@dataclass(frozen=True)
class _OnRedis:
    """Redis: this process's share of the partitions (by leases, with the other aggregator
    processes), and the bridge."""

    broker: RedisBroker

    def watch(self, runtime: Runtime) -> None:
        guard = runtime.redis_guard = RedisGuard(self.broker)
        runtime.metrics.watch_redis(guard)
        runtime.spawn(guard.run, runtime.stop)

    def drive(self, runtime: Runtime, new_aggregator: Callable[[], Aggregator]) -> None:
        settings = runtime.settings
        _drive_partitions(runtime, self.broker, new_aggregator)
        # Producers on Redis: every aggregator process stands by to bridge, one bridges.
        bridge = Bridge(
            self.broker,
            limits=runtime.limits,
            lateness_us=settings.grace_us,
            lease_us=settings.lease_us,
            rules=settings.rules,
        )
        runtime.spawn(bridge.run, runtime.stop)
        if settings.rules.derives:
            # Derived metrics likewise: every aggregator process stands by, one computes.
            lease = RedisLease(
                self.broker.url, self.broker.keys.derive_lease, ttl_us=settings.lease_us
            )
            deriver = Deriver(
                self.broker,
                settings.rules,
                lateness_us=settings.rules.widest_grace_us(settings.grace_us),
                lease=lease,
            )
            runtime.metrics.watch_deriver(deriver)
            runtime.spawn(lease.keep, runtime.stop)
            runtime.spawn(deriver.run, runtime.stop)
            runtime.on_close(lease.close)
        if settings.rules.sessions:
            # Sessions likewise: every aggregator process stands by, one assembles.
            session_lease = RedisLease(
                self.broker.url, self.broker.keys.session_lease, ttl_us=settings.lease_us
            )
            sessionizer = Sessionizer(
                self.broker,
                settings.rules.sessions,
                lateness_us=settings.grace_us,
                lease=session_lease,
                settle_ms=_SETTLE_MS,
                skew_us=_SKEW_US,
                analytics=settings.rules,
            )
            runtime.metrics.watch_sessionizer(sessionizer)
            runtime.spawn(session_lease.keep, runtime.stop)
            runtime.spawn(sessionizer.run, runtime.stop)
            runtime.on_close(session_lease.close)


def _watch_presence(runtime: Runtime) -> None:
    """This process's streams as presence counts them: the whole answer embedded; on Redis
    published, expiring, beside every other web process's."""
    settings = runtime.settings
    registry = PresenceRegistry(keep_subs=settings.presence_subs)
    broker = runtime.broker
    source: PresenceSource
    if isinstance(broker, RedisBroker):
        redis_presence = RedisPresence(broker.url, broker.keys, registry)
        runtime.spawn(redis_presence.run, runtime.stop)
        runtime.on_close(redis_presence.close)
        source = redis_presence
    else:
        source = LocalPresence(registry)
    runtime.presence = source
    events = runtime.presence_events = PresenceEvents(source)
    runtime.spawn(events.run, runtime.stop)


def _track_mercure_subscriptions(runtime: Runtime) -> None:
    """The Mercure hub's active subscriptions: embedded, this process's registry is the
    answer; on Redis written through, expiring, beside every other web process's."""
    registry = SubscriptionRegistry()
    broker = runtime.broker
    store: SubscriptionStore
    if isinstance(broker, RedisBroker):
        store = RedisSubscriptions(broker.url, broker.keys, registry)
    else:
        store = LocalSubscriptions(registry)
    settings = runtime.settings

    def append(body: bytes) -> None:
        ingest(
            broker,
            validate_topic(SUBSCRIPTIONS_TOPIC),
            body,
            "application/json",
            limits=runtime.limits,
            lateness_us=settings.grace_us,
            now_us=wall_clock_us(),
            pause=let_others_run,
            by_hub=True,
        )

    active = runtime.mercure_subscriptions = ActiveSubscriptions(registry, store, append)
    runtime.spawn(store.run, runtime.stop)
    runtime.on_close(store.close)
    runtime.spawn(active.run, runtime.stop)


def _read_outbox(runtime: Runtime) -> None:
    """The application's outbox table into the log: every aggregating process stands by, the
    one holding the table's lease (in PostgreSQL) reads. Imported here: psycopg is an extra,
    loaded only when an outbox is configured."""
    from pushsvc.ingest.outbox import OutboxReader

    settings = runtime.settings
    assert settings.outbox_dsn is not None
    reader = OutboxReader(
        runtime.broker,
        settings.outbox_dsn.value,
        table=settings.outbox_table,
        limits=runtime.limits,
        lateness_us=settings.grace_us,
        rules=settings.rules,
        standby_s=settings.lease_us / 3_000_000,
    )
    runtime.metrics.watch_outbox(reader.stats)
    runtime.spawn(reader.run, runtime.stop)
    runtime.on_close(reader.close)


def _gate(settings: Settings) -> Gate:
    key = settings.jwt_key
    verifier = (
        None
        if key is None
        else Verifier(
            key,
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            previous=settings.jwt_previous_key,
        )
    )
    return Gate(
        verifier,
        anonymous=Scope.reading(settings.anonymous),
        token_query=settings.token_query,
        trusted_origins=settings.cors_origins,
        backend=None if settings.auth_url is None else _backend_auth(settings, settings.auth_url),
    )


def _backend_auth(settings: Settings, url: str) -> BackendAuth:
    return BackendAuth(
        url,
        cookies=settings.auth_cookies,
    )
