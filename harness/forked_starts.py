"""pushsvc's serving commands started by fork from a process that imported them once.

A `python -m pushsvc serve` spends most of its first half-second of CPU importing gevent,
Flask, redis-py and pushsvc itself, and the suite starts some six hundred of them. A test
worker's `Forker` keeps a helper process (`harness/fork_helper.py`, one per
environment, see `_importable_env`) that has patched the standard library as
`pushsvc/__main__.py` does for the serving commands and imported pushsvc's server, and forks
each new server from it: the same code from the command line's parser on, with the test's
arguments, environment, working directory and standard error, in a process of its own that a
test can stop, kill -9 or pause like any other.

A start takes the usual `exec` instead when the fork could differ from it: another Python
option, a hook to run before exec (`preexec_fn`), another `src/`, or a fourth environment
(a variable read at import time would keep the helper's value, so environments that differ
in more than pushsvc's own settings get helpers of their own). `TEST_PUSHSVC_EXEC=1` takes it
for every start. What a fork cannot give: `/proc/PID/environ` and `cmdline` stay the
helper's, as the kernel keeps what was exec'd.

The helper relays each child's end: the child holds one end of a pipe that nothing else
holds, so the helper sees it close when the child dies, reaps it, and writes its wait status
and CPU time to the pipe the test reads (`ForkedProcess.poll`).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

# The commands that run patched (gevent): the only ones the helper's forks can run as they
# would run on their own.
from pushsvc.__main__ import SERVING, command_of

# Written by the helper for each ended child: its wait status and CPU seconds (user + system).
_END = struct.Struct("=id")  # fork_helper.END
_HELPER = Path(__file__).with_name("fork_helper.py")
_DISABLE = "TEST_PUSHSVC_EXEC"


def _importable_env(env: Mapping[str, str]) -> dict[str, str]:
    """What of an environment a module could read at import time: all but pushsvc's own
    settings, which it reads only when the command runs (pushsvc.config), and the test that
    pytest names in every environment it starts a process from."""
    return {
        k: v for k, v in env.items() if not k.startswith("PUSHSVC_") and k != "PYTEST_CURRENT_TEST"
    }


class ForkedProcess:
    """A child of the helper, with the part of `subprocess.Popen`'s interface the tests use.

    It is not this process's child, so its end comes through the helper (`_ended`), not
    `waitpid`; signals go to it directly."""

    def __init__(self, pid: int, stderr: IO[str], ended: int) -> None:
        self.pid = pid
        self.stderr: IO[str] | None = stderr
        self.returncode: int | None = None
        self.cpu_seconds = 0.0
        self._ended = ended
        self._lock = threading.Lock()

    def poll(self) -> int | None:
        return self._wait_end(0.0)

    def wait(self, timeout: float | None = None) -> int:
        code = self._wait_end(timeout)
        if code is None:
            raise subprocess.TimeoutExpired(f"pushsvc (pid {self.pid})", timeout or 0.0)
        return code

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            # As Popen's: the child may have ended since the poll, and the helper reaped
            # it before saying so (a test's kill after the child was killed another way).
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def _wait_end(self, timeout: float | None) -> int | None:
        # As Popen's: a poll while another thread waits answers at once.
        if not self._lock.acquire(blocking=timeout != 0.0):
            return self.returncode
        try:
            if self.returncode is not None:
                return self.returncode
            # poll, not select: a test holding a thousand streams has descriptors past select's
            # 1,024.
            poller = select.poll()
            poller.register(self._ended, select.POLLIN)
            if not poller.poll(None if timeout is None else max(0, int(timeout * 1000))):
                return None
            data = os.read(self._ended, _END.size)
            os.close(self._ended)
            if len(data) < _END.size:
                raise RuntimeError(f"the fork helper died before pushsvc (pid {self.pid}) ended")
            status, self.cpu_seconds = _END.unpack(data)
            Forker.children_cpu += self.cpu_seconds
            self.returncode = os.waitstatus_to_exitcode(status)
            return self.returncode
        finally:
            self._lock.release()


class Forker:
    """This process's helpers, each started at the first start it can serve: one per
    environment (at most a few; a test that sets a variable of its own gets an exec)."""

    children_cpu = 0.0
    """CPU seconds of every forked child that ended (they are the helper's children, so
    `RUSAGE_CHILDREN` of this process does not count them)."""
    forked = 0
    """How many starts were forks."""

    MAX_HELPERS = 3

    def __init__(self, src: str) -> None:
        self.src = src
        self._lock = threading.Lock()
        self._helpers: dict[frozenset[tuple[str, str]], _Helper] = {}

    def can_start(self, argv: Sequence[str], env: Mapping[str, str]) -> bool:
        """Whether `argv` (as `PushsvcProcess` builds it) would run in a fork as on its own."""
        if os.environ.get(_DISABLE) == "1" or env.get("PYTHONPATH") != self.src:
            return False
        if list(argv[:3]) != [sys.executable, "-m", "pushsvc"]:
            return False
        return command_of(argv[3:]) in SERVING

    def start(self, argv: Sequence[str], env: Mapping[str, str]) -> ForkedProcess | None:
        """`argv` forked from the helper for its environment; None when there are too many
        environments already (the caller then execs it)."""
        key = frozenset(_importable_env(env).items())
        with self._lock:
            helper = self._helpers.get(key)
            if helper is None:
                if len(self._helpers) >= self.MAX_HELPERS:
                    return None
                helper = self._helpers[key] = _Helper(_importable_env(env))
        started = helper.start(argv[3:], env)
        Forker.forked += 1
        return started

    def stop(self) -> None:
        with self._lock:
            helpers = list(self._helpers.values())
            self._helpers.clear()
        for helper in helpers:
            helper.stop()


class _Helper:
    """One `fork_helper.py` process and its control socket."""

    def __init__(self, env: Mapping[str, str]) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._lock = threading.Lock()
        self._process = subprocess.Popen(
            [sys.executable, str(_HELPER), str(theirs.fileno())],
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            pass_fds=[theirs.fileno()],
        )
        theirs.close()
        self._control = ours

    def start(self, args: Sequence[str], env: Mapping[str, str]) -> ForkedProcess:
        read_err, write_err = os.pipe()
        read_end, write_end = os.pipe()
        request = {"args": list(args), "env": dict(env), "cwd": os.getcwd()}
        with self._lock:
            try:
                socket.send_fds(
                    self._control, [json.dumps(request).encode()], [write_err, write_end]
                )
                reply = self._control.recv(64)
            finally:
                os.close(write_err)
                os.close(write_end)
        if not reply:
            os.close(read_err)
            os.close(read_end)
            raise RuntimeError(f"the fork helper ended (exit code {self._process.poll()})")
        return ForkedProcess(int(reply), os.fdopen(read_err, "r"), read_end)

    def stop(self) -> None:
        self._control.close()  # the helper ends when its control socket closes
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
