"""The C subscribers (`sse_clients.c`): found or compiled on first use, never committed.

`binary()` compiles the source with the system's `cc -O2` into a cache directory outside the
repository (`$XDG_CACHE_HOME/pushsvc-bench`, else `~/.cache/pushsvc-bench`), under a name
keyed by the source's hash: an edited source is compiled again, an unchanged one never.
Concurrent first uses are safe (each compiles to a temporary name and renames it in place).

The program speaks to a driver as `python -m bench.loadgen --mode deliveries` does (stdin
lines, JSON records on stdout; its header comment says how), for pushsvc's update streams, or
with `--messages` any server's message stream, and does not publish: a driver pairs it with a
Python publisher.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

SOURCE = Path(__file__).with_name("sse_clients.c")


class CompilerMissing(RuntimeError):
    """No C compiler on this machine: the C client cannot be built."""


def compiler() -> str | None:
    """The system C compiler's path, or None."""
    return shutil.which("cc") or shutil.which("gcc")


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pushsvc-bench"


def binary() -> Path:
    """The compiled program for the current source; compiled now if it is not cached."""
    source = SOURCE.read_bytes()
    target = cache_dir() / f"sse_clients-{hashlib.sha256(source).hexdigest()[:16]}"
    if target.exists():
        return target
    cc = compiler()
    if cc is None:
        raise CompilerMissing("no C compiler (cc or gcc) on PATH")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    os.close(fd)
    try:
        done = subprocess.run(
            [cc, "-O2", "-Wall", "-o", partial, str(SOURCE), "-lm"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"{cc} failed on {SOURCE.name}:\n{done.stderr[-3000:]}")
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return target
