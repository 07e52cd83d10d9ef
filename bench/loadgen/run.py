"""One fan-out run: connect N subscribers, (wait for "go"), publish M events, drain, count.

Every phase has a deadline, so a run always ends by itself: what has not arrived
by then is reported missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass

from loadgen.kinds import Kind
from loadgen.process import http_address
from loadgen.publisher import Publisher, PublishResult
from loadgen.subscriber import Hooks, Subscriber, stream_request
from loadgen.tally import Tally, percentiles, totals

CONNECTING_AT_ONCE = 100
"""Connects in flight; below a listen backlog of 128 (gevent's default) so none is dropped."""


@dataclass(frozen=True)
class RunConfig:
    kind: Kind
    stream_urls: tuple[str, ...]
    """Subscriber i uses stream_urls[i % len(stream_urls)]."""
    publish_url: str
    subscribers: int
    events: int
    rate: float | None
    """Events per second; None publishes as fast as the server answers."""
    http10: bool = False
    quickack: bool = False
    """Publisher ACKs responses at once (works around servers that do not set TCP_NODELAY)."""
    connect_timeout: float = 60.0
    publish_timeout: float | None = None
    """Default: events / rate + 30 s, or 60 s + 1 ms per event at max rate."""
    drain_timeout: float = 30.0
    idle_timeout: float = 5.0
    """Drain ends early when no delivery arrives for this long."""


class Run:
    def __init__(self, config: RunConfig, emit: Callable[[dict[str, object]], None]) -> None:
        self.config = config
        self._emit = emit
        self.latencies: array[float] = array("d")
        self.progress = [0.0]
        self.subscribers: list[Subscriber] = []
        self.connect_errors: dict[str, int] = {}
        self._ready = 0
        self._complete = 0
        self._ended = 0
        self._failed = 0  # ended, or never connected, before it was ready
        self._all_ready = asyncio.Event()
        self._all_complete = asyncio.Event()
        self._slots = asyncio.Semaphore(CONNECTING_AT_ONCE)

    # Subscriber hooks -------------------------------------------------------------------

    def _on_ready(self, subscriber: Subscriber) -> None:
        self._ready += 1
        self._slots.release()
        self._check_ready()

    def _on_complete(self, subscriber: Subscriber) -> None:
        self._complete += 1
        if self._complete == self.config.subscribers:
            self._all_complete.set()

    def _on_end(self, subscriber: Subscriber) -> None:
        self._ended += 1
        if not subscriber.ready:
            self._failed += 1
            self._slots.release()
            self._check_ready()

    def _check_ready(self) -> None:
        # Every subscriber is then either live or failed for good.
        if self._ready + self._failed == self.config.subscribers:
            self._all_ready.set()

    # Phases -----------------------------------------------------------------------------

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        hooks = Hooks()
        hooks.on_ready, hooks.on_complete, hooks.on_end = (
            self._on_ready, self._on_complete, self._on_end
        )  # fmt: skip
        addresses = [http_address(url) for url in self.config.stream_urls]
        http10 = self.config.http10
        requests = [stream_request(h, p, path, http10=http10) for h, p, path in addresses]

        async def one(i: int) -> None:
            host, port, _ = addresses[i % len(addresses)]
            await self._slots.acquire()
            tally = Tally(self.config.events)
            request = requests[i % len(requests)]
            try:
                await loop.create_connection(
                    lambda: self._track(Subscriber(
                        request, self.config.kind, tally, self.latencies, hooks, self.progress
                    )),
                    host,
                    port,
                )  # fmt: skip
            except OSError as exc:
                key = f"{type(exc).__name__}: {exc.strerror or exc}"
                self.connect_errors[key] = self.connect_errors.get(key, 0) + 1
                self._failed += 1
                self._slots.release()
                self._check_ready()

        opener = asyncio.gather(*(one(i) for i in range(self.config.subscribers)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._all_ready.wait(), self.config.connect_timeout)
        if not opener.done():
            opener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await opener

    def _track(self, subscriber: Subscriber) -> Subscriber:
        self.subscribers.append(subscriber)
        return subscriber

    async def publish_and_drain(self) -> dict[str, object]:
        config = self.config
        loop = asyncio.get_running_loop()
        host, port, path = http_address(config.publish_url)
        publish_timeout = config.publish_timeout
        if publish_timeout is None:
            publish_timeout = (
                config.events / config.rate + 30 if config.rate else 60 + config.events / 1000
            )
        publisher = Publisher(
            host, port, path, config.kind.publish_status, quickack=config.quickack
        )
        published = await publisher.run(config.events, config.rate, loop.time() + publish_timeout)
        drain_end = loop.time() + config.drain_timeout
        self.progress[0] = max(self.progress[0], time.time())
        while not self._all_complete.is_set():
            idle_left = self.progress[0] + config.idle_timeout - time.time()
            left = min(drain_end - loop.time(), idle_left)
            if left <= 0 or self._ended == len(self.subscribers):
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_complete.wait(), min(left, 0.5))
        drained = time.time()
        return self._report(published, drained)

    def close(self) -> None:
        for subscriber in self.subscribers:
            subscriber.close()

    # Report -----------------------------------------------------------------------------

    def opened(self) -> dict[str, object]:
        return {
            "phase": "opened",
            "opened": len(self.subscribers),
            "ready": self._ready,
            "connect_errors": self.connect_errors,
        }

    def _report(self, published: PublishResult, drained: float) -> dict[str, object]:
        config = self.config
        counts = totals(s.tally for s in self.subscribers)
        missing_never_connected = config.events * (config.subscribers - len(self.subscribers))
        last_delivery = self.progress[0] if counts["received"] else drained
        span = max(last_delivery - published.started, 1e-9)
        p50, p90, p99, p100 = percentiles(self.latencies, (0.50, 0.90, 0.99, 1.0))
        errors: dict[str, int] = {}
        for subscriber in self.subscribers:
            if subscriber.error is not None:
                key = subscriber.error.split(" (")[0][:120]
                errors[key] = errors.get(key, 0) + 1
        publish_span = max(published.finished - published.started, 1e-9)

        def ms(x: float | None) -> float | None:
            return None if x is None else round(x * 1000, 3)

        return {
            "phase": "result",
            "kind": config.kind.name,
            "subscribers": config.subscribers,
            "events": config.events,
            "rate": config.rate,
            "connected": sum(1 for s in self.subscribers if s.head is not None),
            "connect_errors": self.connect_errors,
            "published": published.published,
            "publish_errors": published.errors,
            "publish_per_s": round(published.published / publish_span, 1),
            "expected": config.events * config.subscribers,
            "received": counts["received"],
            "missing": counts["missing"] + missing_never_connected,
            "duplicates": counts["duplicates"],
            "out_of_order": counts["out_of_order"],
            "unexpected": counts["unexpected"],
            "stream_errors": errors,
            "deliveries_per_s": round(counts["distinct"] / span, 1),
            "latency_ms": {"p50": ms(p50), "p90": ms(p90), "p99": ms(p99), "max": ms(p100)},
            "seconds": round(drained - published.started, 3),
        }


async def execute(
    config: RunConfig, emit: Callable[[dict[str, object]], None], *, wait_go: bool, settle: float
) -> dict[str, object]:
    run = Run(config, emit)
    try:
        await run.connect()
        emit(run.opened())
        if wait_go:
            # The driver measures the idle server here, then says "go" (or closes stdin).
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        elif settle:
            await asyncio.sleep(settle)
        result = await run.publish_and_drain()
    finally:
        run.close()
    emit(result)
    return result
