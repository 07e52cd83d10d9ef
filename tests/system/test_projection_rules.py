"""Every projection against every rule, on single-topic and pattern streams.

A topic keeps the windows and statistics of its own rule. A stream that names a topic outright
and asks for a window or statistic that topic does not keep is refused with a 400 before it
streams; a pattern stream spans rules, so each topic sends what it keeps of what was asked.
Either way the stream never breaks: the snapshot and every update carry exactly the asked
fields the topic has, with the values of its full statistics."""

from __future__ import annotations

import itertools
import json
import queue
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness.live import PushsvcProcess, SSEClient, post, request, run_tool, start_tool
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

RULES = """
[[rule]]
topics = ["lat.*"]
windows = ["10s", "1m"]
stats = ["count", "mean", "p90"]

[[rule]]
topics = ["shop.*"]
windows = ["1m", "15m"]
last = [5]
stats = ["count", "sum", "mean", "p50", "rate"]
group_by = ["campaign"]

[[rule]]
topics = ["cold.*"]
windows = ["5m"]
stats = ["min", "max"]

[[rule]]
topics = ["*"]
windows = ["10s", "1m", "5m"]
stats = ["count", "sum", "mean", "min", "max", "p99"]
"""
# What each family keeps (its rule's windows, count windows included, and statistics); any
# other topic takes the last rule's, "plain".
KEPT = {
    "lat": (("10s", "1m"), ("count", "mean", "p90")),
    "shop": (("1m", "15m", "last5"), ("count", "sum", "mean", "p50", "rate")),
    "cold": (("5m",), ("min", "max")),
    "plain": (("10s", "1m", "5m"), ("count", "sum", "mean", "min", "max", "p99")),
}
ALL_WINDOWS = sorted({w for windows, _ in KEPT.values() for w in windows})
ALL_STATS = sorted({s for _, stats in KEPT.values() for s in stats})


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PushsvcProcess]:
    rules = tmp_path_factory.mktemp("rules") / "rules.toml"
    rules.write_text(RULES)
    env = {
        "PUSHSVC_RULES": str(rules),
        "PUSHSVC_TICK": "0",
    }
    process = PushsvcProcess("serve", env=env).start()
    yield process
    process.stop()


def _query(windows: list[str] | None, stats: list[str] | None) -> str:
    parts = []
    if windows is not None:
        parts.append("windows=" + ",".join(windows))
    if stats is not None:
        parts.append("stats=" + ",".join(stats))
    return "&".join(parts)


def _expected(
    full: dict[str, Any], windows: list[str] | None, stats: list[str] | None
) -> dict[str, Any]:
    """The full windows, cut as a user reads the docs: the asked windows the topic has, each
    with the asked statistics it has, and no window left empty."""
    kept = {w: s for w, s in full.items() if windows is None or w in windows}
    if stats is None:
        return kept
    cut = {w: {k: v for k, v in s.items() if k in stats} for w, s in kept.items()}
    return {w: s for w, s in cut.items() if s}


def _stats(port: int, topic: str) -> dict[str, Any]:
    status, _, body = request(port, "GET", f"/topics/{topic}/stats")
    assert status == 200, body
    found: dict[str, Any] = json.loads(body)
    return found


def _event(family: str) -> dict[str, Any]:
    return {"value": 7.5, "tags": {"campaign": "flash"}} if family == "shop" else {"value": 7.5}


