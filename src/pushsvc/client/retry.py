"""When the clients send a request again: the backoff (exponential, full jitter, at least the
server's Retry-After) and the retry loops of tenacity built on it, one for each client.

What is retried: a lost or refused connection (`Unreachable`) and the answers that say
nothing was done and to come back (429, 503). Never another error: a 4xx would be refused
again. A POST is safe to send again because every batch carries its own Idempotency-Key
(`calls.publish`): the server logs it once however often it arrives."""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import tenacity

from pushsvc.client.errors import ApiError, Unreachable

log = logging.getLogger("pushsvc.client")


#: How long a request is retried by default: no attempt starts later than this many seconds
#: after the first. A time, not a number of tries: a server's restart or a failover takes
#: seconds whatever the backoff, and five retries (the old budget) were spent in about three.
DEFAULT_GIVE_UP_AFTER = 30.0


@dataclass(frozen=True)
class Backoff:
    """Retries for up to `give_up_after` seconds: no attempt starts later than that after
    the first, and then the last error is raised (None: no limit); `retries`, when given,
    also bounds how many more attempts follow the first. Attempt n (from 0) waits a random
    time up to `base * 2**n` seconds, at most `cap` — and never less than the server's
    Retry-After. A request whose answer asks for a longer wait than `max_retry_after` is not
    retried: its error is raised at once (sending it earlier would be refused again, and a
    program rarely wants to sleep that long unawares)."""

    retries: int | None = None
    base: float = 0.2
    cap: float = 10.0
    max_retry_after: float = 60.0
    give_up_after: float | None = DEFAULT_GIVE_UP_AFTER

    def delay(self, attempt: int, error: BaseException | None) -> float:
        wait = random.uniform(0, min(self.cap, self.base * 2 ** min(attempt, 32)))
        if isinstance(error, ApiError) and error.retry_after is not None:
            # The server knows when it will take the request (a publish rate's refill):
            # earlier is refused again.
            wait = max(wait, error.retry_after)
        return wait

    def allows(self, error: BaseException) -> bool:
        """Whether a request that failed with `error` is sent again."""
        too_long = isinstance(error, ApiError) and (error.retry_after or 0) > self.max_retry_after
        return is_retryable(error) and not too_long


def is_retryable(error: BaseException) -> bool:
    """Whether another try could succeed (for a stream, which waits as long as it is asked)."""
    return isinstance(error, (Unreachable, ApiError)) and error.retryable


def _stop(backoff: Backoff) -> tenacity.stop.stop_base:
    stop: tenacity.stop.stop_base = tenacity.stop_never
    if backoff.retries is not None:
        stop = tenacity.stop_after_attempt(backoff.retries + 1)
    if backoff.give_up_after is not None:
        stop = stop | tenacity.stop_before_delay(backoff.give_up_after)
    return stop


def _wait(backoff: Backoff) -> Callable[[tenacity.RetryCallState], float]:
    def wait(state: tenacity.RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome is not None else None
        return backoff.delay(state.attempt_number - 1, error)

    return wait


def _log_retry(state: tenacity.RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome is not None else None
    wait = state.next_action.sleep if state.next_action is not None else 0.0
    # INFO: a library's retries are no warning until they run out (the demo shows them).
    log.info("not ready (%s); retrying in %.1f s", error, wait)


def _policy(backoff: Backoff) -> dict[str, Any]:
    return {
        "stop": _stop(backoff),
        "wait": _wait(backoff),
        "retry": tenacity.retry_if_exception(backoff.allows),
        "before_sleep": _log_retry,
        "reraise": True,
    }


def retrying(backoff: Backoff, sleep: Callable[[float], None]) -> tenacity.Retrying:
    """The blocking client's loop: `retrying(...)(send, call)`."""
    return tenacity.Retrying(sleep=sleep, **_policy(backoff))


def async_retrying(
    backoff: Backoff, sleep: Callable[[float], Awaitable[None]]
) -> tenacity.AsyncRetrying:
    """The asyncio client's loop: `await async_retrying(...)(send, call)`."""
    return tenacity.AsyncRetrying(sleep=sleep, **_policy(backoff))
