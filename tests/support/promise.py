"""A broken delivery promise, told apart from a slow or flaky test.

The suite reruns a failed test once (pyproject's `--reruns 1`), so that one timing flake does
not fail a whole CI run. A lost, doubled or reordered update is not a flake: a rerun that
passes would only hide it (a Cluster reshard lost 20 updates once and passed on its rerun). The
checks of what each subscriber received run inside `promise_kept()`, which raises any failed
assertion as `BrokenPromise`; pyproject's `rerun_except` names it, so such a failure is never
rerun and fails the run. A failure before or after those checks (a POST slower than its bound,
a process that did not start in time) is still rerun once and listed."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


class BrokenPromise(AssertionError):
    """An update or message lost, delivered twice or out of order: never rerun."""


@contextlib.contextmanager
def promise_kept() -> Iterator[None]:
    """Raise an assertion failed inside as `BrokenPromise`, with its message."""
    try:
        yield
    except BrokenPromise:
        raise
    except AssertionError as failed:
        raise BrokenPromise(str(failed)) from failed
