"""The producer and subscriber tools against a real server: publish, subscribe, replay."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from support.live import PushsvcProcess, SSEClient, request, run_tool, start_tool


def test_publish_values_and_ndjson(server: PushsvcProcess, topic: str) -> None:
    url = f"--url={server.base}"
    with SSEClient(server.port, f"/topics/{topic}/stream") as stream:
        stream.next_data("snapshot")
        done = run_tool("publish", url, topic, "1.5", "2.5", "--tag", "site=a")
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "accepted 2"
        done = run_tool("publish", url, topic, stdin='{"value": 7}\n{"value": 8}\n')
        assert done.stdout.strip() == "accepted 2"
        got = [(u["event"]["value"], u["event"]["tags"]) for _, u in stream.take(4)]
        assert got == [(1.5, {"site": "a"}), (2.5, {"site": "a"}), (7.0, {}), (8.0, {})]


def test_publish_reports_the_servers_error(server: PushsvcProcess, topic: str) -> None:
    done = run_tool("publish", f"--url={server.base}", topic, stdin='{"value": "x"}\n')
    assert done.returncode != 0
    assert "invalid_event" in done.stderr


def test_subscribe_prints_updates_as_json_lines(server: PushsvcProcess, topic: str) -> None:
    proc = start_tool(
        "subscribe", f"--url={server.base}", topic, "--count", "2", "--stats", "count"
    )
    assert proc.stdout is not None
    first = json.loads(proc.stdout.readline())  # the snapshot: subscribed before we publish
    assert first["event"] == "snapshot"
    request(server.port, "POST", f"/topics/{topic}/events", [{"value": 1}, {"value": 2}])
    lines = [json.loads(proc.stdout.readline()) for _ in range(2)]
    assert proc.wait(30) == 0
    proc.stdout.close()
    assert [line["data"]["windows"]["1m"] for line in lines] == [{"count": 1}, {"count": 2}]
    assert all(line["event"] == "stats" and line["id"] == line["data"]["id"] for line in lines)


def test_replay_csv(server: PushsvcProcess, topic: str, tmp_path: Path) -> None:
    csv = tmp_path / "orders.csv"
    frame = pd.DataFrame(
        {
            "ts": pd.date_range("2026-11-21T10:00:00Z", periods=2500, freq="100ms"),
            "amount": [float(i % 13) for i in range(2500)],
            "dish": ["noodles", "rice"] * 1250,
        }
    )
    frame.to_csv(csv, index=False)
    done = run_tool(
        "replay",
        f"--url={server.base}",
        str(csv),
        "--topic",
        topic,
        "--value-column",
        "amount",
        "--tag-columns",
        "dish",
        "--batch",
        "1000",
    )
    assert done.returncode == 0, done.stderr
    assert "replayed 2500 events" in done.stdout
    latest = json.loads(request(server.port, "GET", f"/topics/{topic}/stats")[2])
    last = frame.iloc[-1]
    assert latest["event"] == {
        "value": last["amount"],
        "ts": last["ts"].timestamp(),
        "tags": {"dish": last["dish"]},
    }
    expected = frame.set_index("ts")["amount"].rolling("60s").agg(["count", "mean"]).iloc[-1]
    assert latest["windows"]["1m"]["count"] == expected["count"]
    assert latest["windows"]["1m"]["mean"] == pytest.approx(expected["mean"], rel=1e-12)


def test_replay_names_a_bad_row(server: PushsvcProcess, topic: str, tmp_path: Path) -> None:
    csv = tmp_path / "bad.csv"
    csv.write_text("value\n1\n2\nlots\n")
    done = run_tool("replay", f"--url={server.base}", str(csv), "--topic", topic)
    assert done.returncode != 0
    assert "row 4" in done.stderr
    assert request(server.port, "GET", f"/topics/{topic}/stats")[0] == 404