choices = st.one_of(st.none(), st.lists(st.sampled_from(ALL_WINDOWS), min_size=1, unique=True))
stat_choices = st.one_of(st.none(), st.lists(st.sampled_from(ALL_STATS), min_size=1, unique=True))


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(family=st.sampled_from(sorted(KEPT)), windows=choices, stats=stat_choices)
def test_a_named_topic_is_refused_what_it_does_not_keep_and_streams_what_it_does(
    server: PushsvcProcess, family: str, windows: list[str] | None, stats: list[str] | None
) -> None:
    topic = f"{family}.{uuid.uuid4().hex[:8]}"
    kept_windows, kept_stats = KEPT[family]
    missing = [w for w in windows or () if w not in kept_windows] + [
        s for s in stats or () if s not in kept_stats
    ]
    post(server.port, topic, _event(family))
    path = f"/topics/{topic}/stream?{_query(windows, stats)}"
    if missing:
        status, _, body = request(server.port, "GET", path)
        assert status == 400
        message = json.loads(body)["error"]["message"]
        assert message.startswith(f"{topic} does not keep ")
        for name in missing:
            assert name in message
        return
    with SSEClient(server.port, path) as stream:
        _, snapshot = stream.next_data("snapshot")
        full = _stats(server.port, topic)
        assert snapshot["topics"][topic]["windows"] == _expected(full["windows"], windows, stats)
        assert post(server.port, topic, _event(family))[0] == 202
        update_id, update = stream.next_data()
        full = _stats(server.port, topic)
        assert full["id"] == update_id
        assert update["windows"] == _expected(full["windows"], windows, stats)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(windows=choices, stats=stat_choices)
def test_a_pattern_stream_over_topics_of_every_rule_keeps_streaming(
    server: PushsvcProcess, windows: list[str] | None, stats: list[str] | None
) -> None:
    run = uuid.uuid4().hex[:8]
    topics = {family: f"{family}.{run}" for family in KEPT}
    selectors = "&".join(f"topic={family}.*" for family in KEPT)
    query = _query(windows, stats)
    with SSEClient(server.port, f"/stream?{selectors}&{query}") as stream:
        assert stream.status == 200
        stream.next_data("snapshot")
        # Twice over every family: the stream goes on after each, whatever the topic keeps.
        for family in itertools.chain(KEPT, KEPT):
            topic = topics[family]
            assert post(server.port, topic, _event(family))[0] == 202
            update_id, update = stream.next_data()
            full = _stats(server.port, topic)
            assert (update["topic"], update_id) == (topic, full["id"])
            assert update["windows"] == _expected(full["windows"], windows, stats)


def test_the_cli_streams_a_topic_and_a_pattern_whose_rules_differ(
    server: PushsvcProcess, tmp_path: Path
) -> None:
    """`pushsvc subscribe orders 'shop.*' --stats mean,p99`: `orders` keeps p99, the shop's
    topics do not; each update carries what its topic keeps."""
    shop = f"shop.{uuid.uuid4().hex[:8]}"
    orders = f"plain.{uuid.uuid4().hex[:8]}"
    tool = start_tool(
        "subscribe", "--url", server.base, orders, "shop.*", "--stats", "mean,p99", "--count", "2"
    )
    assert tool.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(
        target=lambda: [lines.put(line) for line in tool.stdout or ()], daemon=True
    ).start()
    try:
        snapshot = json.loads(lines.get(timeout=20))
        assert snapshot["event"] == "snapshot"
        post(server.port, shop, _event("shop"))
        post(server.port, orders, {"value": 2})
        printed = [json.loads(lines.get(timeout=20)) for _ in range(2)]
    finally:
        tool.stdout.close()
        tool.kill()
        tool.wait()
    assert [line["data"]["topic"] for line in printed] == [shop, orders]
    assert printed[0]["data"]["windows"] == {w: {"mean": 7.5} for w in KEPT["shop"][0]}
    assert printed[1]["data"]["windows"]["1m"] == {"mean": 2.0, "p99": 2.0}


def test_the_cli_names_what_a_topic_does_not_keep(server: PushsvcProcess) -> None:
    done = run_tool("subscribe", "--url", server.base, "lat.grill", "--stats", "p99", timeout=20)
    assert done.returncode == 1
    assert "lat.grill does not keep p99" in done.stderr
    assert "Traceback" not in done.stderr
