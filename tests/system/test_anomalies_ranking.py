"""GET /anomalies: the topics and groups a caller may read, ranked by anomaly rate over a range,
each with its most anomalous points, equal to what `/series` of each one gives; a private
topic is absent for whoever may not read it; bad parameters are a 400 naming them."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import pytest
from harness.live import PushsvcProcess, post, request, wait_until

from support.auth_tokens import SECRET, hs256

RULES = """
[[rule]]
topics = ["vault7.*"]
windows = ["10s"]
group_by = ["desk"]
series = ["1s:1h"]
anomaly = { every = "1s", learn = "20s" }

[[rule]]
topics = ["public.*"]
windows = ["10s"]
series = ["1s:1h", "10s:1h"]
anomaly = { every = "1s", stat = "max", learn = "20s" }
"""
T0 = 1_763_700_000.0
ADMIN = {"Authorization": f"Bearer {hs256(publish=['*'], subscribe=['*'])}"}
OTHER = {"Authorization": f"Bearer {hs256(publish=['other.*'], subscribe=['other.*'])}"}


def _events(seconds: int, spikes: set[int], tags: dict[str, str] | None = None) -> list[Any]:
    return [
        {
            "value": 50 + 5 * math.sin(i / 25) + j + (80 if i in spikes and j == 1 else 0),
            "ts": T0 + i + j / 2,
            **({"tags": tags} if tags else {}),
        }
        for i in range(seconds)
        for j in range(2)
    ]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PushsvcProcess]:
    rules = tmp_path_factory.mktemp("ranking") / "rules.toml"
    rules.write_text(RULES)
    env = {"PUSHSVC_JWT_KEY": SECRET, "PUSHSVC_ANONYMOUS": "public.*", "PUSHSVC_RULES": str(rules)}
    proc = PushsvcProcess("serve", "--tick", "0", env=env).start()
    feeds = {
        "public.calm": _events(300, set()),
        "public.spiky": _events(300, {120, 250}),
        # Three spikes; the second falls in the detector's rest after the first, the third
        # after it.
        "vault7.payroll": _events(300, {60, 160, 270}, {"desk": "a"}),
    }
    for topic, events in feeds.items():
        for start in range(0, len(events), 200):
            batch = events[start : start + 200]
            assert post(proc.port, topic, batch, headers=ADMIN)[0] == 202

    def closed() -> bool:
        return all(len(_points(proc, t)) >= 290 for t in ("public.calm", "public.spiky"))

    wait_until(closed, timeout=20, what="points")
    yield proc
    proc.stop()


def _points(server: PushsvcProcess, topic: str, group: str = "") -> list[dict[str, Any]]:
    query = "resolution=1s&limit=10000" + (f"&group=desk:{group}" if group else "")
    status, _, body = request(server.port, "GET", f"/topics/{topic}/series?{query}", headers=ADMIN)
    assert status == 200, body
    points: list[dict[str, Any]] = json.loads(body)["points"]
    return points


def _ranking(server: PushsvcProcess, query: str = "", headers: Any = None) -> dict[str, Any]:
    status, _, body = request(server.port, "GET", f"/anomalies{query}", headers=headers or {})
    assert status == 200, body
    answer: dict[str, Any] = json.loads(body)
    return answer


def _expected(server: PushsvcProcess, topic: str, group: str = "", since: float = 0) -> Any:
    points = [p for p in _points(server, topic, group) if p["t"] >= since]
    flagged = sum(p["anomalous"] for p in points)
    worst = sorted(points, key=lambda p: (-p["anomaly"], p["t"]))[:3]
    return flagged / len(points), flagged, len(points), worst


def test_the_ranking_is_each_series_rate_over_the_range(server: PushsvcProcess) -> None:
    answer = _ranking(server, headers=ADMIN)
    entries = answer["anomalies"]
    named = [(e["topic"], json.dumps(e.get("group"))) for e in entries]
    assert sorted(named) == [
        ("public.calm", "null"),
        ("public.spiky", "null"),
        ("vault7.payroll", "null"),
        ("vault7.payroll", '{"desk": "a"}'),
    ]
    for entry in entries:
        group = (entry.get("group") or {}).get("desk", "")
        rate, flagged, scored, worst = _expected(server, entry["topic"], group)
        assert (entry["rate"], entry["anomalous"], entry["scored"]) == (rate, flagged, scored)
        assert entry["points"] == worst and entry["resolution"] == "1s"
    rates = [(-e["rate"], -e["anomalous"]) for e in entries]
    assert rates == sorted(rates)
    assert entries[0]["topic"] == "vault7.payroll" and entries[0]["anomalous"] >= 2
    assert answer["more"] is False and answer["since"] is None


def test_a_range_and_a_limit(server: PushsvcProcess) -> None:
    since = T0 + 200
    answer = _ranking(server, f"?since={since}&limit=1", headers=ADMIN)
    assert answer["more"] is True and answer["since"] == since
    (entry,) = answer["anomalies"]
    everything = [
        (t, g, _expected(server, t, g, since))
        for t, g in (("public.calm", ""), ("public.spiky", ""), ("vault7.payroll", "a"))
    ]
    best = max(e[2][0] for e in everything)
    assert entry["rate"] == best > 0
    assert all(p["t"] >= since for p in entry["points"])


def test_a_topic_the_caller_may_not_read_is_absent(server: PushsvcProcess) -> None:
    # Anonymous callers (and so every token's holder) may read public.* only.
    for headers in ({}, OTHER):
        answer = _ranking(server, headers=headers)
        assert {e["topic"] for e in answer["anomalies"]} == {"public.calm", "public.spiky"}
        assert "vault7" not in json.dumps(answer)


@pytest.mark.parametrize(
    ("query", "code", "names"),
    [
        ("?limit=0", "bad_request", "?limit="),
        ("?limit=x", "bad_request", "?limit="),
        ("?since=yesterday", "bad_request", "since"),
        (f"?since={T0 + 10}&until={T0}", "empty_range", "?since="),
    ],
)
def test_bad_parameters_are_a_400_naming_them(
    server: PushsvcProcess, query: str, code: str, names: str
) -> None:
    status, _, body = request(server.port, "GET", f"/anomalies{query}", headers=ADMIN)
    assert status == 400
    error = json.loads(body)["error"]
    assert error["code"] == code and names in error["message"]
