"""`--log-level`: how much a process logs, for all of it and per logger.

`info` (the default) logs what an operator reads: one line per process and phase, warnings
for what is wrong. Some loggers have more to say at `debug` than anyone wants every day (the
`pushsvc.partitions` logger: each partition's lease taken, rebuilt, active, handed over), so
the setting names a level for the root and, after it, levels for single loggers:
`info,pushsvc.partitions=debug`. A logger's level covers the loggers below it, as Python's
logging does.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
_LOGGER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


@dataclass(frozen=True)
class LogLevels:
    """The root's level, and the loggers given a level of their own (name, level)."""

    root: int = logging.INFO
    loggers: tuple[tuple[str, int], ...] = ()

    def apply(self) -> None:
        logging.getLogger().setLevel(self.root)
        for name, level in self.loggers:
            logging.getLogger(name).setLevel(level)

    def __str__(self) -> str:
        names = {level: name for name, level in LEVELS.items()}
        parts = [names[self.root], *(f"{logger}={names[level]}" for logger, level in self.loggers)]
        return ",".join(parts)


def parse_log_levels(text: str) -> LogLevels:
    """`LEVEL[,LOGGER=LEVEL...]`, or only `LOGGER=LEVEL` items (the root then logs INFO); a
    ValueError names what is wrong."""
    root = logging.INFO
    loggers: dict[str, int] = {}
    given_root = False
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, sep, level_name = item.rpartition("=")
        level = LEVELS.get(level_name.strip().lower())
        if level is None:
            raise ValueError(f"{level_name.strip()!r} is not a level: choose {', '.join(LEVELS)}")
        if not sep:
            if given_root:
                raise ValueError(f"{text!r} gives the level of every logger twice")
            root, given_root = level, True
            continue
        name = name.strip()
        if not _LOGGER_NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not a logger name (such as pushsvc.partitions)")
        loggers[name] = level
    return LogLevels(root, tuple(loggers.items()))
