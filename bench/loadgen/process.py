"""What both load-generator processes share: JSON lines out, the event loop to run on, server
addresses, and enough file descriptors."""

from __future__ import annotations

import asyncio
import resource
import sys
from collections.abc import Coroutine
from typing import Any
from urllib.parse import urlsplit

import orjson


def emit(record: dict[str, object]) -> None:
    """One JSON record per line on stdout, flushed: the parent reads them as they come."""
    sys.stdout.buffer.write(orjson.dumps(record) + b"\n")
    sys.stdout.flush()


def run(coroutine: Coroutine[Any, Any, object], *, uvloop_allowed: bool) -> None:
    """Run on uvloop when it is installed and allowed (cheaper per socket), else asyncio."""
    if uvloop_allowed:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            uvloop.run(coroutine)
            return
    asyncio.run(coroutine)


def http_address(url: str) -> tuple[str, int, str]:
    """(host, port, path with query) of an http:// URL."""
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname is None:
        raise ValueError(f"{url!r}: only http:// URLs")
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    return parts.hostname, parts.port or 80, path or "/"


def raise_fd_limit() -> int:
    """Lift the soft open-files limit to the hard one (10,000 sockets need it); the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard
