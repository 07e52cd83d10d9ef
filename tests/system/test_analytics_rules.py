"""Analytics rules end to end on the embedded broker: `--rules` read at start (a bad file
stops the process with one line), `GET /rules`, per-rule windows and statistics, groups in
updates, snapshots, `/topics/{t}/stats` and history, and `?group=` on streams."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness.live import PushsvcProcess, SSEClient, post, request, wait_until
from harness.redis_server import RedisServer

RULES = """
[[rule]]
topics = ["kitchen.latency.*"]
windows = ["10s", "1m"]
stats = ["count", "mean", "max", "rate"]
group_by = ["station"]
max_groups = 2

[[rule]]
topics = ["kitchen.long"]
windows = ["1h", "10s"]
last = [5]
stats = "all"

[[rule]]
topics = ["kitchen.*"]
windows = ["30s"]
stats = ["count", "sum"]
"""


@pytest.fixture(scope="module")
def rules_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PushsvcProcess]:
    path = tmp_path_factory.mktemp("rules") / "rules.toml"
    path.write_text(RULES)
    proc = PushsvcProcess("serve", "--tick", "0", "--rules", str(path)).start()
    yield proc
    proc.stop()


def _get(port: int, path: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    status, _, body = request(port, "GET", path)
    return status, json.loads(body)


def test_get_rules_answers_what_each_topic_keeps(rules_server: PushsvcProcess) -> None:
    status, rules = _get(rules_server.port, "/rules")
    assert status == 200
    assert [r["topics"] for r in rules["rules"]] == [
        ["kitchen.latency.*"],
        ["kitchen.long"],
        ["kitchen.*"],
    ]
    assert rules["rules"][0]["group_by"] == ["station"]
    assert [w["label"] for w in rules["default"]["windows"]] == ["10s", "1m", "5m"]
    assert len(rules["digest"]) == 16


def test_each_topic_takes_its_rules_windows_and_statistics(rules_server: PushsvcProcess) -> None:
    port = rules_server.port
    post(port, "kitchen.orders", [{"value": 2}, {"value": 5}])
    _, orders = _get(port, "/topics/kitchen.orders/stats")
    assert orders["windows"] == {"30s": {"count": 2, "sum": 7.0}}
    post(port, "elsewhere", {"value": 1})
    _, elsewhere = _get(port, "/topics/elsewhere/stats")
    assert set(elsewhere["windows"]) == {"10s", "1m", "5m"}  # no rule: the server's windows


def test_count_and_sketch_windows_beside_exact_ones(rules_server: PushsvcProcess) -> None:
    port = rules_server.port
    t = 1_763_700_000.0
    values = [1.5 * 1.1**i for i in range(40)]
    post(port, "kitchen.long", [{"value": v, "ts": t + i / 10} for i, v in enumerate(values)])
    _, stats = _get(port, "/topics/kitchen.long/stats")
    windows = stats["windows"]
    assert list(windows) == ["10s", "1h", "last5"]  # exact, sketch, then count windows
    hour = windows["1h"]
    assert hour["count"] == 40 and hour["max"] == values[-1] and hour["min"] == values[0]
    assert hour["sum"] == pytest.approx(sum(values), rel=1e-12)
    assert hour["rate"] == 40 / 3600
    exact_median = statistics.median(values)
    assert abs(hour["p50"] - exact_median) <= 0.01 * exact_median  # the sketch's bound
    assert windows["last5"]["count"] == 5 and windows["last5"]["min"] == values[-5]
    assert windows["last5"]["rate"] == pytest.approx(4 / 0.4)


def test_groups_travel_in_updates_snapshots_and_stats(rules_server: PushsvcProcess) -> None:
    port = rules_server.port
    topic = "kitchen.latency.a"
    t = 1_763_700_000.0
    with SSEClient(port, f"/topics/{topic}/stream") as stream:
        stream.next_data("snapshot")
        post(
            port,
            topic,
            [
                {"value": 10, "ts": t, "tags": {"station": "grill"}},
                {"value": 30, "ts": t + 1, "tags": {"station": "fry"}},
                {"value": 20, "ts": t + 2, "tags": {"station": "grill"}},
                {"value": 99, "ts": t + 3, "tags": {"station": "wok"}},  # a third: overflow
                {"value": 7, "ts": t + 4},  # no station: also a third group, so overflow
            ],
        )
        updates = [stream.next_data()[1] for _ in range(5)]
    keys = [u["group"]["key"] for u in updates]
    assert keys == [
        {"station": "grill"},
        {"station": "fry"},
        {"station": "grill"},
        {"station": "(other)"},
        {"station": "(other)"},
    ]
    grill = updates[2]["group"]["windows"]["10s"]
    assert grill == {"count": 2, "mean": 15.0, "max": 20.0, "rate": 0.2}
    assert updates[4]["group"]["windows"]["1m"]["count"] == 2  # wok and no-station
    assert updates[4]["windows"]["1m"]["count"] == 5  # the topic-wide windows stay
    # The snapshot of a grouping topic carries its live groups.
    with SSEClient(port, f"/topics/{topic}/stream") as again:
        _, snapshot = again.next_data("snapshot")
    groups = {g["key"]["station"]: g["windows"] for g in snapshot["topics"][topic]["groups"]}
    assert set(groups) == {"grill", "fry", "(other)"}
    assert groups["fry"]["10s"]["count"] == 1
    # /topics/{t}/stats: the latest update with the live groups, or those of a filter.
    _, stats = _get(port, f"/topics/{topic}/stats")
    assert len(stats["groups"]) == 3 and stats["windows"]["1m"]["count"] == 5
    _, only = _get(port, f"/topics/{topic}/stats?group=station:grill")
    assert [g["key"] for g in only["groups"]] == [{"station": "grill"}]
    # The overflow is counted.
    _, _, metrics = request(port, "GET", "/metrics")
    assert b"pushsvc_group_overflow_total 2.0" in metrics


def test_a_group_filtered_stream_gets_only_its_group(rules_server: PushsvcProcess) -> None:
    port = rules_server.port
    topic = "kitchen.latency.b"
    with SSEClient(port, f"/topics/{topic}/stream?group=station:fry&stats=count") as stream:
        stream.next_data("snapshot")
        batch = [
            {"value": 1, "tags": {"station": "grill"}},
            {"value": 2, "tags": {"station": "fry"}},
            {"value": 3, "tags": {"station": "grill"}},
            {"value": 4, "tags": {"station": "fry"}},
        ]
        post(port, topic, batch)
        first = stream.next_data()[1]
        second = stream.next_data()[1]
        # Runs with nothing for this filter (each POST is one run) write nothing, not an
        # empty chunk that would end the response: the stream goes on.
        post(port, topic, {"value": 5, "tags": {"station": "grill"}})
        post(port, topic, {"value": 6, "tags": {"station": "grill"}})
        post(port, topic, {"value": 7, "tags": {"station": "fry"}})
        third = stream.next_data()[1]
    assert [first["event"]["value"], second["event"]["value"]] == [2, 4]
    assert second["group"] == {
        "key": {"station": "fry"},
        "windows": {"10s": {"count": 2}, "1m": {"count": 2}},
    }
    assert second["windows"]["10s"] == {"count": 4}  # the projection applies to both
    assert third["event"]["value"] == 7 and third["group"]["windows"]["10s"]["count"] == 3
    # History filters alike.
    _, history = _get(port, f"/topics/{topic}/history?group=station:fry")
    assert [u["event"]["value"] for u in history["updates"]] == [2, 4, 7]


@pytest.mark.parametrize(
    ("path", "code"),
    [
        # A tag the topic's rule does not group by: a code of its own.
        ("/topics/kitchen.latency.c/stream?group=dish:ramen", "ungrouped_tag"),
        ("/topics/kitchen.orders/stats?group=station:grill", "ungrouped_tag"),
        ("/topics/kitchen.latency.c/history?group=station", "bad_request"),
        ("/stream?topic=kitchen.*&group=:x", "bad_request"),
    ],
)
def test_a_group_filter_the_topic_cannot_meet_is_400(
    rules_server: PushsvcProcess, path: str, code: str
) -> None:
    status, error = _get(rules_server.port, path)
    assert status == 400 and error["error"]["code"] == code


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ('[[rule]]\ntopics = ["a"]\nlast = [0]', "rule 1 (a): last: 0 is not a positive number"),
        (
            '[[rule]]\ntopics = ["a"]\nwindows = ["1m", "1m"]',
            "rule 1 (a): windows: '1m' is given twice",
        ),
        (
            '[[session]]\ntopic = "v"\nfrom = ["shop.*"]\nkey = "user"\ngap = "half an hour"',
            "session 1 (v): gap: 'half an hour' is not a duration",
        ),
        (
            '[[session]]\ntopic = "v"\nfrom = ["shop.*"]\nkey = "user"\ngap = "30m"\n'
            'funnel = { tag = "step", steps = ["view", "paid", "view"], within = "1h" }',
            "session 1 (v): funnel.steps: 'view' is given twice",
        ),
        (
            # Count windows only: the session statistics are kept in time windows.
            '[[rule]]\ntopics = ["v"]\nlast = [100]\n'
            '[[session]]\ntopic = "v"\nfrom = ["shop.*"]\nkey = "user"\ngap = "30m"',
            "session 1 (v): the session topic's rule has no time window, where its session",
        ),
        (
            '[[session]]\ntopic = "v"\nfrom = ["shop.*"]\nkey = "user"\ngap = "1s"\n'
            'max_duration = "2s"',
            "session 1 (v): max_duration: shorter than the allowed lateness (--grace",
        ),
        (
            '[[derive]]\ntopic = "b"\nevery = "1s"\nvalue = "count[5s](a) / count[5s](b)"',
            "derive 1 (b): value: b is a source of itself (b <- b)",
        ),
        (
            '[[derive]]\ntopic = "b"\nevery = "10s"\nvalue = "count[1m](a)"',
            "derive 1 (b): every: 10s is not a series tier of source a",
        ),
        (
            '[[rule]]\ntopics = ["a"]\ntop = [{ tag = "dish", k = 101 }]',
            "rule 1 (a): top: k for 'dish' is 101; k is a whole number from 1 to 100",
        ),
    ],
)
def test_a_bad_rules_file_stops_the_server_with_one_line(
    tmp_path: Path, body: str, named: str
) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(body)
    done = subprocess.run(
        [sys.executable, "-m", "pushsvc", "serve", "--port", "0", "--rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=PushsvcProcess("serve").env,
    )
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and named in lines[0], done.stderr


@pytest.mark.redis
def test_readyz_reports_rules_that_differ_from_the_aggregators(tmp_path: Path, prefix: str) -> None:
    first_rules, second_rules = tmp_path / "first.toml", tmp_path / "second.toml"
    first_rules.write_text(RULES)
    second_rules.write_text(RULES.replace("max_groups = 2", "max_groups = 3"))
    server = RedisServer().start()
    env = {"PUSHSVC_REDIS_URL": server.url, "PUSHSVC_PREFIX": prefix, "PUSHSVC_TICK": "0"}
    first = PushsvcProcess("serve", "--rules", str(first_rules), env=env).start()
    second = PushsvcProcess("serve", "--rules", str(second_rules), env=env).start()
    try:
        wait_until(lambda: _get(first.port, "/readyz")[0] == 200, what="the first ready")
        # Each aggregator announces its rules as it takes its partitions: the second sees the
        # first's once the first has announced them.
        wait_until(
            lambda: _get(second.port, "/readyz")[1].get("status") == "rules_differ",
            what="the second to see rules that differ",
        )
        status, ready = _get(second.port, "/readyz")
        assert (status, ready["status"]) == (503, "rules_differ")
        theirs = _get(first.port, "/rules")[1]["digest"]
        ours = _get(second.port, "/rules")[1]["digest"]
        assert theirs != ours
        assert (
            f"reads rules {ours}" in ready["reason"] and f"with rules {theirs}" in ready["reason"]
        )
    finally:
        second.stop()
        first.stop()
        server.stop()
