"""What a request error becomes on the wire: its HTTP status and headers, in one table (pure).

The errors themselves (`pushsvc.errors`) carry a stable `code`, a message and, where a retry
may succeed later, `retry_after_s`; which status each is, and that a 401 always carries its
RFC 6750 challenge, is said only here."""

from __future__ import annotations

from pushsvc.errors import (
    AuthUnavailable,
    BadRequest,
    BrokerUnavailable,
    Forbidden,
    IdempotencyKeyReused,
    LengthRequired,
    NotFound,
    PayloadTooLarge,
    ReplicasUnconfirmed,
    RequestError,
    RequestTimeout,
    ServerBusy,
    TooManyRequests,
    TooManyTopics,
    Unauthorized,
    UnsupportedMediaType,
)

__all__ = ["STATUSES", "headers_of", "status_of"]

STATUSES: tuple[tuple[type[RequestError], int], ...] = (
    (BadRequest, 400),
    (Unauthorized, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (RequestTimeout, 408),
    (LengthRequired, 411),
    (PayloadTooLarge, 413),
    (UnsupportedMediaType, 415),
    (IdempotencyKeyReused, 422),
    (TooManyTopics, 429),  # not a rate: no Retry-After (room comes back as topics go idle)
    (TooManyRequests, 429),
    (BrokerUnavailable, 503),
    (AuthUnavailable, 503),
    (ReplicasUnconfirmed, 503),
    (ServerBusy, 503),
)
"""Each kind of request error and its status; a subclass takes its nearest listed base's."""

_BY_KIND: dict[type[RequestError], int] = {}


def status_of(error: RequestError) -> int:
    """The HTTP status of `error` (500 for a kind the table does not list)."""
    kind = type(error)
    status = _BY_KIND.get(kind)
    if status is None:
        status = next((s for base, s in STATUSES if issubclass(kind, base)), 500)
        _BY_KIND[kind] = status
    return status


def headers_of(error: RequestError) -> dict[str, str]:
    """`Retry-After` where a retry may succeed later; `Connection: close` on a 503
    `server_busy`; a 401's challenge (RFC 6750 §3: always a
    challenge, `error=` only when a token was given)."""
    headers = {}
    if error.retry_after_s is not None:
        headers["Retry-After"] = str(error.retry_after_s)
    if isinstance(error, ServerBusy):
        # At its stream cap the process hands the descriptor back to the headroom producers
        # use now, not after an idle keep-alive (pywsgi honours this; gunicorn drops it).
        headers["Connection"] = "close"
    if isinstance(error, Unauthorized):
        challenge = 'Bearer realm="pushsvc"'
        if error.invalid_token:
            challenge += ', error="invalid_token"'
        headers["WWW-Authenticate"] = challenge
    if isinstance(error, (LengthRequired, RequestTimeout, PayloadTooLarge)):
        # The body that was not read must not be taken for the connection's next request.
        headers["Connection"] = "close"
    return headers
