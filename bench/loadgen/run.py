"""One run: connect N subscribers, publish M events (or wait for the driver to), drain, count.

Both modes (loadgen/modes.py) run this one loop; they differ only in what a subscriber does
per message. Every phase has a deadline, so a run always ends by itself: what has not
arrived by then is reported missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from bench.loadgen.kinds import PAYLOADS, Kind
from bench.loadgen.modes import DeliveriesMode, IdsMode
from bench.loadgen.process import http_address
from bench.loadgen.publisher import Publisher
from bench.loadgen.subscriber import Progress, Subscriber, stream_request
from bench.loadgen.tally import totals
from bench.posting import Published

CONNECTING_AT_ONCE = 100
"""Connects in flight; below a listen backlog of 128 (gevent's default) so none is dropped."""


@dataclass(frozen=True)
class RunConfig:
    kind: Kind
    stream_urls: tuple[str, ...]
    """Subscriber i uses stream_urls[i % len(stream_urls)]."""
    subscribers: int
    events: int
    mode: str = "deliveries"
    """"deliveries", "json" or "ids" (loadgen/modes.py)."""
    references: int = 1
    """ids: how many subscribers also read event values."""
    publish_url: str | None = None
    """Publish the events from here; None: the driver publishes, and says so on stdin."""
    rate: float | None = None
    """Events per second; None publishes as fast as the server answers."""
    http10: bool = False
    gzip: bool = False
    """Offer gzip; a subscriber decodes what comes gzipped (its byte count is the wire's)."""
    source: str | None = None
    """The local address the streams connect from (None: the kernel's choice). Each source
    address has its own ~28,000 ephemeral ports towards one server port, so that a machine's
    100,000 streams come from several 127.0.0.x."""
    payload: str = "plain"
    """What the publisher POSTs (`kinds.PAYLOADS`): the event, or `stats`, the event with
    statistics as large as a pushsvc update's (for a peer)."""
    publish_headers: tuple[str, ...] = ()
    """More `Name: value` header lines on every publication (a publisher's token)."""
    quickack: bool = False
    """Publisher ACKs responses at once (works around servers that do not set TCP_NODELAY)."""
    persist: bool = False
    """Publisher posts each event until it is accepted, under an `Idempotency-Key` (a server
    restarting while it publishes: the event is logged once however many tries it takes)."""
    connect_timeout: float = 60.0
    publish_timeout: float | None = None
    """Default: events / rate + 30 s, or 60 s + 1 ms per event at max rate; 300 s for the
    driver's publishing."""
    drain_timeout: float = 30.0
    idle_timeout: float = 5.0
    """Drain ends early when no delivery arrives for this long."""

    def publish_deadline(self) -> float:
        if self.publish_timeout is not None:
            return self.publish_timeout
        if self.publish_url is None:
            return 300.0
        return self.events / self.rate + 30 if self.rate else 60 + self.events / 1000


class StdinLines:
    """Lines read off stdin by a daemon thread (a blocked readline must not keep the process
    alive, hence no executor); None at EOF, and for ever after."""

    def __init__(self) -> None:
        self._lines: asyncio.Queue[str | None] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def read() -> None:
            for line in sys.stdin:
                loop.call_soon_threadsafe(self._lines.put_nowait, line.strip())
            loop.call_soon_threadsafe(self._lines.put_nowait, None)

        threading.Thread(target=read, daemon=True).start()

    async def next(self, timeout: float) -> str | None:
        with contextlib.suppress(TimeoutError):
            line = await asyncio.wait_for(self._lines.get(), timeout)
            if line is None:
                self._lines.put_nowait(None)
            return line
        return None


class Run:
    def __init__(self, config: RunConfig) -> None:
        self.config = config
        self.mode = (
            IdsMode(config.events, config.references,
                    messages=config.kind.name == "pushsvc-messages") if config.mode == "ids"
            else DeliveriesMode(config.kind, config.events, browser=config.mode == "json")
        )  # fmt: skip
        self.progress = Progress(expected=config.events)
        self.subscribers: list[Subscriber] = []
        self.connect_errors: dict[str, int] = {}
        self.published: Published | None = None

    async def _until(
        self, done: Callable[[], bool], timeout: float, idle: float = math.inf
    ) -> None:
        """Wait until `done()` holds, `timeout` passes or no delivery arrived for `idle`
        seconds, waking on every change."""
        deadline = time.monotonic() + timeout
        progress = self.progress
        while not done():
            left = min(deadline - time.monotonic(), progress.last_delivery + idle - time.time())
            if left <= 0:
                break
            progress.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(progress.changed.wait(), min(left, 0.5))

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        config, progress = self.config, self.progress
        slots = asyncio.Semaphore(CONNECTING_AT_ONCE)
        addresses = [http_address(url) for url in config.stream_urls]
        requests = [
            stream_request(*address, http10=config.http10, gzip=config.gzip)
            for address in addresses
        ]
        local_addr = None if config.source is None else (config.source, 0)

        async def one(i: int) -> None:
            host, port, _ = addresses[i % len(addresses)]
            subscriber = Subscriber(requests[i % len(requests)], self.mode.reader(i), progress)
            async with slots:
                try:
                    await loop.create_connection(
                        lambda: subscriber, host, port, local_addr=local_addr
                    )
                except OSError as exc:
                    key = f"{type(exc).__name__}: {exc.strerror or exc}"
                    self.connect_errors[key] = self.connect_errors.get(key, 0) + 1
                    progress.failed += 1
                    progress.changed.set()
                    return
                self.subscribers.append(subscriber)
                # Hold the slot until the stream is live: connects in flight stay bounded.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(subscriber.live.wait(), config.connect_timeout)

        opener = asyncio.gather(*(one(i) for i in range(config.subscribers)))
        total = config.subscribers
        await self._until(lambda: progress.ready + progress.failed >= total, config.connect_timeout)
        if not opener.done():
            opener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await opener

    async def publish(self, stdin: StdinLines) -> None:
        """Publish the events (or wait for the driver's line on stdin saying it did)."""
        config = self.config
        if config.publish_url is None:
            await stdin.next(config.publish_deadline())
            return
        host, port, path = http_address(config.publish_url)
        publisher = Publisher(
            host,
            port,
            path,
            config.kind.publish_statuses,
            quickack=config.quickack,
            body=self._body(),
            persist=config.persist,
            content_type=config.kind.content_type,
            headers=config.publish_headers,
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + config.publish_deadline()
        self.published = await publisher.run(config.events, config.rate, deadline)

    def _body(self) -> Callable[[int, float], bytes]:
        payload, envelope = PAYLOADS[self.config.payload], self.config.kind.envelope
        if envelope is None:
            return payload
        return lambda value, sent: envelope(payload(value, sent))

    async def drain(self) -> float:
        """Count until every live subscriber is complete (or the deadlines); the time."""
        progress, live = self.progress, len(self.subscribers)
        progress.last_delivery = max(progress.last_delivery, time.time())
        await self._until(lambda: progress.complete >= live or progress.ended >= live,
                          self.config.drain_timeout, self.config.idle_timeout)  # fmt: skip
        return time.time()

    def close(self) -> None:
        for subscriber in self.subscribers:
            subscriber.close()

    # Records ----------------------------------------------------------------------------

    def opened(self) -> dict[str, object]:
        return {
            "phase": "opened",
            "opened": len(self.subscribers),
            "ready": self.progress.ready,
            "connect_errors": self.connect_errors,
        }

    def drained(self, at: float) -> dict[str, object]:
        """Times and counts, at once (the driver reads CPU figures on this record)."""
        subs = self.subscribers
        complete = [s.complete_at for s in subs if s.complete_at is not None]
        errors: dict[str, int] = {}
        for subscriber in subs:
            if subscriber.error is not None:
                key = subscriber.error.split(" (")[0][:120]
                errors[key] = errors.get(key, 0) + 1
        return {
            "phase": "drained",
            "drained_at": at,
            "connected": sum(1 for s in subs if s.head is not None),
            "connect_errors": self.connect_errors,
            "ready": self.progress.ready,
            "complete": len(complete),
            "all_complete_at": (
                max(complete) if complete and len(complete) == self.config.subscribers else None
            ),
            "first_delivery_at": self.progress.first_delivery or None,
            "last_delivery_at": self.progress.last_delivery or None,
            "bytes": sum(s.bytes for s in subs),
            "stream_errors": errors,
        }

    def result(self, drained_at: float) -> dict[str, object]:
        """Every stream judged (the counts summed), the mode's figures, the publisher's."""
        config = self.config
        counts = totals(s.reader.verdict() for s in self.subscribers)
        # Subscribers that never connected missed everything.
        counts["missing"] += config.events * (config.subscribers - len(self.subscribers))
        result: dict[str, object] = {
            "phase": "result",
            "kind": config.kind.name,
            "mode": self.mode.name,
            "subscribers": config.subscribers,
            "events": config.events,
            "expected": config.events * config.subscribers,
            **counts,
            **self.mode.report([s.reader for s in self.subscribers]),
        }
        published = self.published
        if published is not None:
            last = self.progress.last_delivery if counts["received"] else drained_at
            publish_span = max(published.last_accepted - published.first_sent, 1e-9)
            result |= {
                "rate": config.rate,
                "published": published.accepted,
                "publish_errors": published.errors,
                "publish_per_s": round(published.accepted / publish_span, 1),
                "deliveries_per_s": round(
                    counts["distinct"] / max(last - published.first_sent, 1e-9), 1
                ),
                "seconds": round(drained_at - published.first_sent, 3),
            }
        return result


async def execute(
    config: RunConfig,
    emit: Callable[[dict[str, object]], None],
    *,
    wait_go: bool,
    settle: float,
    hold: bool = False,
) -> None:
    """The run, its records emitted as they come: opened, drained, result. `hold`: the streams
    stay open after `drained` until a line on stdin (or EOF), so that the driver's measurement
    of the server ends before the server sees its clients leave."""
    run = Run(config)
    stdin = StdinLines()
    try:
        await run.connect()
        emit(run.opened())
        if wait_go:
            # The driver measures the idle server here, then says "go" (or closes stdin).
            await stdin.next(config.publish_deadline() + config.connect_timeout)
        elif settle:
            await asyncio.sleep(settle)
        await run.publish(stdin)
        at = await run.drain()
        emit(run.drained(at))
        if hold:
            await stdin.next(60)
    finally:
        run.close()
    emit(run.result(at))
