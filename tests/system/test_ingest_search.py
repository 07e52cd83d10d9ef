"""The ingest promises, searched by Hypothesis against a live pushsvc (the embedded broker, and
`web` + `aggregate` over Redis):

* a body is accepted whole or refused whole — 413 past `--max-body` — whatever
  its size, format (JSON, NDJSON) and framing (Content-Length, chunked in chunks of any size,
  or neither: HTTP/1.0, the body ending where the client closes its side);
* whatever times events carry (far past, far future, NaN, milliseconds, RFC 3339 with
  offsets), no topic becomes unusable (an event at the server's time is always accepted
  afterwards) and no accepted event is lost.

The server's limits are small so that examples are cheap. Every accepted event carries a value
of its own, and the topic's history must hold exactly the accepted values, in order: a prefix
of a body taken for all of it, or a refused batch half-logged, shows there.
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from itertools import count
from typing import Any

import pytest
import redis
from harness.live import PushsvcProcess, post, request, wait_until
from harness.redis_server import RedisServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

MAX_BODY = 700
MOST_EVENTS = 9
"""Events in a drawn body: up to a few more than the smallest of them fit in MAX_BODY."""
MAX_FUTURE_S = 1.0  # under the allowed lateness (5 s): an event at "now" is never late
LIMITS = (
    "--tick", "0", "--max-body", str(MAX_BODY),
    "--max-future", f"{MAX_FUTURE_S:g}s", "--history", "10000", "--windows", "1h",
)  # fmt: skip


@dataclass
class Deployment:
    port: int
    values: Iterator[int] = field(default_factory=lambda: count(1))
    """A value no other event of the module carries."""
    redis: RedisServer | None = None
    prefix: str = ""
    """On Redis: where producers may PUBLISH to the bridge (`{prefix}ingest:{topic}`)."""


@pytest.fixture(scope="module", params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def deployment(request: pytest.FixtureRequest) -> Iterator[Deployment]:
    if request.param == "memory":
        server = PushsvcProcess("serve", *LIMITS).start()
        yield Deployment(server.port)
        server.stop()
        return
    redis_server: RedisServer = request.getfixturevalue("redis_server")
    env = {"PUSHSVC_REDIS_URL": redis_server.url, "PUSHSVC_PREFIX": f"s{uuid.uuid4().hex[:8]}:"}
    aggregator = PushsvcProcess("aggregate", *LIMITS, env=env, http=False).start()
    web = PushsvcProcess("web", *LIMITS, env=env).start()
    try:
        aggregator.wait_for_log("bridge: bridging")
        yield Deployment(web.port, redis=redis_server, prefix=env["PUSHSVC_PREFIX"])
    finally:
        web.stop()
        aggregator.stop()


# ---------------------------------------------------------------- raw HTTP


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: Any


def _read_answer(reader: Any) -> Answer:
    status_line = reader.readline()
    assert status_line.startswith(b"HTTP/1."), status_line
    headers = {}
    while (line := reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    body = reader.read(int(headers["content-length"]))
    return Answer(int(status_line.split()[1]), headers, json.loads(body))


def _head(topic: str, content_type: str, version: str, framing: str) -> bytes:
    return (
        f"POST /topics/{topic}/events {version}\r\nHost: pushsvc\r\n"
        f"Content-Type: {content_type}\r\n{framing}\r\n"
    ).encode()


def _chunked(body: bytes, sizes: list[int]) -> bytes:
    out, at, turn = [], 0, 0
    while at < len(body):
        chunk = body[at : at + sizes[turn % len(sizes)]]
        out.append(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        at, turn = at + len(chunk), turn + 1
    return b"".join(out) + b"0\r\n\r\n"


def post_framed(
    port: int,
    topic: str,
    body: bytes,
    content_type: str,
    framing: str,
    chunk_sizes: list[int],
    then: bytes | None = None,
) -> tuple[Answer, Answer | None]:
    """POST `body` in `framing`; with `then` (a JSON event), post it next on the same
    connection where the framing and the answer let the connection live on (a 413 closes
    it, as nginx's does: the rest of a refused body is never read): the server must have
    kept its place in the byte stream. The answers to both."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=20) as sock,
        sock.makefile("rb") as reader,
    ):
        if framing == "close":
            sock.sendall(_head(topic, content_type, "HTTP/1.0", "") + body)
            sock.shutdown(socket.SHUT_WR)
            return _read_answer(reader), None
        if framing == "length":
            sent = _head(topic, content_type, "HTTP/1.1", f"Content-Length: {len(body)}\r\n")
            sock.sendall(sent + body)
        else:
            sent = _head(topic, content_type, "HTTP/1.1", "Transfer-Encoding: chunked\r\n")
            sock.sendall(sent + _chunked(body, chunk_sizes))
        first = _read_answer(reader)
        if first.status == 413:
            assert first.headers["connection"] == "close"
            sock.shutdown(socket.SHUT_WR)  # as a client told to close does
            assert reader.read() == b"", "the connection lived on after a 413"
        if then is None or first.headers.get("connection") == "close":
            return first, None
        length = f"Content-Length: {len(then)}\r\nConnection: close\r\n"
        sock.sendall(_head(topic, "application/json", "HTTP/1.1", length) + then)
        return first, _read_answer(reader)


