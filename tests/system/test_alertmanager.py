"""Alert instances reach a real Prometheus Alertmanager (Debian's `prometheus-alertmanager`):
an instance that fires is posted with its labels (alertname, topic, the group's tags, the
rule's labels) and annotations, and once resolved is posted with `endsAt` now, so Alertmanager
no longer lists it active. An unreachable Alertmanager never holds updates back and shows in
/metrics. Skipped only when the binary is not installed."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.live import PushsvcProcess, metric, post, request, wait_until
from support.net import free_port

ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
if ALERTMANAGER is None:
    pytest.skip("prometheus-alertmanager is not installed", allow_module_level=True)

RULES = """
[[rule]]
topics = ["fryer.*"]
windows = ["10s"]
stats = ["count", "max"]
group_by = ["basket"]

[[alert]]
name = "oil_too_hot"
topics = ["fryer.*"]
when = "max[10s] > 190"
labels = { severity = "page" }
annotations = { summary = "the oil is over 190" }
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


def _active(url: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{url}/api/v2/alerts?active=true", timeout=5) as response:
        alerts: list[dict[str, Any]] = json.loads(response.read())
    return [a for a in alerts if a["labels"].get("alertname") == "oil_too_hot"]


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    path = tmp_path / "rules.toml"
    path.write_text(RULES)
    return path


def test_firing_and_resolved_instances_reach_alertmanager(
    alertmanager: str, rules_file: Path
) -> None:
    server = PushsvcProcess(
        "serve", "--tick", "0", "--rules", str(rules_file),
        env={"PUSHSVC_ALERTMANAGER_URL": alertmanager},
    ).start()  # fmt: skip
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
    server = PushsvcProcess(
        "serve", "--tick", "0", "--rules", str(rules_file),
        env={"PUSHSVC_ALERTMANAGER_URL": nowhere},
    ).start()  # fmt: skip
    try:
        topic = "fryer.right"
        for i in range(5):
            event = {"value": 195.0 + i, "ts": T0 + i, "tags": {"basket": "fries"}}
            assert post(server.port, topic, event)[0] == 202
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
