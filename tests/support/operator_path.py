"""The operator's path, as a test (tests/system/test_readme_examples.py): docs/security.md and
docs/deploy.md followed as written, in a fresh install of the checkout, with real openssl,
curl, nginx, gunicorn and redis-server.

An operator types each doc line in one shell: `OperatorShell.run` runs a snippet in bash,
with what earlier snippets exported (and `TOKEN`) carried over in a state file; `start` leaves
a server running and waits until it answers `/healthz` (over TLS, trusting the operator's
certificate, where it serves HTTPS). The doc lines are taken verbatim; only the addresses
they name move to free ports (and to `https://` where TLS is in front), and curl trusts the
self-signed certificate through `CURL_CA_BUNDLE` rather than an added `--cacert`.
"""

from __future__ import annotations

import http.client
import os
import shlex
import signal
import ssl
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pushsvc.ops.children import die_with_parent
from support.newcomer import newcomer_env

READY_TIMEOUT = 60.0
STEP_TIMEOUT = 300.0  # a `pip install '.[gunicorn]'` with a cold cache
TRACEBACK = "Traceback (most recent call last)"


@dataclass
class Server:
    line: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


class OperatorShell:
    """One operator's shell over a fresh install: `bin_dir` holds its `pushsvc` (and, once
    installed, `gunicorn`); `work` is the directory the keys and certificates are made in."""

    def __init__(self, bin_dir: Path, work: Path) -> None:
        self.work = work
        self.state = work / "state.sh"
        self.state.write_text("")
        env = newcomer_env()  # this machine's, as a person's shell has it (pip's settings)
        self.env = {
            **env,
            "PATH": f"{bin_dir}{os.pathsep}{env['PATH']}{os.pathsep}/usr/sbin:/sbin",
            "HOME": str(work),
            # curl trusts the operator's self-signed certificate (docs: `--cacert cert.pem`).
            "CURL_CA_BUNDLE": str(work / "cert.pem"),
        }
        self.servers: list[Server] = []
        self.transcript: list[str] = []

    def run(self, snippet: str, *, cwd: Path | None = None) -> str:
        """Run `snippet` to its end (exit 0, else AssertionError with its output); its
        standard output. What it exports, and `TOKEN`, carry over to the next one."""
        script = (
            f"set -euo pipefail\n. {shlex.quote(str(self.state))}\n{snippet}\n"
            f"{{ export -p; declare -p TOKEN 2>/dev/null || true; }} > "
            f"{shlex.quote(str(self.state))}\n"
        )
        done = subprocess.run(
            ["bash", "-c", script],
            cwd=cwd or self.work,
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=STEP_TIMEOUT,
        )
        self.transcript.append(f"$ {snippet.strip()}\n{done.stdout}{done.stderr}")
        assert done.returncode == 0, f"{snippet!r} exited {done.returncode}:\n{done.stderr}"
        return done.stdout

    def start(self, line: str, *, port: int, https: bool = False) -> Server:
        """Leave `line` (a server) running, its port in PUSHSVC_PORT, until it answers."""
        log = self.work / f"server-{len(self.servers)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                ["bash", "-c", f". {shlex.quote(str(self.state))}\n{line}"],
                cwd=self.work,
                env={**self.env, "PUSHSVC_PORT": str(port)},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        server = Server(line, port, proc, log)
        self.servers.append(server)
        deadline = time.monotonic() + READY_TIMEOUT
        while _healthz(port, self.work / "cert.pem" if https else None) != 200:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"`{line}` did not answer on {port}:\n{server.output()}")
            time.sleep(0.1)
        return server

    def stop(self, server: Server) -> None:
        """Ctrl-C's equivalent for a service: SIGTERM to its process group."""
        if server.proc.poll() is None:
            os.killpg(server.proc.pid, signal.SIGTERM)
            try:
                server.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(server.proc.pid, signal.SIGKILL)
                server.proc.wait()

    def close(self) -> list[str]:
        """Stop every server; the problems their logs show (a traceback)."""
        for server in self.servers:
            self.stop(server)
        return [
            f"`{server.line}` logged a traceback:\n{server.output()[-3000:]}"
            for server in self.servers
            if TRACEBACK in server.output()
        ]

    def exported(self, name: str) -> str:
        """A variable's value as the shell holds it now (e.g. the key openssl made)."""
        return self.run(f'printf %s "${{{name}}}"')


def _healthz(port: int, cafile: Path | None) -> int | None:
    conn: http.client.HTTPConnection
    if cafile is None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    else:
        context = ssl.create_default_context(cafile=str(cafile))
        conn = http.client.HTTPSConnection("localhost", port, timeout=5, context=context)
    try:
        conn.request("GET", "/healthz")
        return conn.getresponse().status
    except OSError:
        return None
    finally:
        conn.close()


Step = Callable[[OperatorShell], None]

LATER_STEPS: list[Step] = []
"""More of the operator's path, run after the others on the same shell (its key exported,
its certificate made). The hook for docs/deploy.md's `serve --workers N` Prometheus scrape,
which the `/metrics` under `--workers` work adds."""
