"""Bytes per delivery with and without `?delta=positional`, on the demo's topics (its rules,
examples/demo-rules.toml) and on the tour's default rule, each exact after reconstruction.

For each workload it starts `pushsvc serve` (embedded), opens four streams of every topic
(`/stream?topic=*`, plain and with `?delta=positional`, each uncompressed and gzip; with
`--windows`, that projection on all), runs `pushsvc demo` for `--events` events, and once
every stream has the last update, counts the bytes of each update message of the
uncompressed streams (its `id:`, `event:` and `data:` lines and the blank line: what a client
reads, before HTTP framing) and the compressed body bytes of the gzip streams (everything,
the head's too), per update. The delta streams are reconstructed with pushsvc's own client
code (`pushsvc.client.delta`) and all four must equal the plain stream message for message,
id for id, as JSON: a row says `exact`.

    python -m bench.delta_bytes                         # both workloads, 600 events each
    python -m bench.delta_bytes --events 2000 --windows 1m,5m --json

`--smoke` runs 60 events and exits 1 unless both rows are exact; it never judges sizes.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import uuid
import zlib
from pathlib import Path
from typing import Any

import httpx
import orjson
from harness.live import SRC, PushsvcProcess, post, request, wait_until

from bench.common import Report, machine, parser
from pushsvc.client.delta import DELTA_EVENT, Reconstruction

ROOT = Path(__file__).resolve().parent.parent
DEMO_RULES = ROOT / "examples" / "demo-rules.toml"
MARK = "bench.delta.mark"


class Recorder:
    """One stream's update messages (event, id, data) and their bytes, read in a thread; with
    `gzip`, the stream compressed (`Accept-Encoding: gzip`), its compressed bytes counted in
    `wire` (everything the body carried, the head's too)."""

    def __init__(self, url: str, *, gzip: bool = False) -> None:
        self.url = url
        self.gzip = gzip
        self.wire = 0
        self.messages: list[tuple[str, str, str, int]] = []
        self.ready = threading.Event()
        self.seen_mark = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._read, daemon=True)

    def start(self) -> Recorder:
        self._thread.start()
        if not self.ready.wait(20):
            raise RuntimeError(f"no snapshot from {self.url}")
        return self

    def _read(self) -> None:
        headers = {"Accept-Encoding": "gzip" if self.gzip else "identity"}
        with httpx.stream("GET", self.url, headers=headers, timeout=None) as response:
            if self.gzip and response.headers.get("content-encoding") != "gzip":
                raise RuntimeError("the server did not compress the stream")
            inflate = zlib.decompressobj(16 + 15) if self.gzip else None
            buffer = b""
            for chunk in response.iter_raw():
                self.wire += len(chunk)
                buffer += inflate.decompress(chunk) if inflate is not None else chunk
                while b"\n\n" in buffer:
                    block, buffer = buffer.split(b"\n\n", 1)
                    self._message(block)
                if self._stop:
                    return

    def _message(self, block: bytes) -> None:
        fields: dict[str, str] = {}
        for line in block.decode().split("\n"):
            name, _, value = line.partition(": ")
            fields[name] = value
        event = fields.get("event", "")
        if event == "snapshot":
            self.ready.set()
        if event in ("stats", DELTA_EVENT):
            self.messages.append((event, fields.get("id", ""), fields["data"], len(block) + 2))
            if MARK in fields["data"]:  # its first update: whole
                self.seen_mark.set()

    def stop(self) -> None:
        self._stop = True


def _reconstructed(messages: list[tuple[str, str, str, int]]) -> list[tuple[str, Any]]:
    client = Reconstruction()
    out = []
    for event, message_id, data, _ in messages:
        if event == DELTA_EVENT:
            data = client.patch(data)
        else:
            client.update(data)
        out.append((message_id, orjson.loads(data)))
    return out


