"""Sessions in a server: what a `[[session]]` rule with a four-step funnel costs per source
event, against the same server without it.

    python -m bench.session_rules                    # 5 alternating rounds, 200,000 events each
    python -m bench.session_rules --rounds 7
    python -m bench.session_rules --smoke    # CI: one small round; exit 1 unless counts hold

Two `pushsvc serve --tick 0` processes (the memory broker) take turns, round by round, one
started with a rules file of one `[[rule]]` (`bench.*`: `10s`, `1m` and an exact `1h` window)
and one with the same rule and a `[[session]]` table (`bench.visits` from `bench.clicks`, key
`user`, gap `1s`, funnel view → cart → checkout → paid within `1m`). Each posts the same events
to `bench.clicks` in NDJSON batches of 100, timestamps `--step-us` apart (100 µs: 10,000 events
per second of event time): every 20 consecutive events are one visitor's visit (its first
four clicks the funnel's steps, the rest other pages), so a visit ends 6 s of event time after
its last click (gap and lateness) and about 500 visits end per second of event time. It
reports the server's CPU (user + system, /proc) per source event while posting, which
includes the sessionizer's rounds (every 0.2 s: reading the updates, assembling, appending
each ended visit). Then, with sessions, one later click ends every visit, and it checks the
session topic: one event per visit (the `1h` window's count), each of 20 events, none a
bounce, every one through the whole funnel.
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
TOPIC = "bench.clicks"
VISITS = "bench.visits"
BATCH = 100
PER_VISIT = 20
STEPS = ("view", "cart", "checkout", "paid")
STEP_US = 100
RULE = """
[[rule]]
topics = ["bench.*"]
windows = ["10s", "1m", "1h"]
stats = ["count", "mean", "max"]
exact_percentiles_up_to = "1h"
"""
SESSIONS = """
[[session]]
topic = "bench.visits"
from = ["bench.clicks"]
key = "user"
gap = "1s"
funnel = { tag = "step", steps = ["view", "cart", "checkout", "paid"], within = "1m" }
"""


def _click(n: int, step_us: int) -> str:
    visit, click = divmod(n, PER_VISIT)
    step = STEPS[click] if click < len(STEPS) else "page"
    tags = {"user": f"v{visit}", "step": step}
    return json.dumps({"value": float(click), "ts": (T0 + n * step_us) / S, "tags": tags})


def _batches(events: int, step_us: int) -> list[bytes]:
    """Every POST's NDJSON body, in order: the same for both servers."""
    return [
        "\n".join(_click(n, step_us) for n in range(start, min(start + BATCH, events))).encode()
        for start in range(0, events, BATCH)
    ]


def _post(port: int, body: bytes) -> int:
    status, _, _ = request(
        port, "POST", f"/topics/{TOPIC}/events", body, content_type="application/x-ndjson"
    )
    return status


def _run(rules: Path, batches: list[bytes], step_us: int, sessions: bool) -> dict[str, Any]:
    server = PushsvcProcess("serve", "--tick", "0", "--rules", str(rules)).start()
    try:
        meter = CpuMeter({"server": server.pid}).start()
        statuses: dict[int, int] = {}
        for body in batches:
            status = _post(server.port, body)
            statuses[status] = statuses.get(status, 0) + 1
        used = meter.stop()
        events = sum(body.count(b"\n") + 1 for body in batches)
        cpu = used["cpu_s"]["server"]
        row: dict[str, Any] = {
            "sessions": sessions,
            "events": events,
            "statuses": statuses,
            "cpu_us_per_event": round(cpu / events * S, 2),
            "events_per_wall_s": round(events / used["wall_s"]),
        }
        if sessions:
            # A click well after the last ends every visit; its own stays open.
            closer = {"value": 0.0, "ts": (T0 + events * step_us + 30 * S) / S}
            closer["tags"] = {"user": "closer", "step": "page"}
            _post(server.port, json.dumps(closer).encode())
            row["visits_expected"] = -(-events // PER_VISIT)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                window = _visits(server.port)
                if window.get("count", 0) >= row["visits_expected"]:
                    break
                time.sleep(0.2)
            row["visits"] = window.get("count", 0)
            row["visit_stats"] = {
                "bounce_rate": window.get("bounce_rate"),
                "events_per_session": window.get("events_per_session"),
                "reached": [step["sessions"] for step in window.get("funnel", [])],
            }
        return row
    finally:
        server.stop()


def _visits(port: int) -> dict[str, Any]:
    status, _, body = request(port, "GET", f"/topics/{VISITS}/stats")
    if status != 200:
        return {}
    window: dict[str, Any] = json.loads(body)["windows"]["1h"]
    return window


def _exact(row: dict[str, Any]) -> bool:
    want = row["visits_expected"]
    whole = row["events"] % PER_VISIT == 0
    return bool(
        row["visits"] == want
        and row["visit_stats"]["bounce_rate"] == 0
        and (not whole or row["visit_stats"]["events_per_session"] == PER_VISIT)
        and row["visit_stats"]["reached"] == [want] * len(STEPS)
    )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.smoke:
        args.rounds, args.events = 1, 8_000
    batches = _batches(args.events, args.step_us)
    ok = True
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        plain, with_sessions = Path(tmp) / "plain.toml", Path(tmp) / "sessions.toml"
        plain.write_text(RULE)
        with_sessions.write_text(RULE + SESSIONS)
        for round_ in range(args.rounds):
            # Alternating which goes first: a shared machine drifts within a round.
            order = [(plain, False), (with_sessions, True)]
            for rules, sessions in order if round_ % 2 == 0 else order[::-1]:
                row = {"round": round_, **_run(rules, batches, args.step_us, sessions)}
                rows.append(row)
                ok &= row["statuses"] == {202: len(batches)}
                if sessions:
                    ok &= _exact(row)
                print(json.dumps(row), file=sys.stderr if not args.json else sys.stdout)
    summary = with_against_without(rows, "sessions", args.rounds, args.events, ok)
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"CPU per source event, median of {args.rounds} rounds: without a session rule "
            f"{summary['without_cpu_us_per_event']} µs, with one (4-step funnel) "
            f"{summary['with_cpu_us_per_event']} µs; with/without "
            f"{summary['with_over_without']}; counts exact: {ok}"
        )
    return 0 if ok or not (args.smoke or args.check) else 1


def _parser() -> Any:
    out = parser(__doc__ or "", smoke="one small round")
    out.add_argument("--rounds", type=int, default=5)
    out.add_argument("--events", type=int, default=200_000)
    out.add_argument("--step-us", type=int, default=STEP_US, help="event time between two clicks")
    return out


if __name__ == "__main__":
    raise SystemExit(main())
