"""Alert instances reach a real Prometheus Alertmanager (Debian's `prometheus-alertmanager`):
an instance that fires is posted with its labels (alertname, topic, the group's tags, the
rule's labels) and annotations, and once resolved is posted with `endsAt` now, so Alertmanager
no longer lists it active; one that goes pending and clears before it fires is never posted.
An unreachable Alertmanager never holds updates back and shows in /metrics. Skipped only when
the binary is not installed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness.live import PushsvcProcess, metric, post, request, wait_published, wait_until
from harness.net import free_port

ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
if ALERTMANAGER is None:
    pytest.skip("prometheus-alertmanager is not installed", allow_module_level=True)

RULES = """
[[rule]]
topics = ["fryer.*"]
windows = ["10s"]
stats = ["count", "max"]
group_by = ["basket"]

[[rule]]
topics = ["vat.*"]
windows = ["10s"]
stats = ["count", "max"]

[[alert]]
name = "oil_too_hot"
topics = ["fryer.*"]
when = "max[10s] > 190"
labels = { severity = "page" }
annotations = { summary = "the oil is over 190" }

[[alert]]
name = "oil_warming"
topics = ["vat.*"]
when = "max[10s] > 170"
for = "20s"
labels = { severity = "ticket" }
"""
T0 = 1_763_700_000.0


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("alertmanager")
    config = folder / "alertmanager.yml"
    config.write_text('route:\n  receiver: "null"\nreceivers:\n  - name: "null"\n')
    port = free_port()
    assert ALERTMANAGER is not None
    proc = subprocess.Popen(
        [
            ALERTMANAGER,
            f"--config.file={config}",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--storage.path={folder / 'data'}",
            "--cluster.listen-address=",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _ready(url), timeout=20, what="Alertmanager is ready")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _active(url: str, alertname: str = "oil_too_hot") -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{url}/api/v2/alerts?active=true", timeout=5) as response:
        alerts: list[dict[str, Any]] = json.loads(response.read())
    return [a for a in alerts if a["labels"].get("alertname") == alertname]


def _listed(url: str, alertname: str) -> list[str]:
    """The topics of the alerts Alertmanager lists under `alertname`, whatever their state
    (active, silenced, inhibited or not yet processed)."""
    query = "active=true&silenced=true&inhibited=true&unprocessed=true"
    with urllib.request.urlopen(f"{url}/api/v2/alerts?{query}", timeout=5) as response:
        alerts: list[dict[str, Any]] = json.loads(response.read())
    return sorted(a["labels"]["topic"] for a in alerts if a["labels"]["alertname"] == alertname)


def _received(url: str) -> dict[str, float]:
    """Alertmanager's count of the alerts posted to it, firing and resolved (its /metrics)."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        text = response.read().decode()
    found = re.findall(
        r'^alertmanager_alerts_received_total\{status="(\w+)",version="v2"\} (\S+)$', text, re.M
    )
    return {status: float(value) for status, value in found}


def _serve(rules_file: Path, alertmanager_url: str) -> PushsvcProcess:
    """`pushsvc serve` with these rules, posting to this Alertmanager, no idle ticks."""
    env = {"PUSHSVC_ALERTMANAGER_URL": alertmanager_url}
    return PushsvcProcess("serve", "--tick", "0", "--rules", str(rules_file), env=env).start()


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    path = tmp_path / "rules.toml"
    path.write_text(RULES)
    return path


def test_firing_and_resolved_instances_reach_alertmanager(
    alertmanager: str, rules_file: Path
) -> None:
    server = _serve(rules_file, alertmanager)
    try:
        topic = "fryer.left"
        event = {"value": 200.0, "ts": T0, "tags": {"basket": "fries"}}
        assert post(server.port, topic, event)[0] == 202
        wait_until(lambda: len(_active(alertmanager)) == 2, timeout=20, what="both posted")
        by_group = {a["labels"].get("basket"): a for a in _active(alertmanager)}
        assert by_group["fries"]["labels"] == {
            "alertname": "oil_too_hot",
            "topic": topic,
            "basket": "fries",
            "severity": "page",
        }
        assert by_group[None]["labels"] == {
            "alertname": "oil_too_hot",
            "topic": topic,
            "severity": "page",
        }
        assert by_group["fries"]["annotations"] == {"summary": "the oil is over 190"}
        assert by_group["fries"]["startsAt"].startswith("2025-11-21T04:40:00")
        # The 200 leaves the 10 s window: both resolve, and are posted resolved.
        cool = {"value": 150.0, "ts": T0 + 20, "tags": {"basket": "fries"}}
        assert post(server.port, topic, cool)[0] == 202
        wait_until(lambda: _active(alertmanager) == [], timeout=20, what="both resolved")
        assert metric(server.port, 'pushsvc_alertmanager_posts_total{outcome="ok"}') >= 2
    finally:
        server.stop()


