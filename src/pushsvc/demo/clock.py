"""The demo's simulated day: a time of day that runs `speed` times faster than the machine's
clock, and the daily shapes (rush hours, shop traffic) the models read from it.

Event time is simulated time: an event's `ts` is the moment of the simulated day it happened
at, in the local time zone (the process's, `TZ`), so a dashboard in that zone shows the lunch
rush at 12:45 whatever the speed. The simulated day begins at a moment its clock showed:
now, or the latest `--start` time of day at or before now (`day_anchor`).

Pure: an offset is seconds of machine time since the demo started; nothing here reads a clock
(`day_anchor` reads the time zone's rules).
"""

from __future__ import annotations

import math
import time
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


def day_anchor(now_s: float, start_s: float | None) -> tuple[float, float]:
    """(time of day, epoch seconds) at which the simulated day begins: now (`start_s` None),
    or the latest moment at or before `now_s` at which the local clock showed `start_s`
    seconds since midnight (today's, else yesterday's)."""
    now = time.localtime(now_s)
    if start_s is None:
        return now.tm_hour * 3600 + now.tm_min * 60 + now.tm_sec + now_s % 1, now_s
    hours, rest = divmod(int(start_s), 3600)
    minutes, seconds = divmod(rest, 60)
    for days_back in (0, 1):
        # mktime normalises day 0 to the month before, and works out daylight saving time.
        wall = (now.tm_year, now.tm_mon, now.tm_mday - days_back, hours, minutes, seconds)
        moment = time.mktime((*wall, 0, 0, -1)) + start_s % 1
        if moment <= now_s:
            return start_s, moment
    return start_s, moment - SECONDS_PER_DAY  # a time of day skipped by a DST change


@dataclass(frozen=True)
class SimClock:
    """Simulated seconds since the midnight before `start_s` (seconds since midnight): at offset
    0 the simulated day shows `start_s`, and it runs `speed` times the machine's clock.
    `epoch_s` is that moment's event time (epoch seconds; 0 for the models alone): an event at
    `offset` is stamped `timestamp(offset)`. Across a change of daylight saving time the local
    clock jumps and the simulated day does not: its hours are then one off the clock's."""

    start_s: float
    speed: float
    epoch_s: float = 0.0

    def timestamp(self, offset: float) -> float:
        """The event time (epoch seconds) of the simulated moment at `offset`."""
        return self.epoch_s + offset * self.speed

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
