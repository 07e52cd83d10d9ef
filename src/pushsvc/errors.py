"""One exception root. RequestError's leaves are what a request can meet, each with a stable
`code` for clients: the API maps each to its HTTP status and headers in one place
(`pushsvc.http.api.error_replies`), so the parts that raise them know nothing of HTTP. The
others (ConfigError, UnsafeRedis, CannotListen, Fenced, PublishedAlready) never reach a
request."""

from __future__ import annotations

import errno


class PushsvcError(Exception):
    """Root of every error pushsvc raises on purpose."""


class ConfigError(PushsvcError):
    """A setting is missing or malformed; raised at start-up."""


class RulesError(ConfigError):
    """The rules file cannot be read or is not valid; raised at start-up (exit 1: the
    command line was right, the file it names is not)."""


class Fenced(PushsvcError):
    """An aggregator acted on a shard whose lease another aggregator now holds."""


class LogGap(PushsvcError):
    """A shard's log has no entries between a reader's position and the next it read: they
    were trimmed while the reader was away (a process paused past its lease, a standby far
    behind). Windows built on it would miss them: the reader rebuilds from the checkpoints."""


class PublishedAlready(PushsvcError):
    """A batch of updates continues from a log position the shard's log was published past:
    some of it was published already (an attempt whose answer was lost, or another holder)."""


