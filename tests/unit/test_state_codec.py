"""The state bytes: every field reads back as written, and damage is a ValueError."""

from __future__ import annotations

import math
import struct
from array import array

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pushsvc.stats.state_codec import StateReader, StateWriter

ints = st.integers(min_value=-(2**300), max_value=2**300)
counts = st.lists(st.integers(0, 2**63 - 1), max_size=50)


doubles = st.lists(st.floats(allow_nan=False), max_size=20)


@given(
    u=st.integers(0, 2**200), s=ints, b=ints, d=st.floats(allow_nan=False), c=counts, f=doubles,
)  # fmt: skip
def test_fields_read_back(u: int, s: int, b: int, d: float, c: list[int], f: list[float]) -> None:
    out = StateWriter()
    out.uint(u)
    out.sint(s)
    out.big(b)
    out.double(d)
    out.counts(array("q", c))
    out.doubles(array("d", f))
    data = bytes(out)
    assert data.endswith(struct.pack(f"<{len(f)}d", *f))  # little-endian, whatever the machine
    source = StateReader(data)
    got = (
        source.uint(), source.sint(), source.big(), source.double(), list(source.counts()),
        list(source.doubles()),
    )  # fmt: skip
    source.done()
    assert got == (u, s, b, d, c, f)
    assert math.copysign(1, got[3]) == math.copysign(1, d)  # -0.0 stays -0.0
    for cut in range(len(data)):
        with pytest.raises(ValueError):
            partial = StateReader(data[:cut])
            partial.uint(), partial.sint(), partial.big(), partial.double(), partial.counts()
            partial.doubles()
            partial.done()


@pytest.mark.parametrize(("top", "width"), [(255, 1), (256, 2), (65_536, 4), (2**32, 8)])
def test_counts_take_the_narrowest_width(top: int, width: int) -> None:
    out = StateWriter()
    out.counts(array("q", [0, top, 1]))
    assert len(bytes(out)) == 1 + 1 + 3 * width  # typecode, length, items
    assert list(StateReader(bytes(out)).counts()) == [0, top, 1]


def test_damage_is_a_value_error() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        StateWriter().uint(-1)
    with pytest.raises(ValueError, match="width"):
        StateReader(b"x\x01\x00").counts()
    with pytest.raises(ValueError, match="whole doubles"):
        StateReader(b"\x07" + bytes(7)).doubles()
    with pytest.raises(ValueError, match="2\\*\\*63"):
        StateReader(b"Q\x01" + struct.pack("<Q", 2**63)).counts()
    source = StateReader(b"\x00\x00")
    assert source.uint() == 0
    with pytest.raises(ValueError, match="unread"):
        source.done()
