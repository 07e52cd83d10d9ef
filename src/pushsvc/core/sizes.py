"""Sizes in bytes as people write them (`1048576`, `512KiB`, `8MiB`, `1GiB`) and their labels.

Only the binary units (IEC: 1 KiB = 1024 bytes): `1m` is a megabyte to nginx and a million
bytes to Redis, so a bound given in a unit pushsvc would read one way and a reader another
is refused, not guessed.
"""

from __future__ import annotations

import re

__all__ = ["parse_size_bytes", "size_label"]

_SIZE = re.compile(r"(\d+)\s*(B|KiB|MiB|GiB|TiB)?")
_UNIT_BYTES = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}


def parse_size_bytes(text: str) -> int:
    """`1048576`, `512KiB`, `8MiB`, `1GiB` in bytes; a bare number means bytes. ValueError
    names the text when it is not a size."""
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a size (use bytes or KiB, MiB, GiB: 1048576, 8MiB)")
    number, unit = match.groups()
    return int(number) * _UNIT_BYTES[unit or "B"]


def size_label(size: int) -> str:
    """The shortest exact label, in the largest unit that divides it: 8388608 → '8MiB',
    1024 → '1KiB', 1536 → '1536' (bytes)."""
    for unit in ("TiB", "GiB", "MiB", "KiB"):
        if size and size % _UNIT_BYTES[unit] == 0:
            return f"{size // _UNIT_BYTES[unit]}{unit}"
    return str(size)
