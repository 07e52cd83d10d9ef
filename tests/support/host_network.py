"""Chromium and Docker, apart on one machine: a lock between pages and network changes.

When a network interface comes or goes, Chromium's network change notifier aborts the page's
requests in flight, loopback ones too (`net::ERR_NETWORK_CHANGED`), and a browser test fails
on a stream or a fetch it never asked to lose. Docker adds and removes a veth interface for
every container a compose project starts or stops, and the Docker tests run beside the
browser tests on other workers. So a browser test holds this lock shared for its whole run,
and a compose command that starts or stops containers holds it exclusively, from before the
command until Chromium has had its say: Linux's notifier reports an address change after up
to 2 s (`NetworkChangeNotifierLinux`'s delays), with no event a test could wait for.

A fair reader-writer lock over two files (`flock`): a turnstile that every taker passes
through, so that a waiting writer is not starved by a stream of overlapping readers.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["CHROMIUM_SETTLE_S", "changing_the_network", "using_the_network"]

CHROMIUM_SETTLE_S = 2.5
"""How long after an interface change Chromium may still abort requests for it."""
_DIR = Path(tempfile.gettempdir())


@contextlib.contextmanager
def using_the_network() -> Iterator[None]:
    """Held shared, by a browser test: no interface comes or goes meanwhile."""
    with _locked("turnstile", fcntl.LOCK_EX):
        lock = _take("network", fcntl.LOCK_SH)
    try:
        yield
    finally:
        _release(lock)


@contextlib.contextmanager
def changing_the_network() -> Iterator[None]:
    """Held exclusively, by a command that adds or removes interfaces, until Chromium has
    seen the change."""
    with _locked("turnstile", fcntl.LOCK_EX), _locked("network", fcntl.LOCK_EX):
        try:
            yield
        finally:
            time.sleep(CHROMIUM_SETTLE_S)


@contextlib.contextmanager
def _locked(name: str, mode: int) -> Iterator[None]:
    lock = _take(name, mode)
    try:
        yield
    finally:
        _release(lock)


def _take(name: str, mode: int) -> int:
    fd = _open(name)
    fcntl.flock(fd, mode)
    return fd


def _release(fd: int) -> None:
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def _open(name: str) -> int:
    return os.open(_DIR / f"pushsvc-test-{name}.lock", os.O_RDWR | os.O_CREAT, 0o666)
