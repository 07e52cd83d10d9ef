"""Giving memory back to the system after a burst: glibc's `malloc_trim`, called once the
bytes a burst held have been let go.

CPython hands objects past 512 bytes to the C allocator. glibc serves blocks under its
mmap threshold from its heaps, and raises that threshold each time a large block is freed,
so a burst of large buffers (a stream's rendered writes, a replay's pages) that is freed
again leaves its pages in glibc's free lists: the process's RSS stays at its peak after the
streams that held them are gone. `malloc_trim(0)` returns every whole free page of every
heap. It walks the heaps, so its callers call it only after a large release (the hub's
sweeper, once streams that ended have let go of enough pending bytes), never per request.

Where the C library is not glibc (musl, macOS) there is no such call and `trim` does
nothing: those allocators return memory by themselves or not at all.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable


def _malloc_trim() -> Callable[[int], int] | None:
    # The symbols the process has loaded already (libc's among them): no library is looked
    # for, which `ctypes.util.find_library` does by running `ldconfig` in a child process.
    try:
        call = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    call.argtypes = [ctypes.c_size_t]
    call.restype = ctypes.c_int
    return call


_TRIM = _malloc_trim()


def trim() -> bool:
    """Return the free pages of the C heap to the system; whether any were (False where
    the C library has no `malloc_trim`)."""
    return bool(_TRIM(0)) if _TRIM is not None else False
