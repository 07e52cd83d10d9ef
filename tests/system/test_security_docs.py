"""docs/security.md's examples, run as a reader would: the blocks marked `<!-- run: name -->`
in one shell, servers in the background on a free port, output as `<!-- expect: -->` says."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from harness.live import SRC
from harness.net import free_port

from pushsvc.app import create_app
from support.security_docs import blocks, expected

pytestmark = pytest.mark.skipif(
    shutil.which("curl") is None or shutil.which("openssl") is None,
    reason="needs curl and openssl (apt-get install -y curl openssl)",
)


def in_background(server_block: str, check: str) -> str:
    """The block with its last line (the server) started in the background, and a wait until
    `check` (a curl of /healthz) answers; the server is stopped when the script exits."""
    *setup, command = server_block.strip().splitlines()
    return "\n".join(
        [
            *setup,
            f"{command} 2>server.log &",
            "server=$!",
            "trap 'kill $server; wait $server' EXIT",
            f"for _ in $(seq 100); do {check} >/dev/null 2>&1 && break; sleep 0.1; done",
        ]
    )


def run(script: str, cwd: Path) -> str:
    port = free_port()
    script = script.replace("localhost:8000", f"127.0.0.1:{port}")
    bin_dir = os.path.dirname(sys.executable)
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        env={
            "PATH": f"{bin_dir}:/usr/bin:/bin",
            "PYTHONPATH": SRC,
            "PUSHSVC_PORT": str(port),
            "HOME": str(cwd),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"{done.stderr}\n{(cwd / 'server.log').read_text()}"
    return done.stdout


def test_turning_it_on_then_minting_and_publishing(tmp_path: Path) -> None:
    doc = blocks()
    script = in_background(doc["server"], "curl -sf localhost:8000/healthz") + "\n" + doc["mint"]
    assert run(script, tmp_path).split() == expected("mint").split()


def test_a_public_key_setup(tmp_path: Path) -> None:
    doc = blocks()
    script = "\n".join(
        [
            doc["keys"],
            in_background(doc["server-public-key"], "curl -sf localhost:8000/healthz"),
            "TOKEN=$(pushsvc token --private-key signing.key --publish orders)",
            "curl -sf -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/json' "
            "-d '{\"value\": 1}' localhost:8000/topics/orders/events",
        ]
    )
    assert run(script, tmp_path).strip() == '{"accepted":1}'


def test_tls_directly(tmp_path: Path) -> None:
    doc = blocks()
    check = "curl -sf --cacert cert.pem https://localhost:8000/healthz"
    script = "\n".join(
        [doc["certificate"], in_background(doc["server-tls"], check), check]
    ).replace("https://localhost:8000", "https://localhost:$PUSHSVC_PORT")
    assert run(script, tmp_path).strip() == '{"status":"ok"}'


def test_the_cookie_an_application_sets_is_what_pushsvc_reads() -> None:
    namespace: dict[str, object] = {"__name__": "__main__"}
    exec(blocks()["cookie"], namespace)  # the doc's own application
    login_app = namespace["app"]
    secret = namespace["SECRET"]
    response = login_app.test_client().post("/login")  # type: ignore[attr-defined]
    cookie = response.headers["Set-Cookie"]
    for flag in ("HttpOnly", "Secure", "SameSite=Strict", "Path=/"):
        assert flag in cookie
    token = cookie.split(";")[0].removeprefix("pushsvc_token=")
    pushsvc = create_app({"tick": 0, "jwt_key": secret})
    try:
        client = pushsvc.test_client()
        client.set_cookie("pushsvc_token", token)
        assert client.get("/topics/orders/stats").status_code == 404  # readable, no data yet
        assert client.get("/topics/secret/stats").status_code == 403
    finally:
        pushsvc.extensions["pushsvc"].close()