def history_values(port: int, topic: str) -> list[float]:
    status, _, body = request(port, "GET", f"/topics/{topic}/history?limit=10000")
    if status == 404:
        return []
    assert status == 200, body
    return [update["event"]["value"] for update in json.loads(body)["updates"]]


def settle(port: int, topic: str, expected: list[float]) -> None:
    """Wait until the topic's history ends with the last value expected (every POST before
    it is then applied: one log, in order), then compare the whole of it."""
    wait_until(
        lambda: history_values(port, topic)[-1:] == expected[-1:],
        timeout=30,
        what=f"{topic} has applied value {expected[-1]}",
    )
    assert history_values(port, topic) == expected


def settle_with_late(port: int, topic: str, posted: list[float], late: int) -> None:
    """`settle`, where `late` of the values `posted` were past the grace: those are on the
    topic's late stream, the rest on the topic in the order posted, none lost or twice."""
    wait_until(
        lambda: history_values(port, topic)[-1:] == posted[-1:],
        timeout=30,
        what=f"{topic} has applied value {posted[-1]}",
    )
    on_time, kept_late = history_values(port, topic), history_values(port, f"{topic}.late")
    assert len(kept_late) == late, kept_late
    assert sorted(on_time + kept_late) == sorted(posted)
    gone_late = set(kept_late)
    assert on_time == [value for value in posted if value not in gone_late]


# ---------------------------------------------------------------- bodies


@dataclass(frozen=True)
class Shape:
    """A body to send: a JSON object, array or NDJSON of `len(pads)` events, each padded by a
    tag of that many characters so that sizes fall on both sides of MAX_BODY."""

    pads: tuple[int, ...]
    kind: str
    separator: str
    """Between events: `,` with spaces or newlines in an array, a newline in NDJSON."""
    tail: str = ""
    """After the last NDJSON line: nothing, or blank lines."""

    def render(self, values: list[int]) -> tuple[bytes, str]:
        """The body with these values (all of one width: the size is the shape's) and its
        content type."""
        events = [
            json.dumps({"value": v, "tags": {"p": "x" * pad}} if pad else {"value": v})
            for v, pad in zip(values, self.pads, strict=True)
        ]
        if self.kind == "object":
            return events[0].encode(), "application/json"
        if self.kind == "array":
            return ("[" + self.separator.join(events) + "]").encode(), "application/json"
        return (self.separator.join(events) + self.tail).encode(), "application/x-ndjson"


