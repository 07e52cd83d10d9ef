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


def sized_for_open_files(settings: Settings) -> Settings:
    """`settings` with `max_streams` lowered to what this process's open-file limit holds
    beside its headroom, the soft limit raised to the hard one first. A lowered cap is said
    in one warning line; a limit with no room for streams stops the process (ConfigError)."""
    limit = raise_soft_limit()
    cap = stream_cap(limit, settings.max_streams)
    if cap == settings.max_streams:
        return settings
    if cap == 0:
        raise ConfigError(
            f"the open-file limit is {limit}: no room for streams beside the {headroom(limit)} "
            "descriptors kept for producers, Redis and health checks; raise it "
            "(ulimit -n, systemd LimitNOFILE=)"
        )
    log.warning(
        "--max-streams %d lowered to %d: the open-file limit is %d and %d descriptors are kept "
        "for producers, Redis, health checks and replays",
        settings.max_streams,
        cap,
        limit,
        headroom(limit),
    )
    return dataclasses.replace(settings, max_streams=cap)
