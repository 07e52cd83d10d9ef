"""Posting the demo's events: one POST per topic and batch, retried while the server is not
ready (connection refused or lost, 5xx, 429), honouring `Retry-After`, with a growing backoff.
Every attempt of a batch carries the batch's own `Idempotency-Key`, so a batch whose answer
was lost is logged once.

Standard library only (urllib), blocking; not greenlet-aware and not shared between threads.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from urllib.parse import quote

log = logging.getLogger("pushsvc.demo")

FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 5.0
MAX_RETRY_AFTER_S = 60.0
REQUEST_TIMEOUT_S = 5.0


class NotReady(Exception):
    """The server is not up yet, or briefly unable to accept events: worth retrying."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


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
        self.token = token
        self._sleep = sleep
        self._monotonic = monotonic

    def post(self, topic: str, body: object, *, give_up_at: float | None = None) -> bool:
        """POST `body` (an event or a list of events) to `topic`'s events, retrying while the
        server is not ready. True once accepted; False when a retry would end after
        `give_up_at` (a `monotonic` time: the events would be too old by then), in which case
        nothing was posted. Raises Rejected for a 4xx other than 429."""
        data = json.dumps(body).encode()
        key = str(uuid.uuid4())
        backoff = FIRST_BACKOFF_S
        waited = False
        while True:
            try:
                self._post_once(topic, data, key)
            except NotReady as exc:
                wait = backoff
                if exc.retry_after_s is not None:
                    wait = max(wait, min(exc.retry_after_s, MAX_RETRY_AFTER_S))
                if give_up_at is not None and self._monotonic() + wait > give_up_at:
                    return False
                log.warning("%s not ready (%s); retrying in %.1fs", self.base_url, exc, wait)
                self._sleep(wait)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                waited = True
                continue
            if waited:
                log.warning("%s is up; posting", self.base_url)
            return True

    def _post_once(self, topic: str, data: bytes, idempotency_key: str) -> None:
        headers = {"Content-Type": "application/json", "Idempotency-Key": idempotency_key}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(
            f"{self.base_url}/topics/{quote(topic, safe='')}/events",
            data=data,
            headers=headers,
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            code, message = _error_of(exc)
            if exc.code >= 500 or exc.code == 429:
                raise NotReady(
                    f"HTTP {exc.code}: {message}", _retry_after(exc.headers.get("Retry-After"))
                ) from None
            raise Rejected(f"HTTP {exc.code} for topic {topic!r}: {message}", code) from None
        except (urllib.error.URLError, OSError) as exc:
            # URLError wraps refused connections and unknown hosts; OSError covers timeouts.
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            raise NotReady(str(reason)) from None


def _error_of(exc: urllib.error.HTTPError) -> tuple[str | None, str]:
    """(code, message) of pushsvc's JSON error body, or (None, the HTTP reason)."""
    try:
        error = json.loads(exc.read())["error"]
        return str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError, OSError):
        return None, str(exc.reason)


def _retry_after(value: str | None) -> float | None:
    """Seconds from a `Retry-After: <seconds>` header (pushsvc sends no HTTP dates)."""
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