@st.composite
def shapes(draw: st.DrawFn) -> Shape:
    n = draw(st.integers(1, MOST_EVENTS))
    pads = tuple(draw(st.lists(st.integers(0, 160), min_size=n, max_size=n)))
    kind = draw(st.sampled_from(["object", "array", "ndjson"] if n == 1 else ["array", "ndjson"]))
    if kind == "ndjson":
        newline = draw(st.sampled_from(["\n", "\r\n"]))
        return Shape(pads, kind, newline, newline * draw(st.integers(0, 2)))
    return Shape(pads, kind, draw(st.sampled_from([",", ", ", ",\n  "])))


WIDTH = 10_000_000  # values of eight digits: a body's size does not depend on them


def _values(deployment: Deployment, n: int) -> list[int]:
    return [WIDTH + next(deployment.values) for _ in range(n)]


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(
    shape=shapes(),
    framing=st.sampled_from(["length", "chunked", "close"]),
    chunk_sizes=st.lists(st.integers(1, 300), min_size=1, max_size=5),
)
def test_a_body_is_accepted_whole_or_refused_whole_in_every_framing(
    deployment: Deployment, shape: Shape, framing: str, chunk_sizes: list[int]
) -> None:
    topic = f"b-{uuid.uuid4().hex[:10]}"
    values = _values(deployment, len(shape.pads))
    body, content_type = shape.render(values)
    (sentinel,) = _values(deployment, 1)
    then = json.dumps({"value": sentinel}).encode()
    answer, after = post_framed(
        deployment.port, topic, body, content_type, framing, chunk_sizes, then
    )
    accepted: list[float] = []
    if len(body) > MAX_BODY:
        assert answer.status == 413, (answer, len(body), len(values))
        assert answer.body["error"]["code"] == "payload_too_large"
    else:
        assert (answer.status, answer.body) == (202, {"accepted": len(values)}), len(body)
        accepted = [float(v) for v in values]
    if after is None:  # the connection ended with the body: the next event on another
        status, _, reply = request(deployment.port, "POST", f"/topics/{topic}/events", then)
        after = Answer(status, {}, json.loads(reply))
    assert (after.status, after.body) == (202, {"accepted": 1})
    settle(deployment.port, topic, [*accepted, float(sentinel)])


