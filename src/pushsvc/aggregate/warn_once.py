"""Warnings a retrying loop logs once per topic and kind, not once per round (the deriver and
the sessionizer retry every round, and a broker away for minutes would fill the log)."""

from __future__ import annotations

import logging

__all__ = ["WarnOnce"]

_FORGET_PAST = 1_000
"""Kinds remembered at most; past it all are forgotten (a warning may then come again)."""


class WarnOnce:
    """`warn(topic, kind, message)` logs `message` the first time `(topic, kind)` is seen;
    `failed(kind, message)` logs with the traceback of the exception being handled."""

    def __init__(self, log: logging.Logger) -> None:
        self._log = log
        self._seen: set[tuple[str, str]] = set()

    def _first(self, topic: str, kind: str) -> bool:
        if (topic, kind) in self._seen:
            return False
        if len(self._seen) > _FORGET_PAST:
            self._seen.clear()
        self._seen.add((topic, kind))
        return True

    def warn(self, topic: str, kind: str, message: str) -> None:
        if self._first(topic, kind):
            self._log.warning("%s", message)

    def failed(self, kind: str, message: str) -> None:
        if self._first("", kind):
            self._log.exception("%s", message)