def run(workload: str, events: int, rate: float, windows: str | None) -> dict[str, Any]:
    args = ["serve", "--tick", "1s", "--max-future", "3650d"]
    if workload == "demo":
        args += ["--rules", str(DEMO_RULES)]
    server = PushsvcProcess(*args).start()
    try:
        query = "&windows=" + windows if windows else ""
        plain = Recorder(f"{server.base}/stream?topic=*{query}").start()
        delta = Recorder(f"{server.base}/stream?topic=*{query}&delta=positional").start()
        plain_gz = Recorder(f"{server.base}/stream?topic=*{query}", gzip=True).start()
        delta_gz = Recorder(
            f"{server.base}/stream?topic=*{query}&delta=positional", gzip=True
        ).start()
        demo = subprocess.run(
            [sys.executable, "-m", "pushsvc", "demo", f"--url={server.base}", "--speed=60",
             "--start=11:45", f"--rate={rate}", f"--count={events}", "--seed=7"],
            env={"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin"},
            capture_output=True, text=True, timeout=events / rate * 4 + 60, check=False,
        )  # fmt: skip
        if demo.returncode != 0:
            return {"workload": workload, "status": "failed", "reason": demo.stderr[-400:]}
        # A last event on a topic of its own: both streams have everything once they have it.
        assert post(server.port, MARK, {"value": 1.0})[0] == 202
        for recorder in (plain, delta, plain_gz, delta_gz):
            wait_until(recorder.seen_mark.is_set, timeout=30, what="the last update")
            recorder.stop()
        got, expected = _reconstructed(delta.messages), _reconstructed(plain.messages)
        exact = got == expected == _reconstructed(delta_gz.messages)
        exact = exact and _reconstructed(plain_gz.messages) == expected
        count = len(plain.messages)
        plain_bytes = sum(m[3] for m in plain.messages)
        delta_bytes = sum(m[3] for m in delta.messages)
        patches = sum(1 for m in delta.messages if m[0] == DELTA_EVENT)
        _, _, body = request(server.port, "GET", "/topics")
        return {
            "workload": workload,
            "status": "ok",
            "windows": windows or "all",
            "topics": len(orjson.loads(body).get("topics", [])),
            "updates": count,
            "patched": patches,
            "full_bytes_per_delivery": plain_bytes / count,
            "delta_bytes_per_delivery": delta_bytes / count,
            "delta_over_full": round(delta_bytes / plain_bytes, 3),
            "gzip_full_bytes_per_delivery": plain_gz.wire / count,
            "gzip_delta_bytes_per_delivery": delta_gz.wire / count,
            "exact": exact,
        }
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    cli = parser(__doc__ or "", smoke="60 events per workload")
    cli.add_argument("--events", type=int, default=600)
    cli.add_argument("--rate", type=float, default=50.0, help="the demo's events/s")
    cli.add_argument("--windows", default=None, help="a projection on both streams, e.g. 1m")
    cli.add_argument("--workloads", default="demo,tour")
    args = cli.parse_args(argv)
    events = 60 if args.smoke else args.events
    report = Report(
        [
            ("workload", 8, "workload"),
            ("windows", 8, "windows"),
            ("updates", 8, "updates"),
            ("patched", 8, "patched"),
            ("full B", 8, "full_bytes_per_delivery"),
            ("delta B", 8, "delta_bytes_per_delivery"),
            ("ratio", 6, "delta_over_full"),
            ("gz full", 8, "gzip_full_bytes_per_delivery"),
            ("gz delta", 8, "gzip_delta_bytes_per_delivery"),
            ("exact", 6, "exact"),
        ],
        json=args.json,
    )
    report.say(f"# {machine('httpx')} run {uuid.uuid4().hex[:6]}")
    report.header()
    exact = True
    for workload in args.workloads.split(","):
        row = run(workload, events, args.rate, args.windows)
        report.row(row)
        exact = exact and row.get("exact", False) is True
    return 0 if exact or not (args.smoke or args.check) else 1


if __name__ == "__main__":
    sys.exit(main())
