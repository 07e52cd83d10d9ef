"""A throwaway PostgreSQL of our own: Debian's server binaries, a temp directory, a free port.

Unlike `redis_server`, a restart keeps the data (the cluster directory stays until `close`):
the outbox tests restart PostgreSQL under a reader and expect its rows still there.

PostgreSQL refuses to run as root. Run as root (CI is), the cluster is made and served as
`nobody` through `setpriv`; `unavailable()` says why none can be started here (no binaries,
root without `runuser`), for the tests to skip on, naming it.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from harness.net import free_port
from pushsvc.ops.children import terminate

BIN_ENV = "TEST_PUSHSVC_POSTGRES_BIN"
"""A directory holding initdb and postgres, to use another PostgreSQL than Debian's newest."""
_UNPRIVILEGED = "nobody"
_GROUP = "nogroup"


def find_bin() -> str | None:
    given = os.environ.get(BIN_ENV)
    if given:
        return given
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=_version)
    return str(Path(found[-1]).parent) if found else None


def _version(path: str) -> float:
    try:
        return float(Path(path).parents[1].name)
    except ValueError:
        return 0.0


def unavailable() -> str | None:
    """Why no PostgreSQL can be started here, or None."""
    bindir = find_bin()
    if bindir is None:
        return "no PostgreSQL server binaries (apt-get install postgresql)"
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        return "running as root, and no setpriv to start PostgreSQL as an unprivileged user"
    return None


class PostgresServer:
    """`start()`, `stop()` (fast) or `crash()` (immediate: kill -9's effect on clients),
    `start()` again on the same port with the same data; `close()` removes it all."""

    def __init__(self, *, fsync: bool = False, args: Sequence[str] = ()) -> None:
        bindir = find_bin()
        if bindir is None:
            raise RuntimeError(unavailable() or "no PostgreSQL")
        self.bindir = bindir
        self.port = free_port()
        self._root = Path(tempfile.mkdtemp(prefix="pushsvc-pg-", dir="/tmp"))
        self._root.chmod(0o755)
        self.data = self._root / "data"
        # fsync off in tests (nothing here outlives the machine); the benchmark turns it on.
        self.args = ("-c", f"fsync={'on' if fsync else 'off'}", *args)
        self._proc: subprocess.Popen[bytes] | None = None
        self._initdb()

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _as_server_user(self, argv: list[str]) -> list[str]:
        if os.geteuid() != 0:
            return argv
        # setpriv execs the command itself (runuser stays its parent and does not pass every
        # signal on): the child is postgres, which a crash's SIGQUIT must reach.
        return ["setpriv", f"--reuid={_UNPRIVILEGED}", f"--regid={_GROUP}", "--clear-groups", *argv]

    def _initdb(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self._root, user=_UNPRIVILEGED)
        subprocess.run(
            self._as_server_user([
                f"{self.bindir}/initdb", "-D", str(self.data), "-U", "postgres",
                "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync",
            ]),
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120,
        )  # fmt: skip

    def start(self, timeout: float = 30.0) -> PostgresServer:
        if self._proc is not None:
            raise RuntimeError("already running")
        argv = self._as_server_user([
            f"{self.bindir}/postgres", "-D", str(self.data), "-p", str(self.port),
            "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self._root}",
            "-c", "max_connections=50", *self.args,
        ])  # fmt: skip
        log = (self._root / "postgres.log").open("ab")
        self._proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise RuntimeError(f"postgres exited: {self.log_tail()}")
            try:
                psycopg.connect(self.dsn, connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"postgres did not start: {self.log_tail()}") from None
                time.sleep(0.05)  # polling a starting server's port: nothing to await

    def stop(self, timeout: float = 30.0) -> None:
        """A fast shutdown: clients are disconnected, the data kept."""
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                terminate(proc, 1)

    def crash(self) -> None:
        """An immediate shutdown (what a crash or an OOM kill looks like to clients); the
        data is recovered from the WAL at the next start."""
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.send_signal(signal.SIGQUIT)
            proc.wait(30)

    def log_tail(self, lines: int = 20) -> str:
        path = self._root / "postgres.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._root, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
