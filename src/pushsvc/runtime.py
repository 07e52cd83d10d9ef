"""What one process runs: the broker, its hub and, where it aggregates, the aggregator."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import gevent
import gevent.event

from pushsvc.aggregate.aggregator import Aggregator, sweep_interval_s
from pushsvc.aggregate.shard_runner import ShardRunner
from pushsvc.broker import make_broker
from pushsvc.broker.base import Broker, UpdatesFeed
from pushsvc.broker.memory import MemoryBroker
from pushsvc.broker.redis import RedisBroker
from pushsvc.broker.redis.guard import RedisGuard, check_at_start
from pushsvc.broker.redis.keys import shard_of
from pushsvc.broker.redis.lease import Lease
from pushsvc.broker.redis.log import EventLog
from pushsvc.config import Settings
from pushsvc.deliver.hub import Hub
from pushsvc.ingest import Event, InputLimits
from pushsvc.ingest.redis_bridge import Bridge
from pushsvc.ops.metrics import Metrics
from pushsvc.security.access import Gate
from pushsvc.security.limits import RateLimiter, StreamSlots
from pushsvc.security.scopes import Scope
from pushsvc.security.tokens import Verifier

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
    limits: InputLimits
    gate: Gate
    stream_slots: StreamSlots
    publish_rate: RateLimiter | None = None
    feed: UpdatesFeed | None = None
    aggregator: Aggregator | None = None
    shard_runner: ShardRunner | None = None
    bridge: Bridge | None = None
    redis_guard: RedisGuard | None = None
    stop: gevent.event.Event = field(default_factory=gevent.event.Event)
    _closers: list[Callable[[], None]] = field(default_factory=list)
    _greenlets: list[gevent.Greenlet[..., object]] = field(default_factory=list)

    @classmethod
    def build(cls, settings: Settings, *, web: bool, aggregate: bool) -> Runtime:
        broker = make_broker(
            settings.redis_url,
            prefix=settings.prefix,
            history=settings.history,
            shards=settings.shard[1],
            min_replicas=settings.redis_min_replicas,
            max_topics=settings.max_topics,
        )
        if isinstance(broker, RedisBroker):
            try:
                check_at_start(broker)  # UnsafeRedis: an evicting Redis would lose data
            except BaseException:
                broker.close()
                raise
        hub = Hub(queue_size=settings.queue_size, slow_timeout_us=settings.slow_client_timeout_us)
        limits = InputLimits(max_body_bytes=settings.max_body_bytes, max_batch=settings.max_batch)
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
        )
        if isinstance(broker, RedisBroker):
            guard = runtime.redis_guard = RedisGuard(
                broker, interval_s=settings.redis_check_us / 1_000_000
            )
            runtime.metrics.watch_redis(guard)
            runtime._spawn(guard.run, runtime.stop)
        if web:
            # Updates may have been missed (Redis connection lost): end the streams, which
            # resume from the history (EventSource reconnects by itself).
            runtime.feed = broker.consume_updates(hub.dispatch, on_reset=hub.reset)
        if aggregate:
            runtime.aggregator = Aggregator(
                rules=settings.rules,
                wall_clock=wall_clock_us,
                topic_ttl_us=settings.topic_ttl_us,
                lateness_us=settings.allowed_lateness_us,
            )
            runtime.metrics.watch_aggregator(runtime.aggregator)
            if isinstance(broker, MemoryBroker):
                runtime._run_in_process(broker, runtime.aggregator)
                runtime._send_alerts(broker)
            else:
                assert isinstance(broker, RedisBroker)
                runtime._run_shard(broker, runtime.aggregator)
        return runtime

    def _run_in_process(self, broker: MemoryBroker, aggregator: Aggregator) -> None:
        def handle(topic: str, events: list[Event]) -> None:
            broker.publish_updates(aggregator.apply_events(topic, events))

        self._closers.append(broker.consume_events(handle).close)
        self._closers.append(broker.consume_forgets(aggregator.forget).close)
        if self.settings.tick_us or self.settings.topic_ttl_us:
            self._spawn(self._idle_loop, broker, aggregator)

    def _idle_loop(self, broker: MemoryBroker, aggregator: Aggregator) -> None:
        """Idle ticks every `--tick`, and idle topics forgotten (`--topic-ttl`), in one process:
        nothing to log first."""
        tick_s = self.settings.tick_us / 1_000_000
        ttl_us = self.settings.topic_ttl_us
        sweep_s = sweep_interval_s(ttl_us)

        def idle() -> dict[str, int]:
            return aggregator.idle_topics(ttl_us, ticking=tick_s > 0)

        now = time.monotonic()
        next_tick = now + tick_s if tick_s else math.inf
        next_sweep = now + sweep_s if ttl_us else math.inf
        while not self.stop.wait(max(0.0, min(next_tick, next_sweep) - time.monotonic())):
            now = time.monotonic()
            try:
                if now >= next_tick:
                    next_tick = now + tick_s
                    broker.publish_updates(aggregator.tick())
                if now >= next_sweep:
                    next_sweep = now + sweep_s
                    broker.forget_topics(idle)
            except Exception:  # a failing round must not end the rounds for good
                log.exception("idle tick or topic sweep failed")

    def _run_shard(self, broker: RedisBroker, aggregator: Aggregator) -> None:
        assert self.settings.redis_url is not None
        shard = self.settings.shard
        event_log = EventLog(self.settings.redis_url, broker.keys, shard, socket_timeout=5.0)
        lease = Lease(
            self.settings.redis_url, broker.keys.lease(shard), ttl_us=self.settings.lease_us
        )
        self.shard_runner = ShardRunner(
            aggregator,
            broker,
            event_log,
            lease,
            tick_us=self.settings.tick_us,
            topic_ttl_us=self.settings.topic_ttl_us,
        )
        self.metrics.watch_shard(self.shard_runner)
        self._closers += [event_log.close, lease.close]
        self._spawn(lease.keep, self.stop)
        self._spawn(self.shard_runner.run, self.stop)
        # Producers on Redis: every aggregator process stands by to bridge, one bridges.
        self.bridge = Bridge(
            broker,
            limits=self.limits,
            lateness_us=self.settings.allowed_lateness_us,
            lease_us=self.settings.lease_us,
        )
        self._spawn(self.bridge.run, self.stop)
        index, count = shard
        self._send_alerts(
            broker,
            holding=lambda: lease.holding,
            mine=lambda topic: shard_of(topic, count) == index,
        )

    def _send_alerts(
        self,
        broker: Broker,
        *,
        holding: Callable[[], bool] = lambda: True,
        mine: Callable[[str], bool] = lambda topic: True,
    ) -> None:
        """Post this aggregator's firing and resolved alert instances to the Alertmanagers
        (`--alertmanager-url`), in a greenlet of their own."""
        urls = self.settings.alertmanager_url
        if not urls or not self.settings.rules.alerts:
            return
        from pushsvc.alerts.alertmanager import AlertmanagerSender

        posts = self.metrics.alertmanager_posts
        sender = AlertmanagerSender(
            urls,
            broker.active_alerts,
            holding=holding,
            mine=mine,
            resend_s=self.settings.alertmanager_resend_us / 1_000_000,
            on_post=lambda outcome: posts.labels(outcome).inc(),
        )
        self._spawn(sender.run, self.stop)

    def _spawn(self, run: Callable[..., object], *args: object) -> None:
        self._greenlets.append(gevent.spawn(run, *args))

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
        anonymous=Scope.of(settings.anonymous),
        token_query=settings.token_query,
        trusted_origins=settings.cors_origins,
    )
