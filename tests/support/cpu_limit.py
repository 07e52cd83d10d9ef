"""A CPU-time limit for the tests that start nothing (the unit tests and the simulation).

pytest-timeout's limit is wall-clock time. These tests only compute, and they run on the
niced filler worker (tests/conftest.py, `_ByFileButPure`) beside four busy ones: on a loaded
2-core machine a slice of the simulation that needs 20 s of CPU took over 600 s of wall
clock, and failed a passing suite (2026-11-27). What such a test can do wrong is loop: that
costs CPU, so the limit is on the CPU the process spends, and the wall-clock limit stays,
several times longer, for a test that blocks.

A thread looks at the process's CPU time every `POLL_S` and signals the test's thread once
it is spent. Not a CPU timer (`setitimer(ITIMER_VIRTUAL)`): while one was armed, this
machine's kernel gave `time.process_time()` a coarser grain, and the benchmarks' smoke tests
measured 0 s."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

import pytest

WALL_PER_CPU = 5
"""A computing test's wall-clock limit, in multiples of its CPU limit."""

POLL_S = 0.5

_SIGNAL = signal.SIGUSR2


def limits(item: pytest.Item) -> tuple[float, float] | None:
    """(CPU seconds, wall-clock seconds) for a test whose pytest-timeout limit is the CPU
    limit; None when it has no limit."""
    marker = item.get_closest_marker("timeout")
    if marker is not None and marker.args:
        seconds = float(marker.args[0])
    else:
        seconds = float(item.config.getini("timeout") or 0)
    if seconds <= 0:
        return None
    return seconds, seconds * WALL_PER_CPU


@contextmanager
def cpu_limited(seconds: float) -> Iterator[None]:
    """Fails what runs inside (on this thread) once the process has spent `seconds` of CPU
    since it began."""
    started = time.process_time()
    over = threading.Event()
    done = threading.Event()

    def watch() -> None:
        while not done.wait(POLL_S):
            if time.process_time() - started > seconds:
                over.set()
                signal.pthread_kill(test_thread, _SIGNAL)
                return

    def out_of_cpu(signum: int, frame: FrameType | None) -> None:
        # A signal that comes late, once `done`, is let go: the test it was for is over.
        if over.is_set() and not done.is_set():
            pytest.fail(f"Timeout: more than {seconds:g} s of CPU", pytrace=True)

    test_thread = threading.get_ident()
    previous = signal.signal(_SIGNAL, out_of_cpu)
    watcher = threading.Thread(target=watch, name="cpu-limit", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()
        signal.signal(_SIGNAL, previous)
