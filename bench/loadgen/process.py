"""What both load-generator processes share: JSON lines out, and the event loop to run on."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from typing import Any

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
