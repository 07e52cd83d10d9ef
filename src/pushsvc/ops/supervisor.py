"""`pushsvc serve --workers N` / `--data-dir DIR`: every core of one machine, one command.

The supervisor starts a private redis-server when no Redis URL is given (`private_redis.py`),
then its workers as child processes: N `pushsvc web` processes sharing one port (each binds
it with SO_REUSEPORT, so the kernel spreads connections over them) and one
`pushsvc aggregate`; with one worker, a single `pushsvc serve` on that Redis. It restarts a
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
from pushsvc.errors import CannotListen
from pushsvc.ops.children import die_with_parent
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
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    restarts: int = field(default=0)

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, env=self.env, preexec_fn=die_with_parent)
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
        self._reserved: socket.socket | None = None
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
        port = self._reserve_port()  # first: a port in use stops us with one line
        open_files.say_if_lowered()
        try:
            url = self.settings.redis_url
            if url is None:
                data_dir = self.settings.data_dir
                self.redis = PrivateRedis(Path(data_dir) if data_dir else None).start()
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

    def _reserve_port(self) -> int:
        """Bind the port (SO_REUSEPORT, not listening) so that port 0 becomes one fixed port
        every worker, and every restarted worker, binds too. SO_REUSEADDR as the workers'
        own sockets (`server.listen`): a server stopped a moment ago leaves its side of each
        connection it closed in TIME-WAIT for a minute, which is no server listening."""
        sock = socket.socket(socket.AF_INET6 if ":" in self.settings.host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind((self.settings.host, self.settings.port))
        except OSError as exc:
            sock.close()
            raise CannotListen.on(self.settings.host, self.settings.port, exc) from None
        self._reserved = sock
        return int(sock.getsockname()[1])

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
            return [_Child("serve", [*command, "serve", "--reuse-port"], env)]
        webs = [
            _Child("web", [*command, "web", "--reuse-port"], env)
            for _ in range(self.settings.workers)
        ]
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
        if self._reserved is not None:
            self._reserved.close()
        if self._metrics_dir is not None:
            shutil.rmtree(self._metrics_dir, ignore_errors=True)
        log.warning("pushsvc serve stopped")