def test_an_unreachable_alertmanager_holds_nothing_back(rules_file: Path) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    server = _serve(rules_file, nowhere)
    try:
        topic = "fryer.right"
        for i in range(5):
            event = {"value": 195.0 + i, "ts": T0 + i, "tags": {"basket": "fries"}}
            assert post(server.port, topic, event)[0] == 202
        wait_published(server.port, topic, event)  # logged is not yet applied
        status, _, body = request(server.port, "GET", f"/topics/{topic}/stats")
        assert status == 200 and json.loads(body)["windows"]["10s"]["count"] == 5
        wait_until(
            lambda: metric(server.port, 'pushsvc_alertmanager_posts_total{outcome="error"}') >= 1,
            timeout=20,
            what="the failed post counted",
        )
        server.wait_for_log("alertmanager .* unreachable")
        # Still taking events while the sender retries.
        assert post(server.port, topic, {"value": 1.0, "ts": T0 + 6})[0] == 202
    finally:
        server.stop()


def test_a_pending_instance_that_clears_is_never_posted(
    alertmanager: str, rules_file: Path
) -> None:
    # `oil_warming` fires after 20 s over 170: on vat.left it goes pending and clears (the
    # 180 leaves the window at 11 s); on vat.right it fires at 20 s, later resolves.
    server = _serve(rules_file, alertmanager)
    try:
        before = _received(alertmanager)

        def at(topic: str, seconds: float, value: float) -> None:
            assert post(server.port, topic, {"value": value, "ts": T0 + seconds})[0] == 202

        at("vat.left", 0, 180.0)
        at("vat.right", 0, 180.0)
        assert [a["state"] for a in _pushsvc_active(server.port)] == ["pending", "pending"]
        at("vat.right", 20, 180.0)  # firing
        # The sender read the active list with both in it, and posted what fires.
        wait_until(
            lambda: _listed(alertmanager, "oil_warming") == ["vat.right"],
            timeout=20,
            what="the firing instance posted",
        )
        at("vat.left", 11, 100.0)  # inactive: gone from GET /alerts, never posted
        assert [(a["topic"], a["state"]) for a in _pushsvc_active(server.port)] == [
            ("vat.right", "firing")
        ]
        at("vat.right", 31, 100.0)  # resolved: posted with endsAt now
        wait_until(
            lambda: _active(alertmanager, "oil_warming") == [],
            timeout=20,
            what="the resolved instance posted",
        )
        assert _listed(alertmanager, "oil_warming") == []
        after = _received(alertmanager)
        # vat.right's firing and resolved posts; nothing ever of vat.left's instance.
        assert after["firing"] - before.get("firing", 0) == 1
        assert after["resolved"] - before.get("resolved", 0) == 1
    finally:
        server.stop()


def _pushsvc_active(port: int) -> list[dict[str, Any]]:
    status, _, body = request(port, "GET", "/alerts")
    assert status == 200
    alerts: list[dict[str, Any]] = json.loads(body)["alerts"]
    return [a for a in alerts if a["alert"] == "oil_warming"]


def test_the_firing_instances_of_a_deleted_topic_reach_alertmanager_resolved(
    alertmanager: str, rules_file: Path
) -> None:
    server = _serve(rules_file, alertmanager)
    topic = "fryer.deleted"

    def firing() -> list[dict[str, Any]]:
        return [a for a in _active(alertmanager) if a["labels"]["topic"] == topic]

    try:
        event = {"value": 200.0, "ts": T0, "tags": {"basket": "fries"}}
        assert post(server.port, topic, event)[0] == 202
        wait_until(lambda: len(firing()) == 2, timeout=20, what="the topic's and group's posted")
        assert request(server.port, "DELETE", f"/topics/{topic}")[0] == 200
        wait_until(lambda: firing() == [], timeout=20, what="both posted resolved")
        assert json.loads(request(server.port, "GET", "/alerts")[2]) == {"alerts": [], "next": None}
    finally:
        server.stop()
