"""Posting the demo's events: one POST per topic and batch through the Python `Client`,
retried while the server is not ready (connection refused or lost, 503, 429), never before
`Retry-After`, with a growing backoff. Every attempt of a batch carries the batch's own
`Idempotency-Key`, so a batch whose answer was lost is logged once.

Blocking; not greenlet-aware and not shared between threads.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from pushsvc.client import ApiError, Backoff, Client, ClientError

log = logging.getLogger("pushsvc.demo")

# Until the server answers (it may start after the demo): no limit on the tries, a wait that
# grows to 5 s, and Retry-After honoured up to a minute (a full Redis asks for 5 s).
NOT_READY_BACKOFF = Backoff(
    retries=None, base=0.5, cap=5.0, max_retry_after=60.0, give_up_after=None
)
REQUEST_TIMEOUT_S = 5.0


class Rejected(Exception):
    """The server refused the events for good (a 4xx): retrying would not help."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class Publisher:
    """Posts events to one pushsvc server, with `token` as `Authorization: Bearer`."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._sleep = sleep
        self._monotonic = monotonic
        self._waited = False
        # Every POST brings its own backoff; anything else is asked once (`newest`).
        self._client = Client(
            self.base_url,
            token=token,
            timeout=REQUEST_TIMEOUT_S,
            sleep=self._wait,
            backoff=Backoff(retries=0),
        )

    def post(
        self,
        topic: str,
        body: Mapping[str, object] | Sequence[Mapping[str, object]],
        *,
        give_up_at: float | None = None,
    ) -> bool:
        """POST `body` (an event or a list of events) to `topic`'s events, retrying while the
        server is not ready. True once accepted; False when a retry would start after
        `give_up_at` (a `monotonic` time: the events would be too old by then). Raises
        Rejected for a 4xx other than 429, and when some events were past the topic's grace
        (kept on its late stream: the demo's events are never meant to be late)."""
        backoff = NOT_READY_BACKOFF
        if give_up_at is not None:
            backoff = replace(backoff, give_up_after=max(0.0, give_up_at - self._monotonic()))
        try:
            accepted = self._client.publish(topic, body, backoff=backoff).result()
        except ApiError as exc:
            if not exc.retryable:
                raise Rejected(f"{exc} (topic {topic!r})", exc.code) from None
            return False
        except ClientError:
            return False
        if self._waited:
            self._waited = False
            log.warning("%s is up; posting", self.base_url)
        posted = 1 if isinstance(body, Mapping) else len(body)
        if accepted < posted:
            raise Rejected(
                f"{posted - accepted} of {posted} events were past the grace of topic "
                f"{topic!r}, kept on its late stream",
                "late_event",
            )
        return True

    def newest(self, topics: Sequence[str]) -> float | None:
        """The newest event time (the topic clock) the server has of any of `topics`; None when
        it has none of them, or cannot tell us now (not up yet, or our token may not read
        them). Asked once, without retrying."""
        try:
            listed = self._client.topics()
        except ClientError:
            return None
        wanted = set(topics)
        clocks = [float(t["last_ts"]) for t in listed if t["topic"] in wanted]
        return max(clocks, default=None)

    def close(self) -> None:
        self._client.close()

    def _wait(self, seconds: float) -> None:
        self._waited = True
        self._sleep(seconds)
