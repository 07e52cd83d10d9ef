"""Where things stand in a partition's event log (pure): the one vocabulary the broker, the
aggregator and the groups share, so that none of them imports another for it."""

from __future__ import annotations

__all__ = ["EventPosition", "LogPosition"]

LogPosition = tuple[int, int]
"""A log entry's position: its Redis stream id's two parts (milliseconds, sequence), or the
memory broker's counter and 0."""

EventPosition = tuple[int, int, int]
"""An event's position: its entry's, then its place in the entry's batch."""
