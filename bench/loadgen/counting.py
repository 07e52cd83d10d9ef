"""N counting subscribers of one pushsvc topic in one process: `python -m loadgen.counting`.

Built for throughput (bench/e2e.py): each read goes through `Dechunker` (no copy inside
a chunk) and `IdCounter` (one regex over the whole read), so a delivery costs the
generator well under a microsecond. Subscriber 0 (`--reference`) also reads every
update's event value, which ties the ids to the events that were published.

Talks to its driver in JSON lines on stdout, with deadlines on every phase:

1. `{"phase": "opened", ...}` once every subscriber is live (its snapshot arrived) or failed;
2. counting runs from then on; a line `published` on stdin (or EOF) starts the drain, which
   ends when every subscriber has `--events` updates, when `--idle-timeout` passes without
   a new one, or at `--drain-timeout`;
3. `{"phase": "drained", ...}` at once (times, counts), the driver reads CPU figures now;
4. `{"phase": "result", ...}` after judging every id (duplicates, order, agreement).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from loadgen.idcount import IdCounter, Verdict, id_keys, judge_ids, judge_values
from loadgen.process import emit, http_address, run
from loadgen.run import CONNECTING_AT_ONCE
from loadgen.subscriber import StreamProtocol, stream_request

_SNAPSHOT = b"event: snapshot\n"


@dataclass
class Progress:
    """Shared by the subscribers of one run."""

    expected: int
    ready: int = 0
    failed: int = 0  # ended, or never connected, before it was ready
    complete: int = 0
    ended: int = 0
    first_delivery: float = 0.0
    last_delivery: float = 0.0


class CountingSubscriber(StreamProtocol):
    """Counts update ids (and, for a reference subscriber, event values): the e2e benchmark's."""

    def __init__(
        self, request: bytes, counter: IdCounter, progress: Progress, changed: asyncio.Event
    ) -> None:
        super().__init__(request)
        self.counter = counter
        self._progress = progress
        self._changed = changed  # set whenever ready/complete/ended counts move
        self._before_snapshot = b""
        self.ready = False
        self.complete_at: float | None = None

    def body(self, pieces: list[bytes]) -> None:
        found = 0
        for piece in pieces:
            if not self.ready:
                self._before_snapshot += piece
                if _SNAPSHOT not in self._before_snapshot:
                    continue
                piece, self._before_snapshot = self._before_snapshot, b""
                self._set_ready()
            found += self.counter.feed(piece)
        if found:
            progress = self._progress
            now = time.time()
            progress.first_delivery = progress.first_delivery or now
            progress.last_delivery = now
            if self.complete_at is None and self.counter.count >= progress.expected:
                self.complete_at = now
                progress.complete += 1
                self._changed.set()

    def _set_ready(self) -> None:
        self.ready = True
        self._progress.ready += 1
        self._changed.set()

    def ended_(self) -> None:
        self._progress.ended += 1
        if not self.ready:
            self._progress.failed += 1
        self._changed.set()


@dataclass(frozen=True)
class Config:
    stream_urls: tuple[str, ...]
    """Subscriber i uses stream_urls[i % len(stream_urls)]."""
    subscribers: int
    events: int
    references: int = 1
    connect_timeout: float = 30.0
    publish_timeout: float = 300.0
    drain_timeout: float = 60.0
    idle_timeout: float = 5.0


