"""deploy/grafana-dashboard.json asks only for series a real pushsvc exposes."""

from __future__ import annotations

import json
import re
from pathlib import Path

from harness.live import PushsvcProcess, SSEClient, post, request
from prometheus_client.parser import text_string_to_metric_families

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana-dashboard.json"
# A metric name in PromQL: not a function (followed by "("), not a label or keyword.
_SERIES = re.compile(r"\b((?:pushsvc|process)_[a-z_]+)\b(?!\s*\()")


def test_every_query_names_a_series_the_server_exposes(server: PushsvcProcess, topic: str) -> None:
    with SSEClient(server.port, f"/topics/{topic}/stream") as stream:  # some activity first
        stream.next_data("snapshot")
        assert post(server.port, topic, {"value": 1})[0] == 202
        stream.next_data()
        post(server.port, topic, {"value": "bad"})
        text = request(server.port, "GET", "/metrics")[2].decode()
    exposed = {
        sample.name for family in text_string_to_metric_families(text) for sample in family.samples
    }
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    queries += [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    named = {name for query in queries for name in _SERIES.findall(query)}
    assert len(named) >= 10
    # The embedded server has no event log: its lag series are the Redis deployment's.
    redis_only = {"pushsvc_log_lag_entries", "pushsvc_log_lag_seconds"}
    assert named - exposed <= redis_only, named - exposed - redis_only