def test_a_chunked_body_over_the_limit_is_a_json_413_and_changes_nothing(
    deployment: Deployment,
) -> None:
    """Chunks that end exactly at the limit, then more: the part that fits is not taken for
    the body (it was accepted as if it were the whole)."""
    topic = f"c-{uuid.uuid4().hex[:10]}"
    line = b'{"value": 1, "tags": {"p": "' + b"x" * 37 + b'"}}\n'
    body = line * (2 * MAX_BODY // len(line))
    answer, after = post_framed(
        deployment.port, topic, body, "application/x-ndjson", "chunked", [MAX_BODY // 2],
        then=b'{"value": 2}',
    )  # fmt: skip
    assert (answer.status, answer.body["error"]["code"]) == (413, "payload_too_large")
    assert str(MAX_BODY) in answer.body["error"]["message"]
    assert after is None  # the connection closed after the 413: the next on another
    assert post(deployment.port, topic, {"value": 2}) == (202, {"accepted": 1})
    settle(deployment.port, topic, [2.0])


def test_a_close_delimited_body_over_the_limit_is_a_json_413(deployment: Deployment) -> None:
    topic = f"c-{uuid.uuid4().hex[:10]}"
    body = b'{"value": 1}\n' * (MAX_BODY // 10)
    answer, _ = post_framed(deployment.port, topic, body, "application/x-ndjson", "close", [1])
    assert (answer.status, answer.body["error"]["code"]) == (413, "payload_too_large")
    small, _ = post_framed(
        deployment.port, topic, b'{"value": 3}', "application/json", "close", [1]
    )
    assert (small.status, small.body) == (202, {"accepted": 1})
    settle(deployment.port, topic, [3.0])


def test_a_body_without_framing_on_a_connection_kept_open_is_a_411(
    deployment: Deployment,
) -> None:
    """HTTP/1.1 gives such a request no body: what follows its head cannot be told from the
    next request, so pushsvc says so (and closes the connection) rather than answering as if
    the body were empty."""
    topic = f"c-{uuid.uuid4().hex[:10]}"
    with socket.create_connection(("127.0.0.1", deployment.port), timeout=20) as sock:
        sock.sendall(_head(topic, "application/json", "HTTP/1.1", "") + b'{"value": 1}')
        with sock.makefile("rb") as reader:
            answer = _read_answer(reader)
            assert reader.read() == b""  # closed: the unread body is never parsed as a request
    assert (answer.status, answer.body["error"]["code"]) == (411, "length_required")
    assert answer.headers["connection"] == "close"
    assert history_values(deployment.port, topic) == []


def test_the_redis_bridge_applies_the_same_size_and_time_rules(deployment: Deployment) -> None:
    if deployment.redis is None:
        pytest.skip("the bridge runs on Redis")
    topic = f"r-{uuid.uuid4().hex[:10]}"
    client = redis.Redis(port=deployment.redis.port)
    channel = f"{deployment.prefix}ingest:{topic}"
    line = b'{"value": 1, "tags": {"p": "' + b"x" * 200 + b'"}}\n'
    fits = line * 3 + b" " * (MAX_BODY - 3 * len(line))  # three events, MAX_BODY bytes
    assert len(fits) == MAX_BODY
    try:
        for body in (fits + b" ", b'{"value": 2, "ts": 99999999999}', fits, b'{"value": 3}'):
            assert client.publish(channel, body) == 1  # one bridge received it
    finally:
        client.close()
    # Over the limit by a byte, and far ahead: refused; exactly the limit: accepted whole.
    settle(deployment.port, topic, [1.0, 1.0, 1.0, 3.0])


# ---------------------------------------------------------------- event times


def test_an_event_far_ahead_is_a_future_event_and_its_topic_stays_usable(
    deployment: Deployment,
) -> None:
    topic = f"f-{uuid.uuid4().hex[:10]}"
    batch = [{"value": 1}, {"value": 2, "ts": 99999999999}]
    status, _, reply = request(deployment.port, "POST", f"/topics/{topic}/events", batch)
    error = json.loads(reply)["error"]
    assert (status, error["code"], error["index"]) == (400, "future_event", 1)
    assert f"at most {MAX_FUTURE_S:g}s is allowed (--max-future)" in error["message"]
    status, _, _ = request(deployment.port, "POST", f"/topics/{topic}/events", {"value": 3})
    assert status == 202
    settle(deployment.port, topic, [3.0])


SPAN_S = 2 * 3600


def _rfc3339(moment: datetime, offset_min: int, digits: int) -> str:
    """`moment` written in the zone `offset_min` minutes east of UTC, with `digits` fraction
    digits (truncated, or zeros past the sixth); a zero offset as `Z` or `+00:00`."""
    local = moment.astimezone(timezone(timedelta(minutes=offset_min)))
    text = (
        f"{local.year:04d}-{local.month:02d}-{local.day:02d}"
        f"T{local.hour:02d}:{local.minute:02d}:{local.second:02d}"
    )
    if digits:
        text += "." + f"{local.microsecond:06d}{'0' * digits}"[:digits]
    if offset_min == 0 and digits % 2 == 0:
        return text + "Z"
    sign, minutes = ("-", -offset_min) if offset_min < 0 else ("+", offset_min)
    return text + f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


offsets = st.integers(-(23 * 60 + 59), 23 * 60 + 59)
# Relative to the time the example runs: the server's clock then.
# Mostly within the lateness and the future allowed, where events are accepted, else hours off.
near = st.floats(-6.0, MAX_FUTURE_S + 0.5) | st.floats(-SPAN_S, SPAN_S)
times = st.one_of(
    st.just(("none", 0.0)),
    near.map(lambda s: ("near", s)),
    st.floats(-6.2e10, 0.0).map(lambda s: ("epoch", s)),  # far past
    st.floats(1e10, 2.6e11).map(lambda s: ("epoch", s)),  # far future, past year 9999 too
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400"]).map(lambda s: ("literal", s)),
    st.floats(-SPAN_S, SPAN_S).map(lambda s: ("millis", s)),
    st.tuples(near, offsets, st.integers(0, 9)).map(lambda t: ("rfc-near", t)),
    st.tuples(
        st.datetimes(datetime(1, 1, 2), datetime(9999, 12, 30), timezones=st.just(UTC)),
        offsets,
        st.integers(0, 9),
    ).map(lambda t: ("rfc", t)),
)


def _ts_json(kind: str, spec: Any, now_s: float) -> tuple[str | None, float | None]:
    """The `ts` member's JSON text and the time it means in epoch seconds (None: the
    server's time, or not a time at all)."""
    if kind == "none":
        return None, None
    if kind == "near":
        return repr(now_s + spec), now_s + spec
    if kind == "epoch":
        return repr(spec), spec
    if kind == "literal":
        return spec, None
    if kind == "millis":
        return str(int((now_s + spec) * 1000)), None
    if kind == "rfc-near":
        seconds, offset, digits = spec
        moment = datetime.fromtimestamp(now_s + seconds, UTC)
        return json.dumps(_rfc3339(moment, offset, digits)), now_s + seconds
    moment, offset, digits = spec
    return json.dumps(_rfc3339(moment, offset, digits)), moment.timestamp()


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(
    steps=st.lists(
        st.tuples(st.integers(0, 1), st.lists(times, min_size=1, max_size=3)),
        min_size=1,
        max_size=6,
    )
)
def test_no_event_time_makes_a_topic_unusable_or_loses_an_event(
    deployment: Deployment, steps: list[tuple[int, list[tuple[str, Any]]]]
) -> None:
    topics = [f"e-{uuid.uuid4().hex[:10]}" for _ in range(2)]
    logged: dict[str, list[float]] = {topic: [] for topic in topics}
    late: dict[str, int] = dict.fromkeys(topics, 0)
    for which, batch in steps:
        topic = topics[which]
        now_s = time.time()
        events, values, meant = [], [], []
        for kind, spec in batch:
            value = float(next(deployment.values))
            ts, at = _ts_json(kind, spec, now_s)
            events.append(f'{{"value": {value:g}' + (f', "ts": {ts}' if ts else "") + "}")
            values.append(value)
            meant.append(at)
        body = "[" + ", ".join(events) + "]"
        status, _, reply = request(deployment.port, "POST", f"/topics/{topic}/events", body)
        answer = json.loads(reply)
        if status == 202:
            # An event past the grace is kept on the topic's late stream, never refused.
            assert set(answer) <= {"accepted", "late"}, answer
            assert answer["accepted"] + answer.get("late", 0) == len(events), answer
            logged[topic] += values
            late[topic] += answer.get("late", 0)
        else:
            assert status == 400, answer
            code = answer["error"]["code"]
            assert code in ("invalid_event", "malformed_json", "future_event"), (body, answer)
        if any(at is not None and at > now_s + MAX_FUTURE_S + 60 for at in meant):
            assert status == 400, (body, answer)  # no event far ahead is ever taken
        # The topic is still usable: an event at the server's time is accepted.
        value = float(next(deployment.values))
        status, _, reply = request(
            deployment.port, "POST", f"/topics/{topic}/events", {"value": value}
        )
        assert status == 202, (body, reply)
        logged[topic].append(value)
    for topic in topics:
        if logged[topic]:
            settle_with_late(deployment.port, topic, logged[topic], late[topic])
