"""One exception root. HttpError's leaves are what a request can meet: the API turns each into
a JSON error with its status in one place. The others (ConfigError, Fenced) never reach HTTP."""

from __future__ import annotations


class PushsvcError(Exception):
    """Root of every error pushsvc raises on purpose."""


class ConfigError(PushsvcError):
    """A setting is missing or malformed; raised at start-up."""


class Fenced(PushsvcError):
    """An aggregator acted on a shard whose lease another aggregator now holds."""


class HttpError(PushsvcError):
    """An error a request can meet: a status and a stable `code` for clients."""

    status = 500
    code = "internal"

    def __init__(self, message: str, *, index: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.index = index

    def to_json(self) -> dict[str, object]:
        body: dict[str, object] = {"code": self.code, "message": self.message}
        if self.index is not None:
            body["index"] = self.index
        return {"error": body}


class BadRequest(HttpError):
    """The request is malformed; nothing was changed."""

    status = 400
    code = "bad_request"


class InvalidEvent(BadRequest):
    code = "invalid_event"


class MalformedJson(BadRequest):
    """The body (or one NDJSON line) is not JSON."""

    code = "malformed_json"


class LateEvent(BadRequest):
    code = "late_event"


class InvalidTopic(BadRequest):
    code = "invalid_topic"


class PayloadTooLarge(HttpError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(HttpError):
    status = 415
    code = "unsupported_media_type"


class NotFound(HttpError):
    status = 404
    code = "not_found"


class BrokerUnavailable(HttpError):
    """The broker cannot be reached; the request had no effect."""

    status = 503
    code = "broker_unavailable"
