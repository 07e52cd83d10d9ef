"""Child processes that end with their parent, even when the parent is killed with SIGKILL."""

from __future__ import annotations

import ctypes
import ctypes.util
import signal
import sys

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In a child before exec (`preexec_fn`): get SIGTERM when the parent dies (Linux), so no
    worker or private redis-server outlives a supervisor that was killed."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
