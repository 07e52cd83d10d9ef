"""What crosses the wire to Redis, in one place: the library edge (Redis errors become ours)
and the forms updates and event batches take in messages, `latest` values and the log."""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import orjson
from redis.exceptions import (
    AskError,
    BusyLoadingError,
    ClusterDownError,
    ClusterError,
    MasterDownError,
    MovedError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterException,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from pushsvc.broker.base import TopicHead
from pushsvc.core.event import Event, Message
from pushsvc.core.updates import Kind, Update, UpdateId
from pushsvc.errors import (
    BrokerBusy,
    BrokerFull,
    BrokerLoading,
    BrokerReadOnly,
    BrokerRefused,
    BrokerUnavailable,
    Fenced,
    PublishedAlready,
)

log = logging.getLogger(__name__)

_UNREACHABLE = (RedisConnectionError, RedisTimeoutError)
# A Redis Cluster slot without a reachable primary (a failover under way, a node down with
# `cluster-require-full-coverage no`), or one still moving after the client followed its
# redirects (a slot migration's TRYAGAIN outlasting them): nothing ran, its partitions answer
# 503 until the cluster settles.
_NO_PRIMARY = (
    ClusterDownError,
    ClusterError,
    MasterDownError,
    RedisClusterException,
    TryAgainError,
    MovedError,
    AskError,
)

_REFUSING = ("NOREPLICAS", "MISCONF")

refusals: Counter[str] = Counter()
"""Commands Redis refused in this process, by the error's code (`/metrics`)."""


@contextlib.contextmanager
def unavailable(action: str) -> Iterator[None]:
    """The library edge: Redis transport errors become BrokerUnavailable (a 503), refusals
    BrokerRefused's leaves (503s with their own code and Retry-After: nothing was written), a
    fenced script Fenced. Refusals are not logged: they are answers, counted in /metrics, and
    a full Redis would otherwise log one line per POST."""
    try:
        yield
    except BusyLoadingError:  # a ConnectionError subclass in redis-py: before _UNREACHABLE
        raise _refused(BrokerLoading("Redis is loading its dataset")) from None
    except _UNREACHABLE as exc:
        log.warning("redis unavailable during %s: %s", action, exc)
        # The message reaches HTTP clients: no host or port in it.
        raise BrokerUnavailable(f"Redis is unavailable ({type(exc).__name__})") from None
    except _NO_PRIMARY as exc:
        log.warning("redis cluster has no primary for a slot during %s: %s", action, exc)
        raise BrokerUnavailable(
            f"the Redis Cluster has no primary for this partition now ({type(exc).__name__})"
        ) from None
    except OutOfMemoryError:
        raise _refused(
            BrokerFull("Redis is full (maxmemory reached); nothing was written: retry later")
        ) from None
    except ReadOnlyError:
        raise _refused(BrokerReadOnly("Redis is a read-only replica (a failover?)")) from None
    except ResponseError as exc:
        text = str(exc)
        if text.startswith("FENCED"):
            raise Fenced(text) from None
        if text.startswith("PUBLISHED"):
            raise PublishedAlready(text) from None
        if text.startswith("BUSY "):  # not BUSYKEY
            raise _refused(BrokerBusy("Redis is busy running a script")) from None
        if text.startswith(_REFUSING):
            # min-replicas-to-write not met, or persistence failing (stop-writes-on-bgsave-error).
            raise _refused(BrokerRefused(f"Redis refuses writes ({text.split()[0]})")) from None
        raise


def _refused(exc: BrokerRefused) -> BrokerRefused:
    refusals[exc.code] += 1
    return exc


StreamEntry = tuple[bytes, dict[bytes, bytes]]


def stream_entries(raw: Any) -> list[StreamEntry]:
    """XRANGE's entries as redis-py parses them. A transaction on a Redis Cluster pipeline
    hands back the raw reply (fields as a flat list), which this parses the same way."""
    return [(entry_id, _fields(fields)) for entry_id, fields in raw or ()]


def hash_fields(raw: Any) -> dict[bytes, bytes]:
    """HGETALL's fields, from a parsed reply or a raw flat list (see `stream_entries`)."""
    return _fields(raw or {})


def _fields(raw: Any) -> dict[bytes, bytes]:
    if isinstance(raw, dict):
        return raw
    return dict(zip(raw[::2], raw[1::2], strict=True))


def unpack(topic: str, packed: bytes) -> Update:
    """`<id> <clock_us> <body>`, as the publish script writes an update's message and every
    `latest` value, or `<kind> <id> <clock_us> <body>`, another kind's message: its `Kind`'s
    letter first (an id is never one letter: it holds a colon)."""
    kind = Kind.UPDATE
    if packed[1:2] == b" ":
        kind = _KIND_OF_LETTER.get(packed[:1], Kind.UPDATE)
        if kind is Kind.UPDATE:
            raise ValueError(f"not a kind: {packed[:1]!r}")
        packed = packed[2:]
    text_id, clock_us, body = packed.split(b" ", 2)
    update_id = UpdateId.issued(text_id.decode())
    return Update.numbered(topic, update_id, int(clock_us), body, kind)


def head(packed: bytes) -> TopicHead:
    """The id and time of a `latest` value, `<id> <clock_us> <body>` (only updates are a
    topic's latest, so no kind's letter), without copying or parsing the body."""
    id_end = packed.index(b" ")
    clock_end = packed.index(b" ", id_end + 1)
    return TopicHead(packed[:id_end].decode(), int(packed[id_end + 1 : clock_end]))


# The letters a message may start with: an update's has none.
_KIND_OF_LETTER = {kind.value.encode(): kind for kind in Kind if kind is not Kind.UPDATE}


def encode_events(events: Sequence[Event]) -> bytes:
    """The log's form of a batch: `[[value, ts_us, tags], ...]`, and for a message
    `[value or null, ts_us, tags, type, data]` (its data as a JSON string of its compact text,
    so that reading the log gives its bytes back as they were, unparsed), with its mark last
    where it has one (`Event.mark`)."""
    return orjson.dumps(
        [
            [e.value, e.ts_us, e.tags]
            if (m := e.message) is None
            else [e.value, e.ts_us, e.tags, m.type, m.data.decode()]
            if not e.mark
            else [e.value, e.ts_us, e.tags, m.type, m.data.decode(), e.mark]
            for e in events
        ]
    )


def decode_events(data: bytes) -> list[Event]:
    events = []
    for item in orjson.loads(data):
        if len(item) == 3:
            value, ts, tags = item
            events.append(Event(float(value), int(ts), tags))
        else:
            value, ts, tags, kind, text, *mark = item
            value = None if value is None else float(value)
            message = Message(kind, text.encode())
            events.append(Event(value, int(ts), tags, message, mark[0] if mark else 0))
    return events


def stream_position(stream_id: bytes) -> tuple[int, int]:
    ms, _, seq = stream_id.partition(b"-")
    return int(ms), int(seq)
