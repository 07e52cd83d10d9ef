"""One exception root. HttpError's leaves are what a request can meet: the API turns each into
a JSON error with its status in one place. The others (ConfigError, UnsafeRedis, Fenced) never
reach HTTP."""

from __future__ import annotations


class PushsvcError(Exception):
    """Root of every error pushsvc raises on purpose."""


class ConfigError(PushsvcError):
    """A setting is missing or malformed; raised at start-up."""


class RulesError(ConfigError):
    """The rules file cannot be read or is not valid; raised at start-up (exit 1: the
    command line was right, the file it names is not)."""


class Fenced(PushsvcError):
    """An aggregator acted on a shard whose lease another aggregator now holds."""


class HttpError(PushsvcError):
    """An error a request can meet: a status and a stable `code` for clients."""

    status = 500
    code = "internal"

    def __init__(
        self,
        message: str,
        *,
        index: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.index = index
        self.headers = headers or {}

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


class InvalidIdempotencyKey(BadRequest):
    """An `Idempotency-Key` header that is empty, too long, not visible ASCII, or given twice."""

    code = "invalid_idempotency_key"


class TooManySelectors(BadRequest):
    """A stream named more selectors than `--max-selectors`."""

    code = "too_many_selectors"


class PayloadTooLarge(HttpError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(HttpError):
    status = 415
    code = "unsupported_media_type"


class IdempotencyKeyReused(HttpError):
    """The `Idempotency-Key` was used, within the window, for another body on this topic;
    nothing was changed (the IETF draft's 422)."""

    status = 422
    code = "idempotency_key_reused"


class NotFound(HttpError):
    status = 404
    code = "not_found"


class TooManyTopics(HttpError):
    """The event would create a topic beyond `--max-topics`; nothing was changed. Not a rate:
    no Retry-After (room comes back only as idle topics are forgotten)."""

    status = 429
    code = "too_many_topics"

    @classmethod
    def at(cls, limit: int) -> TooManyTopics:
        return cls(
            f"{limit} topics are kept already (--max-topics): an event for a new topic is "
            "refused until idle topics are forgotten (--topic-ttl)"
        )


class UnsafeRedis(PushsvcError):
    """Redis is set up to drop pushsvc's data (its `maxmemory-policy` evicts): a process
    refuses to start on it. Never reaches HTTP (`/readyz` reports it while running)."""


class BrokerUnavailable(HttpError):
    """The broker cannot be reached, or refused the request; the request had no effect."""

    status = 503
    code = "broker_unavailable"


class BrokerRefused(BrokerUnavailable):
    """Redis answered but refuses writes for now; nothing was written (Redis checks before a
    command, or a script's first write, runs). `retry_after_s`: when a retry may succeed."""

    code = "broker_refused"
    retry_after_s = 1

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"Retry-After": str(self.retry_after_s)})


class BrokerFull(BrokerRefused):
    """Redis is at `maxmemory` (with `noeviction`, as pushsvc requires): it refuses anything
    that would use more memory until memory is freed or `maxmemory` raised."""

    code = "broker_full"
    retry_after_s = 5


class BrokerReadOnly(BrokerRefused):
    """The Redis reached is a replica (a primary demoted by a failover, until clients move)."""

    code = "broker_read_only"


class BrokerBusy(BrokerRefused):
    """Redis is running a script past its time limit (`BUSY`), until it ends or is killed."""

    code = "broker_busy"


class BrokerLoading(BrokerRefused):
    """Redis is loading its dataset after a restart (`LOADING`)."""

    code = "broker_loading"
    retry_after_s = 5


class ReplicasUnconfirmed(HttpError):
    """The events are in the primary's log, but fewer replicas than `--redis-min-replicas`
    confirmed them in time: they will be applied unless that primary is lost, and a retry may
    post them twice (Kafka's NOT_ENOUGH_REPLICAS_AFTER_APPEND). Not a `BrokerUnavailable`,
    whose request had no effect."""

    status = 503
    code = "replicas_unconfirmed"


class Unauthorized(HttpError):
    """No token where one is needed, or one that is not valid (expired, badly signed...)."""

    status = 401
    code = "unauthorized"

    def __init__(self, message: str, *, invalid_token: bool = False) -> None:
        # RFC 6750 §3: a challenge always; `error=` only when a token was given.
        challenge = 'Bearer realm="pushsvc"'
        if invalid_token:
            challenge += ', error="invalid_token"'
        super().__init__(message, headers={"WWW-Authenticate": challenge})


class Forbidden(HttpError):
    """A valid token whose scope does not cover the request (or a refused Origin)."""

    status = 403
    code = "forbidden"


class TooManyRequests(HttpError):
    """A per-client limit was reached; `retry_after_s` (when given) says when to try again."""

    status = 429
    code = "too_many_requests"

    def __init__(self, message: str, *, retry_after_s: int | None = None) -> None:
        headers = {} if retry_after_s is None else {"Retry-After": str(retry_after_s)}
        super().__init__(message, headers=headers)


class RateLimited(TooManyRequests):
    code = "rate_limited"


class TooManyStreams(TooManyRequests):
    code = "too_many_streams"


class ServerBusy(HttpError):
    """This process is at its stream limit; another process (or later) may take the client."""

    status = 503
    code = "server_busy"

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})
