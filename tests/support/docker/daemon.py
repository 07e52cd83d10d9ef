"""The Docker daemon the tests talk to, and running docker commands."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from pushsvc.ops.children import terminate


class DockerUnavailable(Exception):
    """No Docker daemon answers and none could be started here; the message says why."""


class DockerError(Exception):
    """A docker, docker-compose or debootstrap command failed; the message has its output."""


def run(
    argv: Sequence[str],
    *,
    timeout: float = 300,
    env: Mapping[str, str] | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a command to its end and capture its output as text; DockerError when it fails."""
    try:
        done = subprocess.run(
            list(argv),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **env} if env is not None else None,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise DockerError(f"{' '.join(argv)}: no answer within {timeout:.0f} s") from None
    except FileNotFoundError as exc:
        raise DockerError(f"{argv[0]}: not found ({exc})") from None
    if check and done.returncode != 0:
        output = (done.stdout + done.stderr).strip()
        raise DockerError(f"{' '.join(argv)} exited with {done.returncode}:\n{output[-4000:]}")
    return done


def daemon_answers() -> bool:
    """Whether a Docker daemon answers the `docker` client."""
    if shutil.which("docker") is None:
        return False
    return run(["docker", "info"], timeout=30, check=False).returncode == 0


class DockerDaemon:
    """The daemon the tests talk to: one already running, or one started by `ensure()`.

    `stop()` stops only a daemon this object started.
    """

    def __init__(self, proc: subprocess.Popen[bytes] | None = None, log: Path | None = None):
        self.proc = proc
        self.log = log

    @classmethod
    def ensure(cls, log: Path, timeout: float = 60) -> DockerDaemon:
        """The running daemon, else `dockerd` started in the background (root only).

        Raises DockerUnavailable, saying why, when neither can be had.
        """
        if shutil.which("docker") is None:
            raise DockerUnavailable("no docker client on PATH (Debian: apt-get install docker.io)")
        if daemon_answers():
            return cls()
        dockerd = shutil.which("dockerd")
        if dockerd is None:
            raise DockerUnavailable(
                "no Docker daemon answers and there is no dockerd to start "
                "(Debian: apt-get install docker.io)"
            )
        if os.geteuid() != 0:
            raise DockerUnavailable("no Docker daemon answers, and only root can start dockerd")
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [dockerd],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                # Ctrl-C reaches the tests, which take their containers down, not the daemon.
                start_new_session=True,
            )
        daemon = cls(proc, log)
        deadline = time.monotonic() + timeout
        while not daemon_answers():
            if proc.poll() is not None or time.monotonic() > deadline:
                daemon.stop()
                raise DockerUnavailable(f"dockerd did not start:\n{daemon.log_tail()}")
            time.sleep(0.5)
        return daemon

    def log_tail(self, lines: int = 20) -> str:
        if self.log is None or not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc, timeout=30)
            self.proc = None