class RequestError(PushsvcError):
    """An error a request can meet: a stable `code` for clients, a message, the event's place
    in a batch (`index`) where it applies, and `retry_after_s` where a retry may succeed
    later."""

    code = "internal"
    retry_after_s: int | None = None

    def __init__(
        self, message: str, *, index: int | None = None, retry_after_s: int | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.index = index
        if retry_after_s is not None:
            self.retry_after_s = retry_after_s


class BadRequest(RequestError):
    """The request is malformed; nothing was changed."""

    code = "bad_request"


class InvalidEvent(BadRequest):
    code = "invalid_event"


class WideInteger(InvalidEvent):
    """A message's data holds an integer beyond 64 bits: it would be rounded on its way, so it
    is refused. Its own code: JSON Schema cannot tell such an integer from a double of the same
    value, so `/openapi.json` cannot state this rule."""

    code = "wide_integer"


class LoneSurrogate(InvalidEvent):
    """A message's data holds a string (or key) with half of a UTF-16 surrogate pair (a `\\ud800`
    escape without its partner): no UTF-8 stream can carry it, so it is refused. Its own code:
    JSON Schema's strings take any escape, so `/openapi.json` cannot state this rule."""

    code = "lone_surrogate"


class MalformedJson(BadRequest):
    """The body (or one NDJSON line) is not JSON."""

    code = "malformed_json"


class LateEvent(BadRequest):
    code = "late_event"
    clock_us: int | None = None
    """The topic clock the event was judged against (`pushsvc.core.lateness`)."""


class FutureEvent(BadRequest):
    """An event further ahead of the server's clock than `--max-future`: accepted, it would
    make the topic's later events late (its clock never goes back); nothing was changed."""

    code = "future_event"


class InvalidTopic(BadRequest):
    code = "invalid_topic"


class NotKept(BadRequest):
    """A stream names a topic whose rule does not keep a window or statistic its projection
    names, though another rule does."""

    code = "not_kept"


class EmptyRange(BadRequest):
    """A time range whose start is not before its end: `since` against `until`, or against the
    topic's clock where `until` is not given (a relation no schema of one parameter states)."""

    code = "empty_range"


class UngroupedTag(BadRequest):
    """A one-topic `?group=` names a tag the topic's rule does not group by: a request whose
    form is valid, refused for what the rules say of this topic (a code of its own, so a client
    can tell it from a malformed filter)."""

    code = "ungrouped_tag"


class DerivedTopic(BadRequest):
    """A POST (or a Redis producer's message) to a derived metric's topic: only the deriver
    appends to it; nothing was changed."""

    code = "derived_topic"


class SessionTopic(BadRequest):
    """A POST (or a Redis producer's message) to a session rule's topic: only the
    sessionizer appends to it; nothing was changed."""

    code = "session_topic"


class MercureTopic(BadRequest):
    """A POST (or a Redis or outbox producer's message) to a topic the Mercure hub keeps its
    updates in: only the hub appends there, after its own authorization; nothing was
    changed."""

    code = "mercure_topic"


class InvalidIdempotencyKey(BadRequest):
    """An `Idempotency-Key` header that is empty, too long, not visible ASCII, or given twice."""

    code = "invalid_idempotency_key"


class TooManySelectors(BadRequest):
    """A stream named more selectors than `--max-selectors`."""

    code = "too_many_selectors"


class PresenceNeedsNames(BadRequest):
    """A stream asked for presence events (`?presence=1`) naming no topic outright (patterns
    only): its events are about the topics it names."""

    code = "presence_needs_names"


class PayloadTooLarge(RequestError):
    code = "payload_too_large"


class LengthRequired(RequestError):
    """A body sent with neither `Content-Length` nor chunked framing on a connection that stays
    open: HTTP/1.1 reads no body there, so its size cannot be known; nothing was changed."""

    code = "length_required"


class RequestTimeout(RequestError):
    """The request's body did not arrive within `--body-timeout` (or a wait for its next
    piece passed a third of it); nothing was changed, and the connection closes."""

    code = "request_timeout"


class IncompleteBody(BadRequest):
    """The connection ended before the request's body did; nothing was changed."""

    code = "incomplete_body"


class UnsupportedMediaType(RequestError):
    code = "unsupported_media_type"


class IdempotencyKeyReused(RequestError):
    """The `Idempotency-Key` was used, within the window, for another body on this topic;
    nothing was changed (the IETF draft's 422)."""

    code = "idempotency_key_reused"


class NotFound(RequestError):
    code = "not_found"


class TooManyTopics(RequestError):
    """The event would create a topic beyond `--max-topics`; nothing was changed. Not a rate:
    no Retry-After (room comes back only as topics are deleted or forgotten)."""

    code = "too_many_topics"

    @classmethod
    def at(cls, limit: int) -> TooManyTopics:
        return cls(
            f"{limit} topics are kept already (--max-topics, as many as its memory budget "
            "holds, or its count): an event for a new topic is refused until a topic is "
            "deleted or idle ones are forgotten (--topic-ttl)"
        )


class TopicShareSpent(TooManyTopics):
    """The event would create a topic while its publisher (token subject, else client address)
    holds its share of `--max-topics` already (`pushsvc.security.topic_shares`); nothing was
    changed. Retry-After: until the publisher's least recently used topic lapses."""

    code = "topic_share_spent"

    @classmethod
    def at(cls, limit: int, *, retry_after_s: int | None = None) -> TopicShareSpent:
        return cls(
            f"this publisher holds its share of {limit} new topics already "
            "(--max-topics-per-publisher): an event for a topic nobody keeps is refused until "
            "one of them has had no event for --topic-ttl",
            retry_after_s=retry_after_s,
        )


class CannotListen(PushsvcError):
    """The server's address cannot be bound (in use, not this host's, a privileged port): the
    process stops with one line at start. Never reaches HTTP."""

    @classmethod
    def on(cls, host: str, port: int, error: OSError) -> CannotListen:
        reason = (error.strerror or str(error)).lower()
        if error.errno == errno.EADDRINUSE:
            hint = "another server listens there; choose another port with --port or PUSHSVC_PORT"
        else:
            hint = "check --host and --port (PUSHSVC_HOST, PUSHSVC_PORT)"
        return cls(f"cannot listen on {host}:{port}: {reason}; {hint}")


class DataDirInUse(PushsvcError):
    """Another pushsvc process holds the data directory (`ops.data_dir_lock`): the process
    stops with one line at start, naming the holder. Never reaches HTTP."""

    @classmethod
    def held(cls, data_dir: str, holder: str) -> DataDirInUse:
        by = f"another pushsvc serve ({holder})" if holder else "another pushsvc serve"
        return cls(
            f"the data directory {data_dir} is in use by {by}; stop that server first, or "
            "give another --data-dir"
        )


class UnsafeRedis(PushsvcError):
    """Redis is set up to drop pushsvc's data (its `maxmemory-policy` evicts): a process
    refuses to start on it. Never reaches HTTP (`/readyz` reports it while running)."""


class LayoutMismatch(UnsafeRedis):
    """Redis holds pushsvc data laid out for another partition count, or in the layout before
    partitions: a process refuses to start on it (one line naming both and the fix)."""


class BrokerUnavailable(RequestError):
    """The broker cannot be reached, or refused the request; the request had no effect. A
    retry may succeed within a second (a failover, a connection re-made): `Retry-After: 1`."""

    code = "broker_unavailable"
    retry_after_s = 1


class BrokerRefused(BrokerUnavailable):
    """Redis answered but refuses writes for now; nothing was written (Redis checks before a
    command, or a script's first write, runs). `retry_after_s`: when a retry may succeed."""

    code = "broker_refused"
    retry_after_s = 1


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


class ReplicasUnconfirmed(RequestError):
    """The events are in the primary's log, but fewer replicas than `--redis-min-replicas`
    confirmed them in time: they will be applied unless that primary is lost, and a retry may
    post them twice (Kafka's NOT_ENOUGH_REPLICAS_AFTER_APPEND). Not a `BrokerUnavailable`,
    whose request had no effect."""

    code = "replicas_unconfirmed"


class Unauthorized(RequestError):
    """No token where one is needed, or one that is not valid (expired, badly signed...)."""

    code = "unauthorized"

    def __init__(self, message: str, *, invalid_token: bool = False) -> None:
        super().__init__(message)
        self.invalid_token = invalid_token
        """Whether a token was given and is not valid (not merely missing)."""


class Forbidden(RequestError):
    """A valid token whose scope does not cover the request (or a refused Origin)."""

    code = "forbidden"


class TooManyRequests(RequestError):
    """A per-client limit was reached; `retry_after_s` (when given) says when to try again."""

    code = "too_many_requests"


class RateLimited(TooManyRequests):
    code = "rate_limited"


class TooManyStreams(TooManyRequests):
    code = "too_many_streams"


class TooManyPatterns(TooManyRequests):
    """A client address holds its share of the Mercure URL patterns a process compiles."""

    code = "too_many_patterns"


class AuthUnavailable(RequestError):
    """The application's backend that judges access (`--auth-url`) did not answer in time,
    answered an error or something malformed, or has as many asks in flight as it may: access
    fails closed, and a retry may succeed once it answers."""

    code = "auth_unavailable"
    retry_after_s = 2


class ServerBusy(RequestError):
    """This process is at its stream limit; another process (or later) may take the client."""

    code = "server_busy"
