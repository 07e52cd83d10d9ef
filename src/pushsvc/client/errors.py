"""What the clients raise: one root, `ClientError`, and its leaves — the server answered with an
error (`ApiError`, carrying its status and the error code of its JSON body), or no answer
came (`Unreachable`). httpx's own exceptions never leave the client: they are mapped here, at
its edge, as httpx maps httpcore's."""

from __future__ import annotations

import ssl

import httpx
import msgspec

from pushsvc.core.answers import Error
from pushsvc.errors import PushsvcError

RETRYABLE_STATUSES = frozenset({429, 503})
"""A 503 means nothing was logged (or, `replicas_unconfirmed`, logged under the request's
Idempotency-Key); a 429 that this client is over a limit for now. Both are safe to send again,
after the server's Retry-After."""


class ClientError(PushsvcError):
    """The root of the clients' errors. `status` is the HTTP status (None when no answer
    came), `code` the server's error code (`invalid_event`, `rate_limited`, …; None when the
    answer had no JSON error)."""

    status: int | None = None
    code: str | None = None


class ApiError(ClientError):
    """The server answered with an error. `message` and `index` (the event's position in a
    batch, where it applies) come from its JSON body; `retry_after` (seconds) from its
    `Retry-After`."""

    def __init__(
        self,
        status: int,
        code: str | None,
        message: str,
        *,
        index: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"HTTP {status} {code or 'error'}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.index = index
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        return self.status in RETRYABLE_STATUSES

    @classmethod
    def of(cls, response: httpx.Response) -> ApiError:
        """The error of an answer whose body has been read."""
        code, message, index = None, response.text.strip() or response.reason_phrase, None
        try:
            error = msgspec.json.decode(response.content, type=Error).error
        except msgspec.DecodeError:  # not pushsvc's (a proxy's page, say): its text
            pass
        else:
            code, message = error.code, error.message
            index = None if error.index is msgspec.UNSET else error.index
        return cls(
            response.status_code,
            code,
            message,
            index=index,
            retry_after=_seconds(response.headers.get("Retry-After")),
        )


class Unreachable(ClientError):
    """No answer: the server could not be reached, or the connection was lost or timed out
    before its answer arrived (a POST may have been logged: a retry with the same
    Idempotency-Key is logged once). Not `retryable` when the server's TLS certificate did not
    verify: it will not on the next try either."""

    def __init__(self, url: str, cause: httpx.TransportError) -> None:
        super().__init__(f"cannot reach {url}: {type(cause).__name__}: {cause}")
        self.retryable = not _caused_by(cause, ssl.SSLCertVerificationError)


def _caused_by(error: BaseException, kind: type[BaseException]) -> bool:
    # httpx raises its own error from httpcore's, raised in turn from the ssl module's.
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _seconds(value: str | None) -> float | None:
    # pushsvc sends delay-seconds; an HTTP date (also allowed by RFC 9110) from a proxy in front
    # is left to the client's own backoff.
    if value is None or not value.strip().isdigit():
        return None
    return float(value)
