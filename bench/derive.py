"""Derived metrics: what `[[derive]]` rules cost per source event (nothing, by design: the
deriver reads closed series buckets once per `every`, never per event).

    python -m bench.derive                    # 5 alternating rounds, 200,000 events each
    python -m bench.derive --rounds 7
    python -m bench.derive --smoke            # CI: small, one round; exit 1 unless counts hold

Two `pushsvc serve --tick 0` processes take turns, round by round, one started with a rules
file of one `[[rule]]` (4 source topics, `10s` and `1m` windows, series `1s:15m,1m:24h`) and
one with the same rule and three `[[derive]]` tables over those sources (`every = "1s"`: the
finest tier, the busiest a deriver gets). Each posts the same events in batches of 100, the
4 topics in turn, timestamps 1 ms apart per topic (4,000 source events per second of event
time, so 3 derived events per 4,000 source events), and reports the server's CPU (user +
system, /proc) per source event while posting, which includes the deriver's rounds (every
0.2 s) and its appends. Then, with derives, it waits until every boundary is derived and
checks the counts: each source event answered 202, each derived topic holding one event per
boundary.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness.live import PushsvcProcess, request

from bench.common import CpuMeter, parser, with_against_without

S = 1_000_000
T0 = 1_763_700_000 * S
TOPICS = ("bench.src0", "bench.src1", "bench.src2", "bench.src3")
BATCH = 100
STEP_US = 1_000
"""Event time between two events of a topic (`--step-us`)."""
LATENESS_US = 5 * S
RULE = """
[[rule]]
topics = ["bench.*"]
windows = ["10s", "1m"]
stats = ["count", "mean", "max"]
series = ["1s:15m", "1m:24h"]
"""
DERIVES = """
[[derive]]
topic = "bench.ratio"
every = "1s"
value = "count[5s](bench.src0) / count[5s](bench.src1)"

[[derive]]
topic = "bench.mix"
every = "1s"
value = "(sum[10s](bench.src2) - mean[10s](bench.src3)) * 2 + max[1s](bench.src0)"

[[derive]]
topic = "bench.rate"
every = "1s"
value = "rate[1m](bench.src0) + rate[1m](bench.src1) + rate[1m](bench.src2)"
"""
DERIVED = ("bench.ratio", "bench.mix", "bench.rate")


def _batches(events: int, step_us: int) -> list[tuple[str, bytes]]:
    """(topic, NDJSON body) of every POST, in order: the same for both servers."""
    per_topic = events // len(TOPICS)
    out = []
    for start in range(0, per_topic, BATCH):
        for index, topic in enumerate(TOPICS):
            lines = [
                json.dumps({"value": float((n * 7 + index) % 101), "ts": (T0 + n * step_us) / S})
                for n in range(start, min(start + BATCH, per_topic))
            ]
            out.append((topic, "\n".join(lines).encode()))
    return out


def _run(
    rules: Path, batches: list[tuple[str, bytes]], step_us: int, derive: bool
) -> dict[str, Any]:
    server = PushsvcProcess("serve", "--tick", "0", "--rules", str(rules)).start()
    try:
        meter = CpuMeter({"server": server.pid}).start()
        statuses: dict[int, int] = {}
        for topic, body in batches:
            status, _, _ = request(
                server.port,
                "POST",
                f"/topics/{topic}/events",
                body,
                content_type="application/x-ndjson",
            )
            statuses[status] = statuses.get(status, 0) + 1
        used = meter.stop()
        events = sum(body.count(b"\n") + 1 for _, body in batches)
        cpu = used["cpu_s"]["server"]
        row: dict[str, Any] = {
            "derive": derive,
            "events": events,
            "statuses": statuses,
            "cpu_us_per_event": round(cpu / events * S, 2),
            "events_per_wall_s": round(events / used["wall_s"]),
        }
        if derive:
            per_topic = events // len(TOPICS)
            clock = T0 + (per_topic - 1) * step_us
            # Boundaries from the end of the first 1 s bucket to the newest the clocks passed.
            want = (clock - LATENESS_US) // S - T0 // S
            row["derived_expected"] = want
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                got = [_derived(server.port, t) for t in DERIVED]
                if min(got) >= want:
                    break
                time.sleep(0.2)
            row["derived"] = got
        return row
    finally:
        server.stop()


def _derived(port: int, topic: str) -> int:
    """Boundaries derived, each once, or -1 when one was derived twice: the history is too
    short to hold them beside 200,000 source updates, so the derived topic's 1 s series
    counts them (one point of count 1 per boundary, up to the bucket its clock closed last)
    and its latest update names the newest."""
    status, _, body = request(port, "GET", f"/topics/{topic}/stats")
    if status != 200:
        return 0
    newest = round(json.loads(body)["event"]["ts"] * S)
    status, _, body = request(port, "GET", f"/topics/{topic}/series?resolution=1s&limit=10000")
    points = json.loads(body)["points"]
    starts = [round(p["t"] * S) for p in points]
    consecutive = not starts or starts == list(range(starts[0], starts[0] + len(starts) * S, S))
    if any(p["count"] != 1 for p in points) or not consecutive:
        return -1  # a boundary twice, or one missing
    first = round(points[0]["t"] * S) if points else newest
    return (newest - first) // S + 1


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.smoke:
        # 20 s of event time: boundaries past the lateness to derive.
        args.rounds, args.events, args.step_us = 1, 8_000, 10_000
    batches = _batches(args.events, args.step_us)
    ok = True
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        plain, derived = Path(tmp) / "plain.toml", Path(tmp) / "derive.toml"
        plain.write_text(RULE)
        derived.write_text(RULE + DERIVES)
        for round_ in range(args.rounds):
            # Alternating which goes first: a shared machine drifts within a round.
            order = [(plain, False), (derived, True)]
            for rules, derive in order if round_ % 2 == 0 else order[::-1]:
                row = {"round": round_, **_run(rules, batches, args.step_us, derive)}
                rows.append(row)
                ok &= row["statuses"] == {202: len(batches)}
                if derive:
                    ok &= row["derived"] == [row["derived_expected"]] * len(DERIVED)
                print(json.dumps(row), file=sys.stderr if not args.json else sys.stdout)
    summary = with_against_without(rows, "derive", args.rounds, args.events, ok)
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"CPU per source event, median of {args.rounds} rounds: without derive rules "
            f"{summary['without_cpu_us_per_event']} µs, with three "
            f"{summary['with_cpu_us_per_event']} µs; with/without "
            f"{summary['with_over_without']}; counts exact: {ok}"
        )
    return 0 if ok or not (args.smoke or args.check) else 1


def _parser() -> Any:
    out = parser(__doc__ or "", smoke="one small round")
    out.add_argument("--rounds", type=int, default=5)
    out.add_argument("--events", type=int, default=200_000)
    out.add_argument(
        "--step-us", type=int, default=STEP_US, help="event time between a topic's events"
    )
    return out


if __name__ == "__main__":
    raise SystemExit(main())
