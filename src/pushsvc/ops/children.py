"""Child processes: ones that end with their parent, even when the parent is killed with
SIGKILL, and stopping one politely, then not."""

from __future__ import annotations

import ctypes
import ctypes.util
import signal
import subprocess
import sys
from typing import Any

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In a child before exec (`preexec_fn`): get SIGTERM when the parent dies (Linux), so no
    worker or private redis-server outlives a supervisor that was killed."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def terminate(proc: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if `proc` has not exited within `timeout`; reaped either way."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
