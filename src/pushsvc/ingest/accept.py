"""Taking events in: one path for `POST /topics/{topic}/events`, the Redis bridge and the
outbox, so that all validate, limit and judge lateness exactly alike. A topic name is
checked once: a POST checks it before it reads the body and hands `ingest` the checked
`TopicName`; the bridge and the outbox hand `validated` the name as it came.

Lateness is judged by the broker, in the append itself (`Broker.append_events`,
`pushsvc.core.lateness`): an event past its topic's grace goes to the topic's late stream in
the same atomic step as the rest of its batch, a message is pushed on its topic whatever its
time, and `late = "refuse"` refuses a batch with a plain event past the grace."""

from __future__ import annotations

from collections.abc import Callable

from pushsvc.broker.base import Appended, Broker
from pushsvc.core.idempotency import Idempotency, request_digest
from pushsvc.core.lateness import keeps_late
from pushsvc.core.partitions import is_hub_topic
from pushsvc.core.topics import TopicName, validate_topic
from pushsvc.errors import DerivedTopic, MercureTopic, SessionTopic
from pushsvc.ingest import Event, InputLimits, parse_body
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
    by_hub: bool = False,
) -> Appended:
    """Validate `body` as events of `topic` and append them to the log, idempotently when an
    `idempotency_key` is given (remembered for `idempotency_window_ms`); what was accepted.
    `lateness_us` is the topic's grace: an event past it goes to the topic's late stream
    (counted in `Appended.late`), a message past it is pushed all the same, and with
    `refuse_late` a plain event past it refuses the batch (`pushsvc.core.lateness`).
    Raises the RequestError that says what is wrong, having changed nothing. `pause` is
    called between the two (`pushsvc.loop_pause.let_others_run` where a loop serves others,
    which a batch of 10,000 events would hold for its whole validation and append).
    `by_hub`: the Mercure hub appends, after its own authorization, to the topics only it
    may append to (`is_hub_topic`: whatever is there reaches Mercure subscribers as an update of
    the IRIs its envelope names); every other caller is refused there, whatever its token."""
    events = _events(topic, body, content_type, limits=limits, now_us=now_us, by_hub=by_hub)
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
    """Append events `validated` for `topic` as `ingest` does, in one atomic step: those past
    `lateness_us` to the topic's late stream too (a message among them pushed on the topic all
    the same; with `refuse_late`, a plain one raises LateEvent and nothing changes), at most
    once per `idempotency` key."""
    return broker.append_events(
        topic,
        events,
        lateness_us=lateness_us,
        idempotency=idempotency,
        keep_late=keeps_late(topic, refuse_late),
    )


def validated(
    topic: str, body: bytes, content_type: str | None, *, limits: InputLimits, now_us: int
) -> list[Event]:
    """The events of `body` for `topic`, or the RequestError that says what is wrong (the
    lateness rule is the broker's, at append: `keeps_late` says what to ask it)."""
    return _events(validate_topic(topic), body, content_type, limits=limits, now_us=now_us)


def _events(
    topic: TopicName,
    body: bytes,
    content_type: str | None,
    *,
    limits: InputLimits,
    now_us: int,
    by_hub: bool = False,
) -> list[Event]:
    if not by_hub and is_hub_topic(topic):
        raise MercureTopic(
            f"{topic} keeps Mercure updates: only the Mercure hub appends to it, after its own "
            "authorization (publish with POST /.well-known/mercure)"
        )
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
