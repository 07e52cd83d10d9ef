"""What a compiled URL pattern costs in bytes, measured as it is compiled.

A URL pattern compiles to a regular expression per URL component, on Rust's `regex` crate,
whose size depends on what the pattern's classes span far more than on its length: a negated
class or a `.` spans all of Unicode and compiles to thousands of byte ranges, so two patterns
of equal length differ by orders of magnitude (docs/performance.md, "Mercure"). Modelling
that from the text would have to follow the engine's compiler; measuring it does not. So
the cost of a pattern is read off the C heap: the bytes in use (glibc's `mallinfo2`, the
process's whole heap, Rust's allocations included) just before and just after the
compilation, which nothing else interleaves in a gevent process (the compilation does not
yield). Where `mallinfo2` is missing (another C library), every pattern is charged the most
one may cost, so the bounds still hold, with fewer patterns.

Evaluation grows the engine's caches too (its lazy automata, per pattern): the charge adds a
flat allowance for them (`EVALUATION_BYTES`), which covers what evaluating against topics
meant to grow them was measured to add (`docs/performance.md`, "Mercure").
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

MAX_COMPILED_BYTES = 512 << 10
"""The most one pattern may take compiled: a pattern that takes more is refused (a `400`)."""
EVALUATION_BYTES = 256 << 10
"""What evaluations may add to a compiled pattern (its engine's caches), charged with it."""


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _reader() -> Callable[[], int] | None:
    try:
        mallinfo2 = ctypes.CDLL(None).mallinfo2
    except (AttributeError, OSError):
        return None
    mallinfo2.restype = _MallInfo2
    mallinfo2.argtypes = []

    def in_use() -> int:
        info = mallinfo2()
        return int(info.uordblks) + int(info.hblkhd)  # small chunks in use, and mmapped ones

    return in_use


_in_use = _reader()


def measured(make: Callable[[], T]) -> tuple[T, int | None]:
    """`make()` and the heap bytes it kept (None where the heap cannot be read)."""
    if _in_use is None:
        return make(), None
    before = _in_use()
    made = make()
    return made, max(0, _in_use() - before)


def charge(compiled_bytes: int | None) -> int:
    """What a pattern of `compiled_bytes` is charged against the bounds while it lives: its
    compiled size and its evaluations' allowance (the most a pattern may take, unmeasured)."""
    size = MAX_COMPILED_BYTES if compiled_bytes is None else compiled_bytes
    return size + EVALUATION_BYTES
