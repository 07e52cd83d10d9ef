"""Event times: epoch seconds or RFC 3339 to integer microseconds, exactly (pure).

* A numeric `ts` is rounded to the microsecond from the float's exact binary value (half to
  even), never through `ts * 1e6`, whose own rounding can move the result by one microsecond.
* A string `ts` must be a full RFC 3339 date-time with `Z` or an offset (no naive local
  times); `T`, `t` or a space separate date and time; `z` is accepted; more than six
  fraction digits are rounded to the microsecond (half to even); a leap second (`:60`) is
  rejected because epoch time has none.
* Times are read in years 1 to 9999 in either form (a read's `since` and `until` may be any of
  them). An event's `ts` must moreover be from 2000-01-01 on (`MIN_EVENT_TS_US`) and before
  year 10000 (`MAX_TS_US`): the upper bound catches milliseconds sent as seconds, the lower
  one a time left unset (`0`, or the year-1 zero value of .NET's and Go's time types) or
  seconds counted from something else than the epoch (a boot, a process's start). Accepted,
  such an event starts its topic's clock decades back, and every range of it that ends at
  that clock reaches before year 1.
"""

from __future__ import annotations

import re
from datetime import date

from pushsvc.core.event import US_PER_S

_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
MIN_TS_US = (date(1, 1, 1).toordinal() - _EPOCH_ORDINAL) * 86_400 * US_PER_S
"""0001-01-01T00:00:00Z, the earliest time read (an event's `ts`: `MIN_EVENT_TS_US`)."""
MAX_TS_US = (date(9999, 12, 31).toordinal() - _EPOCH_ORDINAL + 1) * 86_400 * US_PER_S - 1
"""9999-12-31T23:59:59.999999Z, the latest time an event may carry."""
MIN_EVENT_TS_US = (date(2000, 1, 1).toordinal() - _EPOCH_ORDINAL) * 86_400 * US_PER_S
"""2000-01-01T00:00:00Z (946684800 epoch seconds), the earliest `ts` an event may carry."""
MIN_EVENT_TS_TEXT = "2000-01-01T00:00:00Z"


def seconds_to_us(seconds: float) -> int:
    """Epoch seconds to integer microseconds, rounded half to even from the exact value.

    A double is an exact fraction n / 2**k, so integer arithmetic rounds it
    exactly; `round(seconds * 1e6)` rounds twice and can be a microsecond off.
    """
    numerator, denominator = seconds.as_integer_ratio()
    quotient, remainder = divmod(numerator * US_PER_S, denominator)
    twice = 2 * remainder
    if twice > denominator or (twice == denominator and quotient & 1):
        quotient += 1
    return quotient


_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:\.([0-9]+))?(?:[Zz]|([+-])([0-9]{2}):([0-9]{2}))"
)


def parse_rfc3339(text: str) -> int:
    """An RFC 3339 date-time to epoch microseconds; ValueError if it is not one.

    `[0-9]` rather than `\\d`, which would accept any Unicode digit.
    """
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise ValueError(
            "not an RFC 3339 date-time with a time zone, like 2025-11-21T04:40:00.123Z"
        )
    year, month, day, hour, minute, second = map(int, match.group(1, 2, 3, 4, 5, 6))
    fraction, sign, offset_h, offset_m = match.group(7, 8, 9, 10)
    if second == 60:
        raise ValueError("leap seconds are not supported")
    if hour > 23 or minute > 59 or second > 59:
        raise ValueError("time of day out of range")
    try:
        days = date(year, month, day).toordinal() - _EPOCH_ORDINAL
    except ValueError:
        raise ValueError("no such date") from None
    seconds = days * 86_400 + hour * 3600 + minute * 60 + second
    if sign is not None:
        if int(offset_h) > 23 or int(offset_m) > 59:
            raise ValueError("time zone offset out of range")
        offset = int(offset_h) * 3600 + int(offset_m) * 60
        seconds -= offset if sign == "+" else -offset
    return seconds * US_PER_S + _fraction_us(fraction)


def _fraction_us(digits: str | None) -> int:
    """Decimal fraction digits to microseconds, rounded half to even (may return 1_000_000)."""
    if digits is None:
        return 0
    if len(digits) <= 6:
        return int(digits.ljust(6, "0"))
    micros = int(digits[:6])
    first, rest = digits[6], digits[7:]
    # Looked at as text so that a long fraction never becomes a long integer.
    if first > "5" or (first == "5" and (rest.strip("0") or micros & 1)):
        micros += 1
    return micros
