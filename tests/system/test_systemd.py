"""deploy/pushsvc.service: systemd accepts it (`systemd-analyze verify`), rates it hardened
(`systemd-analyze security --offline`), and the command and environment it gives start a
working server. (No test here runs it under a real systemd: this machine has none as PID 1.)
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from harness.live import PushsvcProcess, SSEClient, post

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "pushsvc.service"
INSTALLED = "/opt/pushsvc/bin/pushsvc"  # where the unit expects the console script
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None, reason="no systemd-analyze on this machine (apt install systemd)"
)


def _directives(name: str) -> list[str]:
    return re.findall(rf"^{name}=(.*)$", UNIT.read_text(), re.MULTILINE)


def _installed(tmp_path: Path) -> Path:
    """The unit as installed here: ExecStart pointing at this environment's pushsvc (verify
    checks that the program exists and is executable)."""
    console_script = Path(sys.executable).parent / "pushsvc"
    assert console_script.exists(), "pip install -e . puts it next to python"
    text = UNIT.read_text()
    assert INSTALLED in text
    unit = tmp_path / "pushsvc.service"
    unit.write_text(text.replace(INSTALLED, str(console_script)))
    return unit


@needs_systemd_analyze
def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    assert SYSTEMD_ANALYZE is not None
    done = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", str(_installed(tmp_path))],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "", done.stderr  # not even a warning


@needs_systemd_analyze
def test_the_unit_is_rated_hardened(tmp_path: Path) -> None:
    assert SYSTEMD_ANALYZE is not None
    done = subprocess.run(
        [SYSTEMD_ANALYZE, "security", "--offline=true", str(_installed(tmp_path))],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    match = re.search(r"Overall exposure level for pushsvc\.service: ([\d.]+) (\w+)", done.stdout)
    assert match, done.stdout
    # 0 is fully locked down, 10 is wide open; systemd calls below 2 "OK".
    assert float(match[1]) < 2.0 and match[2] == "OK", done.stdout
    for directive in ("DynamicUser", "NoNewPrivileges", "ProtectSystem", "PrivateTmp"):
        assert _directives(directive), directive


@pytest.mark.redis
def test_the_units_command_and_environment_serve(tmp_path: Path) -> None:
    """What systemd would run: ExecStart's arguments with the unit's Environment= lines (the
    data directory and port moved to the test's own)."""
    [exec_start] = _directives("ExecStart")
    program, command, *args = exec_start.split()
    assert program == INSTALLED and command == "serve"
    env = dict(pair.split("=", 1) for line in _directives("Environment") for pair in line.split())
    assert env["PUSHSVC_DATA_DIR"] == "/var/lib/pushsvc" and _directives("StateDirectory") == [
        "pushsvc"
    ]  # the state directory systemd creates for the dynamic user is the data directory
    env["PUSHSVC_DATA_DIR"] = str(tmp_path / "state")
    server = PushsvcProcess(command, *args, env={**os.environ, **env}).start()  # --port 0
    try:
        with SSEClient(server.port, "/topics/systemd-check/stream") as stream:
            stream.next_data("snapshot")
            assert post(server.port, "systemd-check", {"value": 1})[0] == 202
            assert stream.next_data()[1]["event"]["value"] == 1
        assert any((tmp_path / "state").iterdir())  # the state is kept there
    finally:
        assert server.stop(timeout=30) == 0  # SIGTERM, as systemd stops it


def test_the_unit_and_the_docs_install_the_same_way() -> None:
    """The unit's comment and docs/deploy.md name one install command (they had drifted:
    a package index name in one, this checkout in the other)."""
    unit = re.search(r"^#\s+(python3 -m venv /opt/pushsvc .*)$", UNIT.read_text(), re.MULTILINE)
    docs = (ROOT / "docs" / "deploy.md").read_text()
    assert unit is not None
    assert re.search(rf"^{re.escape(unit[1])}$", docs, re.MULTILINE), unit[1]
