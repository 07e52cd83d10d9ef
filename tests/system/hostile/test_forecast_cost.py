"""The costliest forecast a rules file allows (a horizon of 2,880 buckets, the most, on a
`1s` tier, the finest, with a line over two buckets, the cheapest model to learn) on a
thousand series (ten topics of a hundred groups each): every second each series' bucket
closes and its forecast is made, thousands of points each. The aggregator pauses before each
forecast (`pushsvc.aggregate.stages.series.ForecastWork`), so a legitimate producer's POSTs
and a new stream's head are served within their bound meanwhile (once a close of these
forecasts held the loop: POSTs stalled 15 s and more), and `pushsvc_forecast_bytes_total`
counts what they cost.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from pathlib import Path

from harness.live import PushsvcProcess, SSEClient, metric, post

TOPICS = 10
GROUPS = 100
BOUND_S = 2.0
ATTACK_S = 8.0
RULES = f"""
[[rule]]
topics = ["fc.*"]
windows = ["10s"]
series = ["1s:10m"]
group_by = ["g"]
max_groups = {GROUPS}
forecast = {{ stat = "mean", tier = "1s", model = "linear", range = "2s", horizon = "48m" }}
"""


def _attack(port: int, stop: threading.Event) -> None:
    """An event to every group of every topic, twice a second."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        while not stop.is_set():
            for t in range(TOPICS):
                events = [{"value": 1.0, "tags": {"g": f"g{i}"}} for i in range(GROUPS)]
                conn.request(
                    "POST",
                    f"/topics/fc.t{t}/events",
                    body=json.dumps(events),
                    headers={"Content-Type": "application/json"},
                )
                response = conn.getresponse()
                response.read()
                assert response.status == 202
            stop.wait(0.5)
    finally:
        conn.close()


def test_the_costliest_forecasts_leave_producers_and_new_streams_served(
    tmp_path: Path, topic: str
) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    proc = PushsvcProcess("serve", "--tick", "1s", "--grace", "0s", "--rules", str(rules)).start()
    stop = threading.Event()
    attacker = threading.Thread(target=_attack, args=(proc.port, stop), daemon=True)
    try:
        attacker.start()
        latencies: list[float] = []
        heads: list[float] = []
        end = time.monotonic() + ATTACK_S
        while time.monotonic() < end:
            start = time.monotonic()
            assert post(proc.port, f"{topic}-legit", {"value": 1})[0] == 202
            latencies.append(time.monotonic() - start)
            if len(latencies) % 20 == 0:
                start = time.monotonic()
                with SSEClient(proc.port, f"/topics/{topic}-new/stream") as stream:
                    assert stream.status == 200
                heads.append(time.monotonic() - start)
            time.sleep(0.05)
        stop.set()
        attacker.join(timeout=60)
        # Forecasts were made meanwhile, dozens at least, each of 2,880 points (some 50 bytes
        # of JSON a point).
        assert metric(proc.port, "pushsvc_forecast_bytes_total") > 50 * 2880 * 50
        assert heads and max(heads) < BOUND_S, heads
        assert max(latencies) < BOUND_S, max(latencies)
    finally:
        stop.set()
        proc.stop()
