"""One server per data directory: `serve --data-dir DIR` holds a lock on `DIR/pushsvc.lock`
for its life, and a second process given the same directory stops at start with one line
naming the holder (its pid and address, which the holder writes into the file).

Two servers on one directory would each start a private Redis appending to the same files,
and a later start would read both histories interleaved. The lock is `flock` on an open file,
so the kernel drops it when the holder exits however it exits (`kill -9` included): there is
no stale lock to clean up, and the file left behind means nothing without its lock. The
private redis-server inherits the same open file, so the directory stays held until the Redis
writing into it has exited too, not only its supervisor.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from pushsvc.errors import DataDirInUse

LOCK_FILE = "pushsvc.lock"
_HOLDER_BYTES = 512  # the holder's line: a pid and an address


class DataDirLock:
    """`take(data_dir, address)`, `fd` (to hand to a child that must hold it too), `release()`."""

    def __init__(self, fd: int, path: Path) -> None:
        self.fd = fd
        self.path = path

    @classmethod
    def take(cls, data_dir: Path, address: str) -> DataDirLock:
        """Lock `data_dir` for this process, serving at `address`; DataDirInUse when another
        process holds it."""
        path = data_dir / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, _HOLDER_BYTES, 0).decode(errors="replace").strip()
            os.close(fd)
            raise DataDirInUse.held(str(data_dir), holder) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}, {address}\n".encode(), 0)
        return cls(fd, path)

    def release(self) -> None:
        """Unlock (what the process's exit does anyway): the next server may start."""
        with contextlib.suppress(OSError):
            os.ftruncate(self.fd, 0)
        os.close(self.fd)
