"""Durations as people write them (`500ms`, `10s`, `1m`, `1h`, `7d`) and their labels."""

from __future__ import annotations

import re

__all__ = ["duration_label", "parse_duration_us"]

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(us|ms|s|m|h|d)?")
_UNIT_US = {
    "us": 1,
    "ms": 1_000,
    "s": 1_000_000,
    "m": 60_000_000,
    "h": 3_600_000_000,
    "d": 86_400_000_000,
}


def parse_duration_us(text: str) -> int:
    """`500ms`, `10s`, `1m`, `1h`, `7d`, `0` in integer microseconds; a bare number means
    seconds. ValueError names the text when it is not a duration."""
    match = _DURATION.fullmatch(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a duration (use e.g. 500ms, 10s, 1m, 1h, 7d)")
    number, unit = match.groups()
    return round(float(number) * _UNIT_US[unit or "s"])


def duration_label(us: int) -> str:
    """The shortest exact label: 10000000 → '10s', 60000000 → '1m', 1500000 → '1500ms'.
    Hours are the largest unit (`24h`, not `1d`), so window labels stay what they were."""
    for unit in ("h", "m", "s", "ms"):
        if us % _UNIT_US[unit] == 0:
            return f"{us // _UNIT_US[unit]}{unit}"
    return f"{us}us"
