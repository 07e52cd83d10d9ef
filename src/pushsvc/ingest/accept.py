"""Taking events in: one path for `POST /topics/{topic}/events`, the Redis bridge and the
outbox, so that all validate, limit and judge lateness exactly alike. A topic name is
checked once: a POST checks it before it reads the body and hands `ingest` the checked
`TopicName`; the bridge and the outbox hand `validated` the name as it came."""

from __future__ import annotations

from collections.abc import Callable

from pushsvc.broker.base import Appended, Broker
from pushsvc.core.idempotency import Idempotency, request_digest
from pushsvc.core.topics import TopicName, validate_topic
from pushsvc.errors import DerivedTopic, SessionTopic
from pushsvc.ingest import Event, InputLimits, parse_body
from pushsvc.ingest.late import append_keeping_late
from pushsvc.ingest.parse import JSON, NDJSON, media_type


def ingest(
    broker: Broker,
    topic: TopicName,
    body: bytes,
    content_type: str | None,
    *,
    limits: InputLimits,
    lateness_us: int,
    now_us: int,
    refuse_late: bool = False,
    idempotency_key: str | None = None,
    idempotency_window_ms: int | None = None,
    pause: Callable[[], None] | None = None,
) -> Appended:
    """Validate `body` as events of `topic` and append them to the log, idempotently when an
    `idempotency_key` is given (remembered for `idempotency_window_ms`); what was accepted.
    `lateness_us` is the topic's grace: an event past it goes to the topic's late stream
    (`pushsvc.ingest.late`), or refuses the batch with `refuse_late`.
    Raises the RequestError that says what is wrong, having changed nothing. `pause` is
    called between the two (`pushsvc.loop_pause.let_others_run` where a loop serves others,
    which a batch of 10,000 events would hold for its whole validation and append)."""
    events = _events(topic, body, content_type, limits=limits, now_us=now_us)
    if pause is not None:
        pause()
    idempotency = None
    if idempotency_key is not None:
        if idempotency_window_ms is None:
            raise ValueError("an idempotency key needs its window")
        digest = request_digest(media_type(content_type), body)
        idempotency = Idempotency(idempotency_key, digest, idempotency_window_ms)
    return append_validated(
        broker,
        topic,
        events,
        lateness_us=lateness_us,
        refuse_late=refuse_late,
        idempotency=idempotency,
    )


def append_validated(
    broker: Broker,
    topic: TopicName,
    events: list[Event],
    *,
    lateness_us: int,
    refuse_late: bool = False,
    idempotency: Idempotency | None = None,
) -> Appended:
    """Append events `validated` for `topic` as `ingest` does: those past `lateness_us` to
    the topic's late stream (or, with `refuse_late`, LateEvent and nothing changed), at most
    once per `idempotency` key."""
    return append_keeping_late(
        broker, topic, events, grace_us=lateness_us, refuse=refuse_late, idempotency=idempotency
    )


def validated(
    topic: str, body: bytes, content_type: str | None, *, limits: InputLimits, now_us: int
) -> list[Event]:
    """The events of `body` for `topic`, or the RequestError that says what is wrong (the
    lateness rule is the broker's, at append)."""
    return _events(validate_topic(topic), body, content_type, limits=limits, now_us=now_us)


def _events(
    topic: TopicName, body: bytes, content_type: str | None, *, limits: InputLimits, now_us: int
) -> list[Event]:
    if topic in limits.derived_topics:
        raise DerivedTopic(
            f"{topic} is a derived metric ([[derive]] in the rules file): pushsvc produces "
            "its events itself, producers cannot post to it"
        )
    if topic in limits.session_topics:
        raise SessionTopic(
            f"{topic} is a session topic ([[session]] in the rules file): pushsvc produces "
            "its events itself, one per ended session; producers cannot post to it"
        )
    return parse_body(body, content_type, now_us=now_us, limits=limits)


def sniff_media_type(body: bytes) -> str:
    """A Redis message has no Content-Type: it is NDJSON when it has two or more non-blank
    lines and each starts with `{` (one event per line), JSON otherwise (one event, an array,
    or either pretty-printed)."""
    lines = [line.lstrip() for line in body.splitlines() if line.strip()]
    if len(lines) > 1 and all(line.startswith(b"{") for line in lines):
        return NDJSON
    return JSON
