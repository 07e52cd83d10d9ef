"""The costliest forecast a rules file allows, on as many series as one publisher may make:
the finest tier (`1s`), the longest horizon (2,880 buckets), a line over the widest range the
rules allow, every group a rule may keep (`max_groups` at its cap), and an alert reading the
horizon's last step, on every topic of the attacker's share of `--max-topics`, each of hundreds
of groups: every second each series' bucket closes and its forecast is made.

What a close costs is bounded whatever the horizon (`pushsvc.series.forecasting`): a forecast
message carries at most `MESSAGE_STEPS` of its steps, the series keeps the model's outlook,
and an alert makes only the step it reads. So, beside the attacker, a legitimate producer's
POSTs (their p99) and a new stream's head are served within their bounds, the aggregator keeps
up (it is caught up within seconds of the attacker leaving; once it fell minutes behind, and
POSTs stalled 15 s and more), each forecast's JSON is within its documented bound, the memory
grows by no more than the history's byte budget and the series' own state allow, and stops
growing once the attacker leaves.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from pathlib import Path

from harness.live import PushsvcProcess, SSEClient, metric, wait_caught_up
from harness.procfs import rss_kb

from pushsvc.rules.analytics import MAX_GROUPS_CAP
from pushsvc.series.forecasting import MESSAGE_STEPS
from support.legitimate import LegitimateClient

MIB = 1024 * 1024
TOPICS = 10
MAX_TOPICS = 4 * (TOPICS + 2)
"""An address's share of it (a quarter) is the attacker's topics and the legitimate
producer's (on the same address here)."""
GROUPS = 100
"""Groups a topic, of the `MAX_GROUPS_CAP` the rule lets it keep: what one client posts to
every second on a shared 2-core machine (each series' cost is what the test bounds)."""
PARTITIONS = 16
HISTORY_BYTES = 4 * MIB
"""`--history-bytes` (per partition): the forecast messages the history holds."""
MESSAGE_BOUND = 12 * 1024
"""A forecast message's JSON at most (docs/security.md: `MESSAGE_STEPS` points of some 150
bytes each, and the forecast's names)."""
RSS_BOUND = PARTITIONS * HISTORY_BYTES + 160 * MIB
"""The history's budget, and what the series (points, groups, models) and the attack's
traffic hold beside it."""
HEAD_BOUND_S = 2.0
ATTACK_S = 15.0
CATCH_UP_S = 30.0
"""How soon after the attack the aggregator has applied everything logged: before the bound,
it was still forecasting minutes later; the margin is for a CI machine running the suite's
other workers beside it."""
RULES = f"""
[[rule]]
topics = ["fc.*"]
windows = ["10s"]
series = ["1s:10m"]
group_by = ["g"]
max_groups = {MAX_GROUPS_CAP}
forecast = {{ stat = "mean", tier = "1s", model = "linear", range = "168m", horizon = "48m" }}

[[alert]]
name = "soon"
topics = ["fc.*"]
when = "forecast(mean, 48m) > 1000000"
"""


def _attack(port: int, stop: threading.Event) -> None:
    """An event to every group of every topic of its share, about once a second."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        n = 0
        while not stop.is_set():
            for t in range(TOPICS):
                events = [{"value": n % 7 + i % 3, "tags": {"g": f"g{i}"}} for i in range(GROUPS)]
                conn.request(
                    "POST",
                    f"/topics/fc.t{t}/events",
                    body=json.dumps(events),
                    headers={"Content-Type": "application/json"},
                )
                try:
                    response = conn.getresponse()
                    response.read()
                except (OSError, http.client.HTTPException):
                    if stop.is_set():  # the server stops: the test is over
                        return
                    raise
                assert response.status == 202, response.status
            n += 1
            stop.wait(0.5)
    finally:
        conn.close()


def _rss(proc: PushsvcProcess) -> int:
    return rss_kb([proc.pid]) * 1024


def test_the_costliest_forecasts_are_bounded_and_leave_producers_and_streams_served(
    tmp_path: Path, topic: str
) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    proc = PushsvcProcess(
        "serve", "--tick", "0", "--grace", "0s", "--rules", str(rules),
        "--max-topics", str(MAX_TOPICS), "--partitions", str(PARTITIONS),
        "--history-bytes", str(HISTORY_BYTES),
    ).start()  # fmt: skip
    stop = threading.Event()
    attacker = threading.Thread(target=_attack, args=(proc.port, stop), daemon=True)
    legit = LegitimateClient(proc.port, f"{topic}-legit")
    try:
        for _ in range(5):
            legit.round()
        before = _rss(proc)
        peak = before
        attacker.start()
        heads: list[float] = []
        end = time.monotonic() + ATTACK_S
        while time.monotonic() < end:
            legit.round()
            peak = max(peak, _rss(proc))
            if len(legit.latencies) % 20 == 0:
                start = time.monotonic()
                with SSEClient(proc.port, f"/topics/{topic}-new/stream") as stream:
                    assert stream.status == 200
                heads.append(time.monotonic() - start)
            time.sleep(0.05)
        stop.set()
        attacker.join(timeout=60)
        assert not attacker.is_alive()
        legit.assert_fast()
        assert heads and max(heads) < HEAD_BOUND_S, heads
        # The aggregator kept up: everything logged is applied within seconds of the end.
        wait_caught_up(proc.port, timeout=CATCH_UP_S)
        made = metric(proc.port, "pushsvc_forecasts_total")
        made_bytes = metric(proc.port, "pushsvc_forecast_bytes_total")
        # Made, not skipped: every series' forecast, more than once (its line learns a point
        # each second), each of MESSAGE_STEPS points. How many closes a loaded machine makes
        # in the attack's seconds is no part of the bound.
        assert made > 2 * TOPICS * GROUPS, made
        assert MESSAGE_STEPS * 60 < made_bytes / made < MESSAGE_BOUND, made_bytes / made
        after = _rss(proc)
        peak = max(peak, after)
        assert peak - before < RSS_BOUND, (peak - before) / MIB
        # The attacker gone, the memory does not grow on: the legitimate client goes on.
        for _ in range(40):
            legit.round()
            time.sleep(0.05)
        assert _rss(proc) - after < 16 * MIB, (_rss(proc) - after) / MIB
    finally:
        stop.set()
        legit.close()
        proc.stop()
