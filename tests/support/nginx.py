"""nginx as the deployment runs it: deploy/nginx.conf rendered with a test's ports, upstream and
certificate, in a child process with a prefix directory of its own (tests/system/test_nginx.py,
and the operator path of docs/deploy.md)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
from pathlib import Path

from harness.live import wait_until

NGINX = shutil.which("nginx", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")


def _answers(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def render(conf: str, *, https: int, http: int, upstream: int, cert: Path, key: Path) -> str:
    """deploy/nginx.conf with our ports, upstream and certificate, on IPv4 loopback only.

    Every replacement must match exactly once: a changed file breaks this test loudly rather
    than being tested half-rendered."""
    replacements = [
        (r"^    listen 443 ssl http2;$", f"    listen 127.0.0.1:{https} ssl http2;"),
        (r"^    listen \[::\]:443 ssl http2;\n", ""),
        (r"^    listen 80;$", f"    listen 127.0.0.1:{http};"),
        (r"^    listen \[::\]:80;\n", ""),
        (r"^    server 127\.0\.0\.1:8001 (.*);\n    server 127\.0\.0\.1:8002 .*;$",
         rf"    server 127.0.0.1:{upstream} \1;"),
        (r"^    ssl_certificate     /etc/ssl/pushsvc/fullchain\.pem;$",
         f"    ssl_certificate     {cert};"),
        (r"^    ssl_certificate_key /etc/ssl/pushsvc/privkey\.pem;$",
         f"    ssl_certificate_key {key};"),
    ]  # fmt: skip
    for pattern, replacement in replacements:
        conf, found = re.subn(pattern, replacement, conf, flags=re.MULTILINE)
        assert found == 1, f"deploy/nginx.conf: {pattern!r} matched {found} times"
    return conf


class Nginx:
    """nginx as a child process with its own prefix directory; `site` is an http-level file."""

    def __init__(self, directory: Path, site: str, https: int) -> None:
        self.dir = directory
        self.https = https
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "site.conf").write_text(site)
        # As root, workers would run as `nobody`, who cannot enter the test's private temp dir.
        user = "user root;\n" if os.geteuid() == 0 else ""
        (directory / "nginx.conf").write_text(
            f"{user}worker_processes 1;\n"
            "events { worker_connections 512; }\n"
            f"http {{\n    access_log {directory}/access.log;\n"
            f"    include {directory}/site.conf;\n}}\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Nginx:
        assert NGINX is not None
        log = self.dir / "error.log"
        self.proc = subprocess.Popen(
            [
                NGINX, "-p", str(self.dir), "-c", str(self.dir / "nginx.conf"), "-e", str(log),
                "-g", f"daemon off; pid {self.dir}/nginx.pid; error_log {log};",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_until(lambda: self.proc is None or self.proc.poll() is not None
                       or _answers(self.https), timeout=20)  # fmt: skip
        except AssertionError:
            self.stop()
            raise
        if self.proc.poll() is not None:
            raise RuntimeError(f"nginx did not start:\n{self.error_log}")
        return self

    @property
    def error_log(self) -> str:
        path = self.dir / "error.log"
        return path.read_text() if path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # fast shutdown: open streams are cut
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
