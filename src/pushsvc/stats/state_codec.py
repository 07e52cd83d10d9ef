"""Bytes of a window set's state (``to_state``/``from_state``): a writer and a reader.

Small and explicit on purpose: the state goes to Redis and to ``--data-dir`` and must read
back on another process, another Python and another byte order, so nothing here depends on
``pickle``/``marshal`` (whose formats are Python's to change) or on the native byte order.

* ``uint``/``sint``: LEB128 varints (``sint`` zigzag-encoded), of any size;
* ``big``: a signed integer of any size, its byte length as a varint then the bytes;
* ``text``: a string's UTF-8 bytes after their length (a varint);
* ``double``: the 8 bytes of an IEEE double, little-endian (bit-exact, ``-0.0`` included);
* ``counts``: an array of non-negative integers in the narrowest of 1, 2, 4 or 8 bytes each,
  copied in and out at C speed (``array.tobytes``);
* ``doubles``: an array of doubles, little-endian, after their byte length (a blob);
* ``little_endian``: an array of numbers in the byte order a state stores (a blob's bytes).

A truncated or malformed input raises ValueError, never IndexError or struct.error.
"""

from __future__ import annotations

import struct
import sys
from array import array
from typing import TypeVar

__all__ = ["StateReader", "StateWriter", "little_endian"]

_DOUBLE = struct.Struct("<d")
# Unsigned typecodes from narrow to wide, with the largest value each holds.
_WIDTHS: tuple[tuple[str, int], ...] = (("B", 0xFF), ("H", 0xFFFF), ("I", 0xFFFF_FFFF))
_WIDE = "Q"
_BIG_ENDIAN = sys.byteorder == "big"
_Item = TypeVar("_Item", int, float)


def little_endian(values: array[_Item]) -> array[_Item]:
    """`values` in little-endian order, both ways (a copy on a big-endian machine): an
    array's `tobytes` as a state stores it, or one read back with `frombytes`."""
    if not _BIG_ENDIAN:
        return values
    swapped = array(values.typecode, values)
    swapped.byteswap()
    return swapped


class StateWriter:
    """Appends fields to one ``bytearray``; ``bytes()`` is the result."""

    __slots__ = ("_out",)

    def __init__(self) -> None:
        self._out = bytearray()

    def __bytes__(self) -> bytes:
        return bytes(self._out)

    def uint(self, value: int) -> None:
        if value < 0:
            raise ValueError(f"uint field must be >= 0, got {value}")
        out = self._out
        while value >= 0x80:
            out.append((value & 0x7F) | 0x80)
            value >>= 7
        out.append(value)

    def sint(self, value: int) -> None:
        self.uint(value << 1 if value >= 0 else ((-value) << 1) - 1)

    def big(self, value: int) -> None:
        size = (value.bit_length() + 8) // 8  # room for the sign bit
        self.uint(size)
        self._out += value.to_bytes(size, "little", signed=True)

    def double(self, value: float) -> None:
        self._out += _DOUBLE.pack(value)

    def text(self, value: str) -> None:
        self.blob(value.encode())

    def blob(self, data: bytes) -> None:
        """Bytes as they are, after their length."""
        self.uint(len(data))
        self._out += data

    def doubles(self, values: array[float]) -> None:
        """An array of doubles, as a blob of their little-endian bytes."""
        self.blob(little_endian(values).tobytes())

    def counts(self, values: array[int]) -> None:
        """Non-negative integers, each in the narrowest width that holds the largest."""
        top = max(values, default=0)
        typecode = next((code for code, limit in _WIDTHS if top <= limit), _WIDE)
        packed = array(_sized(typecode), values)
        if _BIG_ENDIAN:
            packed.byteswap()
        self._out.append(ord(typecode))
        self.uint(len(values))
        self._out += packed.tobytes()


def _sized(typecode: str) -> str:
    """The local array typecode with the byte size ``typecode`` stands for (B1 H2 I4 Q8)."""
    want = {"B": 1, "H": 2, "I": 4, "Q": 8}[typecode]
    for local in ("B", "H", "I", "L", "Q"):
        if array(local).itemsize == want:
            return local
    raise RuntimeError(f"no array typecode of {want} bytes here")  # pragma: no cover


class StateReader:
    """Reads back what a ``StateWriter`` wrote, in the same order; ``done()`` checks the end."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self._pos = 0

    def _take(self, size: int) -> memoryview:
        end = self._pos + size
        if size < 0 or end > len(self._data):
            raise ValueError("state is truncated")
        chunk = self._data[self._pos : end]
        self._pos = end
        return chunk

    def uint(self) -> int:
        data, pos = self._data, self._pos
        value = shift = 0
        while True:
            if pos >= len(data):
                raise ValueError("state is truncated")
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                break
            shift += 7
        self._pos = pos
        return value

    def sint(self) -> int:
        z = self.uint()
        return z >> 1 if not z & 1 else -((z + 1) >> 1)

    def big(self) -> int:
        return int.from_bytes(self._take(self.uint()), "little", signed=True)

    def double(self) -> float:
        value: float = _DOUBLE.unpack(self._take(8))[0]
        return value

    def text(self) -> str:
        try:
            return self.blob().decode()
        except UnicodeDecodeError:
            raise ValueError("state holds text that is not UTF-8") from None

    def blob(self) -> bytes:
        return bytes(self._take(self.uint()))

    def doubles(self) -> array[float]:
        """What ``StateWriter.doubles`` wrote."""
        raw = self.blob()
        if len(raw) % 8:
            raise ValueError("state holds bytes that are not whole doubles")
        values = array("d")
        values.frombytes(raw)
        return little_endian(values)

    def counts(self) -> array[int]:
        """The integers as a signed 64-bit ``array('q')`` (what the sketch stores keep)."""
        typecode = chr(self._take(1)[0])
        if typecode not in ("B", "H", "I", "Q"):
            raise ValueError(f"state has an unknown counts width {typecode!r}")
        local = array(_sized(typecode))
        length = self.uint()
        local.frombytes(self._take(length * local.itemsize))
        if _BIG_ENDIAN:
            local.byteswap()
        if typecode == "Q" and any(v >= 1 << 63 for v in local):
            raise ValueError("state holds a count beyond 2**63")
        return array("q", local)

    def done(self) -> None:
        if self._pos != len(self._data):
            raise ValueError(f"state has {len(self._data) - self._pos} unread bytes")
