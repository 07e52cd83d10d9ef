"""What crosses the wire to Redis, in one place: the library edge (Redis errors become ours)
and the forms updates and event batches take in messages, `latest` values and the log."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence

import orjson
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from pushsvc.errors import BrokerUnavailable, Fenced
from pushsvc.events import Event
from pushsvc.updates import Update, UpdateId

log = logging.getLogger(__name__)

_UNREACHABLE = (RedisConnectionError, RedisTimeoutError)


@contextlib.contextmanager
def unavailable(action: str) -> Iterator[None]:
    """The library edge: Redis transport errors become BrokerUnavailable (a 503), a fenced
    script becomes Fenced."""
    try:
        yield
    except _UNREACHABLE as exc:
        log.warning("redis unavailable during %s: %s", action, exc)
        # The message reaches HTTP clients: no host or port in it.
        raise BrokerUnavailable(f"Redis is unavailable ({type(exc).__name__})") from None
    except ResponseError as exc:
        if str(exc).startswith("FENCED"):
            raise Fenced(str(exc)) from None
        raise


def unpack(topic: str, packed: bytes) -> Update:
    """`<id> <clock_us> <body>`, as the publish script writes messages and `latest` values."""
    text_id, clock_us, body = packed.split(b" ", 2)
    update_id = UpdateId.issued(text_id.decode())
    return Update.numbered(topic, update_id, int(clock_us), body)


def encode_events(events: Sequence[Event]) -> bytes:
    """The log's form of a batch: `[[value, ts_us, tags], ...]`."""
    return orjson.dumps([[e.value, e.ts_us, e.tags] for e in events])


def decode_events(data: bytes) -> list[Event]:
    return [Event(float(v), int(ts), tags) for v, ts, tags in orjson.loads(data)]


def stream_position(stream_id: bytes) -> tuple[int, int]:
    ms, _, seq = stream_id.partition(b"-")
    return int(ms), int(seq)
