"""The demo's simulated day: a time of day that runs `speed` times faster than the machine's
clock, and the daily shapes (rush hours, shop traffic) the models read from it.

Pure: an offset is seconds of machine time since the demo started; nothing here reads a clock.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

SECONDS_PER_DAY = 86_400.0


def parse_time_of_day(text: str) -> float:
    """`HH:MM` or `HH:MM:SS` → seconds since midnight."""
    parts = text.strip().split(":")
    if len(parts) not in (2, 3) or not all(p.isdigit() for p in parts):
        raise ValueError(f"{text!r} is not a time of day (use HH:MM, e.g. 11:45)")
    hours, minutes, seconds = (int(p) for p in (*parts, "0")[:3])
    if hours > 23 or minutes > 59 or seconds > 59:
        raise ValueError(f"{text!r} is not a time of day (use HH:MM, e.g. 11:45)")
    return float(hours * 3600 + minutes * 60 + seconds)


def format_time_of_day(seconds: float) -> str:
    minutes = int(seconds % SECONDS_PER_DAY) // 60
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


@dataclass(frozen=True)
class SimClock:
    """Simulated seconds since the midnight before `start_s` (seconds since midnight): at offset
    0 the simulated day shows `start_s`, and it runs `speed` times the machine's clock."""

    start_s: float
    speed: float

    def seconds(self, offset: float) -> float:
        """Simulated seconds (growing past one day: day 2 starts at 86400) at `offset`."""
        return self.start_s + offset * self.speed

    def offset(self, seconds: float) -> float:
        """The machine offset at which the simulated clock shows `seconds` (inverse of seconds)."""
        return (seconds - self.start_s) / self.speed

    def hour(self, offset: float) -> float:
        """Hour of the simulated day at `offset`, in [0, 24)."""
        return (self.seconds(offset) % SECONDS_PER_DAY) / 3600.0


def bump(hour: float, center: float, width: float) -> float:
    """A Gaussian bump around `center` (hours) on the 24-hour circle; 1 at the centre."""
    distance = (hour - center + 12.0) % 24.0 - 12.0
    return math.exp(-0.5 * (distance / width) ** 2)


# Lunch and dinner rushes of the restaurant: (centre hour, width in hours).
LUNCH = (12.75, 0.75)
DINNER = (19.5, 1.0)


def orders(hour: float) -> float:
    """Relative order intake of the kitchen: a late-night floor, a lunch and a dinner rush."""
    return 0.25 + 1.0 * bump(hour, *LUNCH) + 1.2 * bump(hour, *DINNER)


def kitchen_load(hour: float) -> float:
    """How much slower the kitchen is than when idle: 1 off-peak, ~2x at lunch, ~2.4x at dinner."""
    return 1.0 + 1.0 * bump(hour, *LUNCH) + 1.4 * bump(hour, *DINNER)


def shop_traffic(hour: float) -> float:
    """Relative web-shop traffic: a night floor, a midday plateau and an evening peak."""
    return 0.3 + 0.5 * bump(hour, 13.0, 2.5) + 1.0 * bump(hour, 20.5, 2.0)


def peak(shape: Callable[[float], float]) -> float:
    """The largest value of a daily shape (minute resolution; the shapes are smooth)."""
    return max(shape(m / 60.0) for m in range(24 * 60))


ORDERS_PEAK = peak(orders)
SHOP_PEAK = peak(shop_traffic)
