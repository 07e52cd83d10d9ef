"""The Python work of one delivery, counted: attribute accesses (`LOAD_ATTR`, `LOAD_METHOD`,
`STORE_ATTR`, `DELETE_ATTR`) that pushsvc's own code executes per delivery, through the real
hub and the real stream generator (`pushsvc.deliver.stream_response.events`), in one process.

N streams on socket pairs subscribe to one topic of a memory broker; M updates are published
one by one, each handed to the hub and written before the next. Per write mode:

* `direct` — streams handed their connection, as on plain TCP under `pushsvc serve`, idle:
  the hub writes them (chunked);
* `projected` — the same with `?stats=mean&precision=4`;
* `queued` — streams whose socket cannot be had (gunicorn, TLS): queue, wake, yield;
* `paced` — `?max_hz=1000`: queued, through the pacer;
* `gzip` — `direct`, the client offering gzip: every stream takes the shared deflate
  context's bytes (`pushsvc.deliver.compression`; trees that have it).

Counts are exact for a given tree, so two trees compare on a busy machine where CPU time does
not; only frames of files under `pushsvc/` are counted (`all_per_delivery` counts every Python
frame). `--cpu` runs without tracing and reports CPU time instead; under callgrind it gives
instructions per delivery, as the difference of two runs with different M (`--drain-at-end`
reads the sockets once, so that reading costs the same whatever M):

    python -m bench.delivery_ops --modes direct,projected,queued,paced -n 500 -m 10
    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        python -m bench.delivery_ops --modes direct -n 200 -m 60 --cpu --drain-at-end

Run another tree's pushsvc with PYTHONPATH=OTHER/src (this module uses only what both sides of
a comparison have: the memory broker, the hub, the stream generator and its request; trees
before `pushsvc.deliver.stream_response` had them in `pushsvc.deliver.stream_loop`, and
before that in `pushsvc.http.api.streams`).
"""

from __future__ import annotations

import argparse
import dis
import importlib
import inspect
import json
import socket
import sys
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from types import FrameType
from typing import Any

import gevent
import gevent.socket
from harness.fenced_publish import covering_ticks

from pushsvc.broker.memory import MemoryBroker
from pushsvc.core.topics import TopicMatcher
from pushsvc.core.updates import draft
from pushsvc.deliver.hub import Hub
from pushsvc.deliver.projection import Projection
from pushsvc.gevent_private import ENVIRON_KEY, os_socket

# Where the stream generator lives, newest tree first: `stream_response` (one live stream for
# every way a stream is written), `stream_loop` (the stream loop), the view's module before.
for _module in ("pushsvc.deliver.stream_response", "pushsvc.deliver.stream_loop"):
    try:
        streams = importlib.import_module(_module)
        _events = streams.events
        break
    except ImportError:
        continue
else:
    streams = importlib.import_module("pushsvc.http.api.streams")
    _events = streams._events

MODES = ("direct", "projected", "queued", "paced", "gzip")
_ATTRIBUTE_OPS = frozenset(
    dis.opmap[name]
    for name in ("LOAD_ATTR", "LOAD_METHOD", "STORE_ATTR", "DELETE_ATTR")
    if name in dis.opmap
)
# Turns of the event loop after a publish: the hub's writer yields every 64 streams.
_TURNS = 20


class _Counter:
    """A trace function counting attribute opcodes while `on`."""

    def __init__(self) -> None:
        self.on = False
        self.pushsvc = 0
        self.all = 0

    def trace(self, frame: FrameType, event: str, arg: object) -> Callable[..., Any]:
        frame.f_trace_opcodes = True
        frame.f_trace_lines = False
        return self._opcode

    def _opcode(self, frame: FrameType, event: str, arg: object) -> Callable[..., Any]:
        if event == "opcode" and self.on:
            code = frame.f_code
            if code.co_code[frame.f_lasti] in _ATTRIBUTE_OPS:
                self.all += 1
                if "/pushsvc/" in code.co_filename:
                    self.pushsvc += 1
        return self._opcode


class _Handler:
    """What `pushsvc.server.StreamingHandler` lends a stream: its socket, head sent, and the
    connection handed over once the head is out (as under `pushsvc serve` on plain TCP)."""

    headers_sent = True
    response_use_chunked = True

    def __init__(self, sock: Any) -> None:
        self.socket = sock

    def hand_over(self) -> tuple[socket.socket, bool, Callable[[], None]]:
        raw = socket.socket(fileno=self.socket.detach())
        raw.setblocking(False)
        self.socket = None
        return raw, True, lambda: None


def _take_on_close() -> tuple[Callable[[], None], ...]:
    """The body's `take_on_close` argument, where the tree's stream generator takes one."""
    if "take_on_close" not in inspect.signature(_events).parameters:
        return ()
    return (lambda: None,)


class _GzipBody:
    """A stream's bytes, gzip-decoded: its head as `_write_all` wrote it, then the hub's
    chunks, their framing taken off."""

    def __init__(self) -> None:
        self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._pending = b""
        self._head = True

    def feed(self, data: bytes) -> bytes:
        out = []
        pending = self._pending + data
        if self._head:
            # The first read (before any update is published) is the head: the pieces
            # `_write_all` sent, unframed. Every later read is the hub's HTTP/1.1 chunks.
            self._head = False
            return self._inflate.decompress(pending)
        while True:
            end = pending.find(b"\r\n")
            if end < 0:
                break
            size = int(pending[:end], 16)
            if len(pending) < end + 2 + size + 2:
                break
            out.append(self._inflate.decompress(pending[end + 2 : end + 2 + size]))
            pending = pending[end + 2 + size + 2 :]
        self._pending = pending
        return b"".join(out)


