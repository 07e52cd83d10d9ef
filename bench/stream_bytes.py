"""Bytes on the wire per delivery, by client: what each kind of subscriber receives for the same
updates, plain and gzipped (negotiated by `Accept-Encoding`).

It starts `pushsvc serve` (embedded) and `pushsvc demo` posting to it (`--rules
examples/demo-rules.toml`: the demo's topics, grouped kitchen and reviews included), and, each
through a counting TCP proxy of its own (the bytes the server sent it, HTTP framing and all),
these subscribers of the same streams:

* `plain` — a raw HTTP/1.1 reader that offers no encoding (curl, an old proxy);
* `gzip` — a raw reader offering `gzip, deflate, br` as a browser does, decoding as it reads;
* `Client` — pushsvc's Python `Client` (httpx offers gzip, and decodes);
* `EventSource` — Chromium's bare `EventSource` (headless, through Playwright), when
  Chromium is installed.

The streams (`--streams`): `dashboard`, every demo topic on one multi-topic stream (what the
dashboard opens); `kitchen`, the grouped `restaurant.kitchen`; `grill`, one station's latencies.
Each row: deliveries (updates decoded by that client while the demo posts), the bytes the
server sent it meanwhile (after its head and snapshot), bytes per delivery, and its ratio to
`plain`'s.

    python -m bench.stream_bytes --seconds 20 [--streams dashboard,kitchen] [--candidates] [--json]

`--candidates` also compresses each plain stream's updates, as captured, with other settings
(zlib's level, window, memLevel, updates between reset points; one context each): what the
defaults of `pushsvc.deliver.shared_deflate` were chosen from.

`--smoke` runs a few seconds and exits 1 unless every client decoded at least one update of
every stream and the gzip clients got the plain one's count within one run's slack.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.live import PushsvcProcess, run_tool
from harness.sse_parser import EventStreamParser

from bench.common import Report
from bench.common import parser as common_parser
from pushsvc.client import Client, StreamUpdate
from pushsvc.core.lists import comma_list

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "examples" / "demo-rules.toml"
STREAMS = {
    "dashboard": "/stream?topic=restaurant.*&topic=shop.*",
    "kitchen": "/topics/restaurant.kitchen/stream",
    "grill": "/topics/restaurant.latency.grill/stream",
}
CHROMIUM = shutil.which("chromium-headless-shell") or shutil.which("chromium")


class CountingProxy:
    """A TCP proxy to `port` that counts the bytes the server sends back (all connections)."""

    def __init__(self, port: int) -> None:
        self.upstream = port
        self.down = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.upstream))
            except OSError:  # the server is gone: the client's reconnect is refused
                client.close()
                continue
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, count: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if count:
                    with self._lock:
                        self.down += len(data)
                sink.sendall(data)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._listener.close()


@dataclass
class Reader:
    """One subscriber and what it decoded."""

    name: str
    proxy: CountingProxy
    deliveries: int = 0
    stop: threading.Event = field(default_factory=threading.Event)
    body: bytearray = field(default_factory=bytearray)
    """What it decoded (kept for `--candidates`)."""


def _raw_reader(reader: Reader, path: str, offer: str | None) -> None:
    """A raw HTTP/1.1 stream: head, then chunks decoded (and gunzipped when it came so)."""
    sock = socket.create_connection(("127.0.0.1", reader.proxy.port))
    extra = f"Accept-Encoding: {offer}\r\n" if offer else ""
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n{extra}\r\n".encode()
    )
    sock.settimeout(1.0)
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        buffer += sock.recv(65536)
    head, _, body = buffer.partition(b"\r\n\r\n")
    gzipped = b"content-encoding: gzip" in head.lower()
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS) if gzipped else None
    parser = EventStreamParser()
    pending = body
    while not reader.stop.is_set():
        # Chunked framing: size line, data, CRLF.
        while True:
            line_end = pending.find(b"\r\n")
            if line_end < 0:
                break
            size = int(pending[:line_end], 16)
            if len(pending) < line_end + 2 + size + 2:
                break
            data = pending[line_end + 2 : line_end + 2 + size]
            pending = pending[line_end + 2 + size + 2 :]
            if inflate is not None:
                data = inflate.decompress(data)
            reader.body += data
            reader.deliveries += sum(1 for m in parser.feed(data) if m.event == "stats")
        try:
            more = sock.recv(65536)
        except TimeoutError:
            continue
        if not more:
            break
        pending += more
    sock.close()


def _client_reader(reader: Reader, topics: list[str]) -> None:
    with Client(f"http://127.0.0.1:{reader.proxy.port}") as client:
        for message in client.subscribe(topics):
            if isinstance(message, StreamUpdate):
                reader.deliveries += 1
            if reader.stop.is_set():
                return


def _topics(path: str) -> list[str]:
    if path.startswith("/stream?"):
        return [part[len("topic=") :] for part in path[len("/stream?") :].split("&")]
    return [path.split("/")[2]]


@contextlib.contextmanager
def _browser() -> Iterator[Any]:
    if CHROMIUM is None:
        yield None
        return
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            yield browser
        finally:
            browser.close()


_EVENT_SOURCE = """(path) => {
  window.deliveries = 0;
  window.source = new EventSource(path);
  window.source.addEventListener("stats", () => { window.deliveries += 1; });
}"""


CANDIDATES = [  # (zlib level, window bits, memLevel, updates between reset points)
    (6, 15, 8, 8), (6, 15, 8, 32), (6, 15, 8, 128), (6, 15, 8, 0),
    (1, 15, 8, 32), (3, 15, 8, 32), (9, 15, 9, 32), (6, 13, 6, 32), (6, 12, 5, 32),
]  # fmt: skip


def candidates(stream: str, body: bytes) -> list[dict[str, Any]]:
    """The plain stream's updates compressed by one context per candidate (K = 0: never
    reset), each sync-flushed: bytes and CPU per update, as the shared context would spend."""
    messages = [m + b"\n\n" for m in body.split(b"\n\n") if b"event: stats" in m]
    rows = []
    for level, wbits, mem, every in CANDIDATES:
        compressor = zlib.compressobj(level, zlib.DEFLATED, -wbits, mem)
        size = 0
        started = time.process_time()
        for n, message in enumerate(messages):
            if every and n and n % every == 0:
                size += len(compressor.flush(zlib.Z_FULL_FLUSH))
            size += len(compressor.compress(message)) + len(compressor.flush(zlib.Z_SYNC_FLUSH))
        spent = time.process_time() - started
        per = max(len(messages), 1)
        rows.append({
            "status": "ok", "stream": stream, "level": level, "wbits": wbits, "mem": mem,
            "reset_every": every or None, "updates": len(messages),
            "plain_per_update": round(sum(map(len, messages)) / per, 1),
            "bytes_per_update": round(size / per, 1),
            "cpu_us_per_update": round(spent / per * 1e6, 2),
        })  # fmt: skip
    return rows


def measure(stream: str, seconds: float, browser: Any) -> list[dict[str, Any]]:
    path = STREAMS[stream]
    server = PushsvcProcess(
        "serve", "--rules", str(RULES), "--max-future", "3650d", "--tick", "0"
    ).start()
    readers: list[Reader] = []
    threads: list[threading.Thread] = []
    page = None
    try:

        def start(name: str, target: Callable[..., None], *args: Any) -> Reader:
            reader = Reader(name, CountingProxy(server.port))
            readers.append(reader)
            thread = threading.Thread(target=target, args=(reader, *args), daemon=True)
            thread.start()
            threads.append(thread)
            return reader

        start("plain", _raw_reader, path, None)
        start("gzip", _raw_reader, path, "gzip, deflate, br")
        start("Client", _client_reader, _topics(path))
        browser_reader = None
        if browser is not None:
            browser_reader = Reader("EventSource", CountingProxy(server.port))
            readers.append(browser_reader)
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{browser_reader.proxy.port}/healthz")
            page.evaluate(_EVENT_SOURCE, path)
        time.sleep(1.0)  # every reader connected and through its snapshot
        start_bytes = {r.name: r.proxy.down for r in readers}
        start_deliveries = {r.name: r.deliveries for r in readers}
        if page is not None:
            start_deliveries["EventSource"] = page.evaluate("window.deliveries")
        run_tool(
            "demo", "--url", server.base, "--speed", "60", "--rate", "200", "--start", "11:30",
            "--duration", f"{seconds}s", "--seed", "1", timeout=seconds + 60,
        )  # fmt: skip
        time.sleep(1.0)  # the last updates reach every reader
        rows = []
        if page is not None and browser_reader is not None:
            browser_reader.deliveries = page.evaluate("window.deliveries")
        for reader in readers:
            delivered = reader.deliveries - start_deliveries[reader.name]
            wire = reader.proxy.down - start_bytes[reader.name]
            rows.append({
                "status": "ok", "stream": stream, "client": reader.name, "deliveries": delivered,
                "wire_bytes": wire,
                "bytes_per_delivery": round(wire / delivered, 1) if delivered else None,
            })  # fmt: skip
        rows[0]["body"] = bytes(readers[0].body)
        plain = rows[0]["bytes_per_delivery"]
        for row in rows:
            per = row["bytes_per_delivery"]
            row["of_plain"] = round(per / plain, 3) if per and plain else None
        return rows
    finally:
        for reader in readers:
            reader.stop.set()
        if page is not None:
            page.close()
        server.stop()
        for reader in readers:
            reader.proxy.close()


COLUMNS = (
    ("stream", 10, "stream"), ("client", 12, "client"), ("deliveries", 11, "deliveries"),
    ("wire B", 10, "wire_bytes"), ("B/dlv", 8, "bytes_per_delivery"), ("÷ plain", 8, "of_plain"),
)  # fmt: skip


CANDIDATE_COLUMNS = (
    ("stream", 10, "stream"), ("level", 6, "level"), ("wbits", 6, "wbits"), ("mem", 4, "mem"),
    ("K", 5, "reset_every"), ("updates", 8, "updates"), ("plain B", 8, "plain_per_update"),
    ("B/upd", 7, "bytes_per_update"), ("µs/upd", 7, "cpu_us_per_update"),
)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    cli = common_parser(__doc__, smoke="3 s of the demo, the dashboard's stream")
    cli.add_argument("--seconds", type=float, default=20.0, help="how long the demo posts")
    cli.add_argument("--streams", type=comma_list, default=None, help=",".join(STREAMS))
    cli.add_argument(
        "--candidates", action="store_true",
        help="also compress each plain stream's updates with other settings (zlib level, window, "
        "memLevel, updates between reset points), one context each: bytes and CPU per update",
    )  # fmt: skip
    args = cli.parse_args(argv)
    streams = args.streams or (["dashboard"] if args.smoke else list(STREAMS))
    seconds = 3.0 if args.smoke else args.seconds
    for stream in streams:
        if stream not in STREAMS:
            raise SystemExit(f"bad stream {stream!r}: {', '.join(STREAMS)}")
    report = Report(COLUMNS, json=args.json, ident=2)
    report.header()
    failed = False
    tried: list[dict[str, Any]] = []
    with _browser() as browser:
        for stream in streams:
            rows = measure(stream, seconds, browser)
            body = rows[0].pop("body")
            if args.candidates:
                tried += candidates(stream, body)
            for row in rows:
                report.row(row)
            counts = [row["deliveries"] for row in rows]
            if (args.smoke or args.check) and (min(counts) < 1 or max(counts) != min(counts)):
                failed = True
    if tried:
        table = Report(CANDIDATE_COLUMNS, json=args.json, ident=2)
        table.header()
        for row in tried:
            table.row(row)
    if failed:
        print(json.dumps({"failed": "a client decoded fewer updates"}), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
