"""What a stand-alone benchmark needs (`bench.post_cost`): a process started from any tree's
`src/` with the standard library only, nothing from tests/ (the tree measured may predate
them), its log kept in a file until it says it is ready."""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

SRC = Path(__file__).resolve().parents[1] / "src"
LISTENING = re.compile(r"listening on http://[^:]+:(\d+)")


def pushsvc_env(src: Path) -> dict[str, str]:
    """This environment less its PUSHSVC_ settings, running pushsvc from `src`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUSHSVC_")}
    env.update(PYTHONPATH=str(src), PYTHONUNBUFFERED="1")
    return env


@contextmanager
def started(
    argv: Sequence[str], env: dict[str, str], ready: re.Pattern[str], *, timeout: float = 60
) -> Iterator[tuple[subprocess.Popen[str], re.Match[str]]]:
    """`argv` running until the block ends, once its log matches `ready` within `timeout`
    seconds (the match is yielded with the process). The log goes to a temporary file: a pipe
    nobody reads would fill up and stop it."""
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + timeout
            while (found := ready.search(_read(log))) is None:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{list(argv[:4])} did not start: {_read(log)[-2000:]}")
                time.sleep(0.05)  # a process's start, polled: nothing to wait on
            yield proc, found
        finally:
            proc.terminate()
            proc.wait(timeout)


def _read(log: IO[str]) -> str:
    log.seek(0)
    return log.read()
