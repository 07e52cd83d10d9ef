"""Scale-out: what a web process pays for updates of topics its clients do not watch.

A Redis deployment of one aggregator and three web processes: `ingest` takes the POSTs and
serves no stream, `busy` has one client on the flooded topic, `quiet` one client on another
topic. M events go to the flooded topic in POSTs of B; the benchmark waits until `busy`'s client
has every update, and reports each web process's CPU time (/proc/<pid>/stat) per 10,000 updates
of the flood, and how many updates each received from Redis (`pushsvc_updates_received_total`
where the server has it).

With node subscriptions `quiet` should spend ≈0: it is not subscribed to the flooded topic.
Run from an older checkout (copy this file there) to compare with a build whose every web
process subscribes to every update.

    python bench/scaleout.py --events 50000 --batch 500
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pushsvc.sse_parser import EventStreamParser
from servers import PushsvcProcess, PushsvcRedis

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def received(web: PushsvcProcess) -> float | None:
    conn = http.client.HTTPConnection("127.0.0.1", web.port, timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    for line in text.splitlines():
        if line.startswith("pushsvc_updates_received_total"):
            return float(line.split()[-1])
    return None


class Stream(threading.Thread):
    """One SSE client that counts the `stats` events of its topic."""

    def __init__(self, web: PushsvcProcess, topic: str) -> None:
        super().__init__(daemon=True)
        self.web, self.topic = web, topic
        self.count = 0
        self.ready = threading.Event()
        self.changed = threading.Condition()

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.web.port, timeout=60)
        conn.request("GET", f"/topics/{self.topic}/stream")
        response = conn.getresponse()
        parser = EventStreamParser()
        while chunk := response.read1(1 << 16):
            for message in parser.feed(chunk):
                if message.event == "snapshot":
                    self.ready.set()
                elif message.event == "stats":
                    with self.changed:
                        self.count += 1
                        self.changed.notify_all()

    def wait_for(self, count: int, timeout: float) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: self.count >= count, timeout)


def post(web: PushsvcProcess, topic: str, events: list[dict[str, float]]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", web.port, timeout=30)
    body = json.dumps(events)
    conn.request("POST", f"/topics/{topic}/events", body, {"Content-Type": "application/json"})
    response = conn.getresponse()
    response.read()
    conn.close()
    if response.status != 202:
        raise RuntimeError(f"POST answered {response.status}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", "-m", type=int, default=50_000)
    parser.add_argument("--batch", "-b", type=int, default=500)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    deployment = PushsvcRedis(3)
    deployment.start()
    try:
        ingest, busy, quiet = deployment.webs
        flood = Stream(busy, "flood")
        calm = Stream(quiet, "calm")
        for stream in (flood, calm):
            stream.start()
            if not stream.ready.wait(10):
                raise RuntimeError("a stream got no snapshot")
        webs = {"ingest": ingest, "busy": busy, "quiet": quiet}
        cpu_before = {name: cpu_s(web.pid) for name, web in webs.items()}
        received_before = {name: received(web) for name, web in webs.items()}
        started = time.perf_counter()
        for start in range(0, args.events, args.batch):
            post(ingest, "flood", [{"value": float(v)} for v in range(start, start + args.batch)])
        if not flood.wait_for(args.events, 120):
            raise RuntimeError(f"the busy client got {flood.count} of {args.events} updates")
        wall_s = time.perf_counter() - started
        rows = []
        for name, web in webs.items():
            spent = cpu_s(web.pid) - cpu_before[name]
            got, had = received(web), received_before[name]
            rows.append(
                {
                    "process": name,
                    "cpu_s": round(spent, 2),
                    "cpu_s_per_10k_updates": round(spent / args.events * 10_000, 3),
                    "updates_received": None if got is None or had is None else int(got - had),
                }
            )
        if args.json:
            for row in rows:
                print(json.dumps({"events": args.events, "batch": args.batch, **row}))
        else:
            print(f"# {args.events} events in POSTs of {args.batch}, {wall_s:.1f} s wall")
            print(f"{'process':>8} {'CPU s':>7} {'CPU s / 10k updates':>20} {'received':>9}")
            for row in rows:
                got = "n/a" if row["updates_received"] is None else row["updates_received"]
                print(
                    f"{row['process']:>8} {row['cpu_s']:>7} "
                    f"{row['cpu_s_per_10k_updates']:>20} {got:>9}"
                )
        return 0
    finally:
        deployment.stop()


if __name__ == "__main__":
    sys.exit(main())
