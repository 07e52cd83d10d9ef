"""One exception root; the API converts every leaf to a JSON error in one place."""

from __future__ import annotations


class PushsvcError(Exception):
    """Root of every error pushsvc raises on purpose."""

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


class ConfigError(PushsvcError):
    """A setting is missing or malformed; raised at start-up."""

    code = "bad_config"


class BadRequest(PushsvcError):
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


class PayloadTooLarge(PushsvcError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(PushsvcError):
    status = 415
    code = "unsupported_media_type"


class NotFound(PushsvcError):
    status = 404
    code = "not_found"


class BrokerUnavailable(PushsvcError):
    """The broker cannot be reached; the request had no effect."""

    status = 503
    code = "broker_unavailable"


class Fenced(PushsvcError):
    """An aggregator acted on a shard whose lease another aggregator now holds."""

    status = 503
    code = "fenced"


class NoAggregator(PushsvcError):
    """The broker accepted the events but no aggregator was subscribed to receive them."""

    status = 503
    code = "no_aggregator"
