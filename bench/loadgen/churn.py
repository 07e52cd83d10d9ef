"""Stream churn (bench/soak.py): short-lived SSE streams opened at a steady rate and closed.

Stream i (i = 0, 1, 2, ...) takes its way from a fixed cycle, so every way gets the same share
and the number of streams open at once stays steady (a soak judges that number's trend):

* how long it stays: `immediate` closes right after writing its request (no response read);
  `snapshot` reads the response head and the opening snapshot, then closes; `linger` also
  stays `LINGER_S` reading live updates;
* how it closes: cleanly (FIN), or by a reset (SO_LINGER on with a 0 timeout, then close:
  the kernel sends RST and drops the connection at once).

Streams that cannot be opened, or that the server answers with anything but a stream or ends
before the client does, are counted by reason in `errors`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.loadgen.modes import UpdateIds
from bench.loadgen.subscriber import Progress, Subscriber, stream_request

WAYS = tuple((stay, reset) for stay in ("immediate", "snapshot", "linger") for reset in (0, 1))
LINGER_S = 1.0
STEP_TIMEOUT_S = 10.0
"""For a connect and for a snapshot to arrive: past it the stream counts as an error."""
_RESET = struct.pack("ii", 1, 0)


@dataclass
class ChurnCounts:
    started: int = 0
    snapshots: int = 0
    """Streams that read their opening snapshot."""
    clean: int = 0
    resets: int = 0
    skipped: int = 0
    """Not started: `max_open` streams were already under way (the load stays bounded)."""
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, reason: str) -> None:
        self.errors[reason] = self.errors.get(reason, 0) + 1


class Churn:
    """Streams to `host:port` at `rate` per second, stream i on `path(i)`."""

    def __init__(
        self, host: str, port: int, path: Callable[[int], str], rate: float, max_open: int
    ) -> None:
        self._host, self._port, self._path = host, port, path
        self._rate, self._max_open = rate, max_open
        self._progress = Progress(expected=0)
        self.counts = ChurnCounts()
        self.open = 0
        """Streams connected and not yet closed by us."""
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self, seconds: float) -> None:
        """Open streams at the rate for `seconds`, then wait for the last ones to close."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        i = 0
        while (now := loop.time()) < start + seconds:
            for _ in range(int((now - start) * self._rate) - i):
                if len(self._tasks) >= self._max_open:
                    self.counts.skipped += 1
                else:
                    task = asyncio.create_task(self._one(i))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                i += 1
            await asyncio.sleep(min(0.01, 1 / self._rate))
        if self._tasks:
            await asyncio.gather(*self._tasks)

    async def _one(self, i: int) -> None:
        stay, reset = WAYS[i % len(WAYS)]
        counts = self.counts
        counts.started += 1
        reader = UpdateIds(0, values=False)  # ready at the snapshot; counts what follows
        request = stream_request(self._host, self._port, self._path(i), http10=False)
        subscriber = Subscriber(request, reader, self._progress)
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(
                loop.create_connection(lambda: subscriber, self._host, self._port),
                STEP_TIMEOUT_S,
            )
        except (OSError, TimeoutError) as exc:
            counts.error(f"connect: {type(exc).__name__}")
            return
        self.open += 1
        try:
            if stay != "immediate":
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(subscriber.live.wait(), STEP_TIMEOUT_S)
                counts.snapshots += reader.ready
                if not reader.ready and subscriber.error is None:
                    counts.error("no snapshot in time")
                if stay == "linger" and not subscriber.ended:
                    await asyncio.sleep(LINGER_S)
            if subscriber.error is not None:
                counts.error(subscriber.error.split(" (")[0][:80])
        finally:
            self.open -= 1
            self._close(subscriber, reset=bool(reset))

    def _close(self, subscriber: Subscriber, *, reset: bool) -> None:
        transport = subscriber.transport
        if reset and transport is not None and not subscriber.ended:
            sock = transport.get_extra_info("socket")
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
            self.counts.resets += 1
        else:
            self.counts.clean += 1
        subscriber.close()