class Run:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.progress = Progress(expected=config.events)
        self.changed = asyncio.Event()
        self.subscribers: list[CountingSubscriber] = []
        self.connect_errors: dict[str, int] = {}

    async def _until(self, done: Callable[[], bool], timeout: float) -> None:
        """Wait until `done()` holds or `timeout` passes, waking on every change."""
        deadline = time.monotonic() + timeout
        while not done() and (left := deadline - time.monotonic()) > 0:
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), left)

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        config = self.config
        slots = asyncio.Semaphore(CONNECTING_AT_ONCE)
        progress = self.progress
        addresses = [http_address(url) for url in config.stream_urls]

        async def one(i: int) -> None:
            host, port, path = addresses[i % len(addresses)]
            request = stream_request(host, port, path, http10=False)
            counter = IdCounter(values=i < config.references)
            async with slots:
                try:
                    _, subscriber = await loop.create_connection(
                        lambda: CountingSubscriber(request, counter, progress, self.changed),
                        host,
                        port,
                    )
                except OSError as exc:
                    key = f"{type(exc).__name__}: {exc.strerror or exc}"
                    self.connect_errors[key] = self.connect_errors.get(key, 0) + 1
                    progress.failed += 1
                    self.changed.set()
                    return
                self.subscribers.append(subscriber)

                # Hold the slot until the stream is live: connects in flight stay bounded.
                def live() -> bool:
                    return subscriber.ready or subscriber.ended

                await self._until(live, config.connect_timeout)

        opener = asyncio.gather(*(one(i) for i in range(config.subscribers)))
        total = config.subscribers
        await self._until(lambda: progress.ready + progress.failed >= total, config.connect_timeout)
        if not opener.done():
            opener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await opener

    async def drain(self, published: asyncio.Event) -> float:
        """Count until published and every subscriber is complete (or the deadlines); the time."""
        config = self.config
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(published.wait(), config.publish_timeout)
        progress = self.progress
        deadline = time.monotonic() + config.drain_timeout
        live = len(self.subscribers)
        progress.last_delivery = max(progress.last_delivery, time.time())
        while progress.complete < live and progress.ended < live:
            idle_left = progress.last_delivery + config.idle_timeout - time.time()
            left = min(deadline - time.monotonic(), idle_left)
            if left <= 0:
                break
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(left, 0.5))
        return time.time()

    def close(self) -> None:
        for subscriber in self.subscribers:
            subscriber.close()

    def opened(self) -> dict[str, object]:
        return {
            "phase": "opened",
            "opened": len(self.subscribers),
            "ready": self.progress.ready,
            "connect_errors": self.connect_errors,
        }

    def drained(self, at: float) -> dict[str, object]:
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
            "ready": self.progress.ready,
            "complete": len(complete),
            "all_complete_at": max(complete) if len(complete) == self.config.subscribers else None,
            "first_delivery_at": self.progress.first_delivery or None,
            "last_delivery_at": self.progress.last_delivery or None,
            "received": sum(s.counter.count for s in subs),
            "bytes": sum(s.bytes for s in subs),
            "stream_errors": errors,
        }

    def result(self) -> dict[str, object]:
        config = self.config
        subs = self.subscribers
        ids = [s.counter.ids() for s in subs]
        verdicts = [judge_ids(i, config.events) for i in ids]
        totals = _sum(verdicts)
        # Subscribers that never connected missed everything.
        totals["missing"] += config.events * (config.subscribers - len(subs))
        # Every stream of one topic must carry the same ids: compare each with subscriber 0's.
        differ = 0
        if subs:
            base = min((int(i[:, 0].min()) for i in ids if len(i)), default=0)
            reference = np.unique(id_keys(ids[0], base))
            differ = sum(
                1 for i in ids[1:] if not np.array_equal(np.unique(id_keys(i, base)), reference)
            )
        references = [
            judge_values(s.counter.values(), s.counter.count, config.events)
            for s in subs[: config.references]
        ]
        return {
            "phase": "result",
            "expected": config.events * config.subscribers,
            **totals,
            "id_sets_differ": differ,
            "reference": {"subscribers": len(references), **_sum(references)},
        }


def _sum(verdicts: list[Verdict]) -> dict[str, int]:
    keys = ("received", "distinct", "duplicates", "out_of_order", "missing", "unexpected")
    return {k: sum(getattr(v, k) for v in verdicts) for k in keys}


def _watch_stdin(loop: asyncio.AbstractEventLoop, published: asyncio.Event) -> None:
    """A daemon thread: the drain starts at `published` or EOF (a blocked readline must not
    keep the process alive, hence no executor)."""

    def read() -> None:
        for line in sys.stdin:
            if line.strip() == "published":
                break
        loop.call_soon_threadsafe(published.set)

    threading.Thread(target=read, daemon=True).start()


async def execute(config: Config, emit: Callable[[dict[str, object]], None]) -> None:
    run = Run(config)
    published = asyncio.Event()
    _watch_stdin(asyncio.get_running_loop(), published)
    try:
        await run.connect()
        emit(run.opened())
        at = await run.drain(published)
        emit(run.drained(at))
    finally:
        run.close()
    emit(run.result())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="loadgen.counting",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--stream",
        action="append",
        required=True,
        metavar="URL",
        help="SSE URL; repeat to spread subscribers round-robin over several",
    )
    parser.add_argument("--subscribers", "-n", type=int, required=True)
    parser.add_argument(
        "--events", "-m", type=int, required=True, help="updates every subscriber should receive"
    )
    parser.add_argument(
        "--reference",
        type=int,
        default=1,
        help="how many subscribers also check event values (default 1)",
    )
    parser.add_argument("--connect-timeout", type=float, default=30.0)
    parser.add_argument("--publish-timeout", type=float, default=300.0)
    parser.add_argument("--drain-timeout", type=float, default=60.0)
    parser.add_argument("--idle-timeout", type=float, default=5.0)
    parser.add_argument("--no-uvloop", action="store_true")
    return parser  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    config = Config(
        stream_urls=tuple(args.stream),
        subscribers=args.subscribers,
        events=args.events,
        references=min(args.reference, args.subscribers),
        connect_timeout=args.connect_timeout,
        publish_timeout=args.publish_timeout,
        drain_timeout=args.drain_timeout,
        idle_timeout=args.idle_timeout,
    )

    run(execute(config, emit), uvloop_allowed=not args.no_uvloop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
