"""`pushsvc serve --workers N` / `--data-dir DIR`: every core of one machine, one command.

The supervisor starts a private redis-server when no Redis URL is given (`private_redis.py`),
then its workers as child processes: N `pushsvc web` processes sharing one port (it opens
their sockets itself, SO_REUSEPORT, so the kernel spreads connections over them, and refuses a
port another server listens on: `listeners.py`) and one `pushsvc aggregate`; with one worker,
a single `pushsvc serve` on that Redis. With a data directory it first locks it
(`data_dir_lock.py`): a second server on the same directory stops with one line. It restarts a
child that dies, and on SIGTERM or SIGINT stops the children, then Redis (which syncs its
append-only file in the data directory), and exits. Children get SIGTERM if the supervisor
itself is killed (`children.py`).

The children share their metrics in a private directory (`multiprocess_metrics`), so that
whichever web worker answers `/metrics` answers for all of them, the aggregator included; the
supervisor removes a dead child's gauges there before starting it again.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pushsvc.config import Settings
from pushsvc.ops.children import die_with_parent
from pushsvc.ops.data_dir_lock import DataDirLock
from pushsvc.ops.listeners import shared_listeners
from pushsvc.ops.multiprocess_metrics import DIR_VARIABLE
from pushsvc.ops.open_files import OpenFiles
from pushsvc.ops.private_redis import PrivateRedis

log = logging.getLogger(__name__)

_POLL_S = 0.2
_QUICK_DEATH_S = 5.0  # a child that dies sooner than this is restarted after a pause
_STOP_TIMEOUT_S = 10.0


@dataclass
class _Child:
    role: str
    argv: list[str]
    env: dict[str, str]
    listener: socket.socket | None = None
    """Its listening socket (a web worker's), opened by the supervisor: the child inherits it,
    a restarted one gets it back."""
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    restarts: int = field(default=0)

    def start(self) -> None:
        argv, fds = self.argv, tuple[int, ...]()
        if self.listener is not None:
            fd = self.listener.fileno()
            argv, fds = [*argv, "--listen-fd", str(fd)], (fd,)
        self.proc = subprocess.Popen(argv, env=self.env, pass_fds=fds, preexec_fn=die_with_parent)
        self.started = time.monotonic()

    @property
    def exited(self) -> int | None:
        return None if self.proc is None else self.proc.poll()


def _check_redis(url: str) -> None:
    """UnsafeRedis when the Redis at `url` evicts (redis_guard.check_at_start)."""
    from pushsvc.broker.redis import RedisBroker
    from pushsvc.broker.redis.guard import check_at_start

    broker = RedisBroker(url)
    try:
        check_at_start(broker)
    finally:
        broker.close()


class Supervisor:
    def __init__(self, settings: Settings, given: Mapping[str, str]) -> None:
        """`given`: the settings as the user gave them (variables and flags, by variable name),
        handed on to every child unchanged."""
        self.settings = settings
        self.given = dict(given)
        self.redis: PrivateRedis | None = None
        self.children: list[_Child] = []
        self._stopping = False
        self._listeners: list[socket.socket] = []
        self._lock: DataDirLock | None = None
        self._metrics_dir: str | None = None

    def run(self) -> int:
        if self.settings.redis_url is not None:
            # Before any child: each would refuse the Redis, and be restarted for ever.
            _check_redis(self.settings.redis_url)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._stop)
        # Here, once: the children inherit the raised limit, and the cap is handed to them
        # (`_plan`), so no worker says again that it was lowered.
        open_files = OpenFiles.at_start(self.settings)
        self.settings = open_files.settings
        # First: a port in use, or a data directory another server holds, stops us with one
        # line, before anything starts.
        port = self._listen()
        try:
            self._lock_data_dir(port)
        except BaseException:
            self._close_listeners()
            raise
        open_files.say_if_lowered()
        try:
            url = self.settings.redis_url
            if url is None:
                data_dir = self.settings.data_dir
                held = () if self._lock is None else (self._lock.fd,)
                self.redis = PrivateRedis(Path(data_dir) if data_dir else None, held).start()
                url = self.redis.url
                log.info("private redis-server %s (%s)", self.redis.binary, self.redis.socket)
            # Fresh each start: another run's files would add its counts to this one's.
            self._metrics_dir = tempfile.mkdtemp(prefix="pushsvc-metrics-")
            self.children = self._plan(url, port)
            for child in self.children:
                child.start()
            log.warning(
                "pushsvc serve: %d worker(s) on port %d, %s",
                self.settings.workers,
                port,
                "with an aggregator" if self.settings.workers > 1 else "each aggregating",
            )
            while not self._stopping:
                self._watch()
                time.sleep(_POLL_S)
            return 0
        finally:
            self._shutdown()

    def _stop(self, signum: int, frame: object) -> None:
        self._stopping = True

    def _listen(self) -> int:
        """Open every web worker's listening socket on the port (port 0: one port the kernel
        picks, for them all), or CannotListen when another server listens there; the port."""
        host = self.settings.host
        self._listeners = shared_listeners(host, self.settings.port, self.settings.workers)
        return int(self._listeners[0].getsockname()[1])

    def _close_listeners(self) -> None:
        for sock in self._listeners:
            sock.close()
        self._listeners = []

    def _lock_data_dir(self, port: int) -> None:
        """Hold the data directory for this server's life (DataDirInUse when another
        holds it), naming this server in it."""
        if self.settings.data_dir is None:
            return
        scheme = "http" if self.settings.certfile is None else "https"
        address = f"{scheme}://{self.settings.host}:{port}"
        self._lock = DataDirLock.take(Path(self.settings.data_dir), address)

    def _plan(self, url: str, port: int) -> list[_Child]:
        env = {
            **os.environ,
            **self.given,
            "PUSHSVC_REDIS_URL": url,
            "PUSHSVC_PORT": str(port),
            "PUSHSVC_WORKERS": "1",
            "PUSHSVC_DATA_DIR": "",
            "PUSHSVC_METRICS_PORT": "",  # the web workers' /metrics answers for the aggregator
            "PUSHSVC_MAX_STREAMS": str(self.settings.max_streams),
        }
        if self._metrics_dir is not None:
            env[DIR_VARIABLE] = self._metrics_dir
        command = [sys.executable, "-m", "pushsvc"]
        if self.settings.workers == 1:
            return [_Child("serve", [*command, "serve"], env, self._listeners[0])]
        webs = [_Child("web", [*command, "web"], env, sock) for sock in self._listeners]
        return [*webs, _Child("aggregate", [*command, "aggregate"], env)]

    def _watch(self) -> None:
        if self.redis is not None and not self.redis.alive:
            log.error("the private redis-server exited; starting it again")
            self.redis.start()
        for child in self.children:
            code = child.exited
            if code is None:
                continue
            quick = time.monotonic() - child.started < _QUICK_DEATH_S
            log.error("pushsvc %s exited with %s; starting it again", child.role, code)
            self._forget_gauges(child)
            if quick:
                time.sleep(1.0)  # do not spin on a child that cannot start
            child.restarts += 1
            child.start()

    def _forget_gauges(self, child: _Child) -> None:
        """A dead child's gauges (its streams, its partitions) leave the sum; its counters stay
        in it, so that they never go backwards."""
        if self._metrics_dir is not None and child.proc is not None:
            from prometheus_client.multiprocess import mark_process_dead

            mark_process_dead(child.proc.pid, self._metrics_dir)  # type: ignore[no-untyped-call]

    def _shutdown(self) -> None:
        running = [c for c in self.children if c.proc is not None and c.exited is None]
        for child in running:
            assert child.proc is not None
            child.proc.terminate()
        deadline = time.monotonic() + _STOP_TIMEOUT_S
        for child in running:
            assert child.proc is not None
            try:
                child.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.proc.kill()
                child.proc.wait()
        if self.redis is not None:
            self.redis.close()
        self._close_listeners()
        if self._lock is not None:
            self._lock.release()
        if self._metrics_dir is not None:
            shutil.rmtree(self._metrics_dir, ignore_errors=True)
        log.warning("pushsvc serve stopped")
