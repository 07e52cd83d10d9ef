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

    python -m bench.scaleout --events 50000 --batch 500
"""

from __future__ import annotations

import sys
import threading

from harness.live import PushsvcProcess, SSEClient

from bench.common import CpuMeter, Report, metric, parser
from bench.posting import batches, publish
from bench.servers import PushsvcRedis


def received(web: PushsvcProcess) -> float | None:
    return metric(web.port, "pushsvc_updates_received_total")


class Stream(threading.Thread):
    """One SSE client that counts the `stats` events of its topic."""

    def __init__(self, web: PushsvcProcess, topic: str) -> None:
        super().__init__(daemon=True)
        self.client = SSEClient(web.port, f"/topics/{topic}/stream", timeout=60)
        if self.client.next().event != "snapshot":
            raise RuntimeError("a stream opened without its snapshot")
        self.count = 0
        self.changed = threading.Condition()

    def run(self) -> None:
        try:
            while True:
                if self.client.next().event == "stats":
                    with self.changed:
                        self.count += 1
                        self.changed.notify_all()
        except (EOFError, TimeoutError, OSError):
            return  # the deployment stopped

    def wait_for(self, count: int, timeout: float) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: self.count >= count, timeout)


def main() -> int:
    cli = parser(__doc__.split("\n\n")[0])
    cli.add_argument("--events", "-m", type=int, default=50_000)
    cli.add_argument("--batch", "-b", type=int, default=500)
    args = cli.parse_args()

    deployment = PushsvcRedis(3)
    deployment.start()
    try:
        ingest, busy, quiet = deployment.webs
        flood, calm = Stream(busy, "flood"), Stream(quiet, "calm")
        for stream in (flood, calm):
            stream.start()
        webs = {"ingest": ingest, "busy": busy, "quiet": quiet}
        meter = CpuMeter({name: web.pid for name, web in webs.items()}).start()
        received_before = {name: received(web) for name, web in webs.items()}
        bodies = batches(args.events, args.batch)
        published = publish([ingest.base], "/topics/flood/events", bodies, 1, 120)
        if published.errors:
            raise RuntimeError(f"POSTs failed: {published.errors}")
        if not flood.wait_for(args.events, 120):
            raise RuntimeError(f"the busy client got {flood.count} of {args.events} updates")
        cpu = meter.stop()
        report = Report(
            [("process", 8, "process"), ("CPU s", 7, "cpu_s"),
             ("CPU s / 10k updates", 20, "cpu_s_per_10k_updates"),
             ("received", 9, "updates_received")], json=args.json,
        )  # fmt: skip
        report.say(f"# {args.events} events in POSTs of {args.batch}, {cpu['wall_s']} s wall")
        report.header()
        for name, web in webs.items():
            spent = cpu["cpu_s"][name]
            got, had = received(web), received_before[name]
            report.row({
                "events": args.events, "batch": args.batch, "process": name,
                "cpu_s": spent, "cpu_s_per_10k_updates": round(spent / args.events * 10_000, 3),
                "updates_received": None if got is None or had is None else int(got - had),
            })  # fmt: skip
        return 0
    finally:
        deployment.stop()


if __name__ == "__main__":
    sys.exit(main())