def _write_all(blocks: Iterator[bytes], raw: socket.socket) -> None:
    """What the WSGI server does with a stream's blocks, at C speed: not pushsvc's work."""
    for block in blocks:
        raw.sendall(block)


def measure(
    mode: str, streams_n: int, events: int, *, cpu: bool, drain_at_end: bool
) -> dict[str, Any]:
    counter = _Counter()
    broker = MemoryBroker.serving()
    hub = Hub(queue_size=100, slow_timeout_us=60_000_000)
    feed = broker.consume_updates(hub.dispatch)
    # Published as an aggregator does, under the topic's lease, each update covering a log
    # entry: the entries are logged here, before anything is counted.
    shard = (broker.partition_of("t"), broker.partitions)
    lease: Any = broker.lease(shard, ttl_us=3_600_000_000)
    assert lease.renew()
    covering = covering_ticks(broker, shard, lease.token, events)
    given: dict[str, Any] = {
        "matcher": TopicMatcher(["t"]),
        "last_event_id": None,
        "projection": Projection(None, ("mean",), 4) if mode == "projected" else None,
        "min_interval_s": 0.001 if mode == "paced" else 0.0,
        "heartbeat_s": 600.0,
        "retry_ms": 1000,
        "expires_at": None,
    }
    # Named StreamOptions in trees before the rename.
    request_type = getattr(streams, "StreamRequest", None) or streams.StreamOptions
    if "grouping" in request_type.__dataclass_fields__:  # trees with group by
        given["grouping"] = lambda topic: False
    if mode == "gzip":
        from pushsvc.deliver.shared_deflate import SharedDeflates

        given["encoding"] = "gzip"
        given["shared_deflates"] = SharedDeflates(idle_reset_us=300_000_000)
    options = request_type(**given)
    previous_trace = sys.gettrace()
    if not cpu:
        sys.settrace(counter.trace)  # before the streams start, so that their frames count
    peers: list[gevent.socket.socket] = []
    sockets: list[gevent.socket.socket] = []
    greenlets: list[gevent.Greenlet[..., None]] = []
    for _ in range(streams_n):
        ours, peer = gevent.socket.socketpair()
        peers.append(peer)
        sockets.extend((ours, peer))
        environ: Mapping[str, object] = (
            {ENVIRON_KEY: _Handler(ours)} if mode in ("direct", "projected", "gzip") else {}
        )
        # A stream that can be handed over is (`take_on_close`: trees that hand over).
        blocks = _events(broker, hub, feed, options, environ, *_take_on_close())
        greenlets.append(gevent.spawn(_write_all, blocks, os_socket(ours)))
    for _ in range(5):
        gevent.sleep(0)
    for peer in peers:
        peer.setblocking(False)

    # gzip: each peer's stream decoded as it comes (after its response head, in plain text).
    inflaters = [_GzipBody() if mode == "gzip" else None for _ in peers]

    def drain() -> int:
        received = 0
        for peer, inflater in zip(peers, inflaters, strict=True):
            while True:
                try:
                    data = os_socket(peer).recv(1 << 20)
                except BlockingIOError:
                    break
                if inflater is not None:
                    data = inflater.feed(data)
                received += data.count(b"event: stats")
        return received

    drain()  # the snapshots
    delivered = 0
    cpu_s = 0.0
    windows = {"1m": {"count": 1, "mean": 1.23456789}}
    for n in range(events):
        update = draft("t", n, "event", {"value": n}, windows)
        if mode == "paced":
            gevent.sleep(2 * options.min_interval_s)  # each update due as it comes: no holding
        counter.on = True
        started = time.process_time()
        broker.publish_updates([update], applied=covering[n], fence=lease.token)
        for _ in range(_TURNS):
            gevent.sleep(0)
        cpu_s += time.process_time() - started
        counter.on = False
        if not drain_at_end:
            delivered += drain()
    delivered += drain()
    sys.settrace(previous_trace)
    gevent.killall(greenlets)
    for sock in sockets:
        sock.close()
    per = max(delivered, 1)
    row: dict[str, Any] = {"mode": mode, "streams": streams_n, "events": events}
    row["deliveries"] = delivered
    if cpu:
        row["cpu_us_per_delivery"] = round(cpu_s / per * 1e6, 3)
    else:
        row["attribute_ops_per_delivery"] = round(counter.pushsvc / per, 2)
        row["all_per_delivery"] = round(counter.all / per, 2)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", default=",".join(MODES), help=f"of {', '.join(MODES)}")
    parser.add_argument("--streams", "-n", type=int, default=500)
    parser.add_argument("--events", "-m", type=int, default=10)
    parser.add_argument("--cpu", action="store_true", help="no tracing: CPU time per delivery")
    parser.add_argument("--drain-at-end", action="store_true", help="read the sockets once")
    args = parser.parse_args(argv)
    modes = args.modes.split(",")
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        parser.error(f"unknown modes: {', '.join(unknown)}")
    exact = True
    for mode in modes:
        row = measure(mode, args.streams, args.events, cpu=args.cpu, drain_at_end=args.drain_at_end)
        exact &= row["deliveries"] == args.streams * args.events
        print(json.dumps(row), flush=True)
    return 0 if exact else 1


if __name__ == "__main__":
    sys.exit(main())
