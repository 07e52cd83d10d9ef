"""A serving process's open files: its soft limit raised to the hard one at start (as Go's
runtime and nginx's `worker_rlimit_nofile` do), and its stream cap sized below that limit.

Every stream holds a socket for as long as it is open. A cap at or above the limit lets
streams take every descriptor: then accept fails with EMFILE, and producers, `/healthz` and
`/metrics` wait in the kernel's queue until the client gives up. So the cap keeps a headroom
of `headroom(limit)` descriptors for everything that is not a stream: the process's own files,
its Redis connections, producers' connections, health checks, scrapes and replays.
"""

from __future__ import annotations

import dataclasses
import logging
import resource
from dataclasses import dataclass

from pushsvc.config import Settings
from pushsvc.errors import ConfigError

log = logging.getLogger(__name__)

HEADROOM_MIN = 128
"""Descriptors kept from streams, at least: a process's own (~10 embedded, ~30 with a Redis
pool of 16), and a hundred for producers, health checks, scrapes and replays."""

HEADROOM_SHARE = 10
"""And at least one in this many of the limit, for a process whose producers grow with it."""

UNLIMITED = 1 << 31
"""What an infinite limit counts as (no cap below --max-streams comes of it)."""


def raise_soft_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit (its children inherit it)
    and return it. Where the kernel refuses (a hard limit above `fs.nr_open`), the soft
    limit stays as it was."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return UNLIMITED if soft == resource.RLIM_INFINITY else soft


def headroom(limit: int) -> int:
    """Descriptors a process with this open-file limit keeps from streams."""
    return max(HEADROOM_MIN, limit // HEADROOM_SHARE)


def stream_cap(limit: int, max_streams: int) -> int:
    """The most streams a process with this open-file limit may hold: `max_streams`, or
    fewer where the headroom would not fit beside it (0: no room for any)."""
    return max(0, min(max_streams, limit - headroom(limit)))


@dataclass(frozen=True)
class OpenFiles:
    """A serving process's open-file limit, raised, and the settings sized for it."""

    limit: int
    given: Settings
    settings: Settings
    """`given` with `max_streams` lowered where the limit does not hold it beside the
    headroom."""

    @classmethod
    def at_start(cls, given: Settings) -> OpenFiles:
        """Raise the soft limit to the hard one and size the stream cap for it. Raises
        ConfigError (one line) when the limit leaves no room for streams."""
        limit = raise_soft_limit()
        cap = stream_cap(limit, given.max_streams)
        if cap == 0:
            raise ConfigError(
                f"the open-file limit is {limit}: no room for streams beside the "
                f"{headroom(limit)} descriptors kept for producers, Redis and health checks; "
                "raise it (ulimit -n, systemd LimitNOFILE=)"
            )
        return cls(limit, given, dataclasses.replace(given, max_streams=cap))

    def say_if_lowered(self) -> None:
        """One line if `--max-streams` was lowered; called once the process is sure to start,
        so that what stops it (a Redis refused, a port in use) is its only line. A warning
        when the operator asked for more; INFO when it is the default that did not fit (a
        hard limit of 20,000, common, would otherwise warn at every start)."""
        if self.settings.max_streams == self.given.max_streams:
            return
        level = (
            logging.INFO if self.given.max_streams == _default_max_streams() else logging.WARNING
        )
        log.log(
            level,
            "--max-streams %d lowered to %d: the open-file limit is %d and %d descriptors are "
            "kept for producers, Redis, health checks and replays",
            self.given.max_streams,
            self.settings.max_streams,
            self.limit,
            headroom(self.limit),
        )


def _default_max_streams() -> int:
    (default,) = [int(spec.default) for spec in Settings.specs() if spec.field == "max_streams"]
    return default
