"""Series corrections end to end, on the embedded broker and on Redis: with a rule's grace
(`1m`) beyond the server's lateness (`--grace 2s`), a `?series=` stream receives every point
and every correction once, in the update sequence, each correction marked
`"correction": true` after the point it amends, exactly the messages an uninterrupted
in-process run publishes; the last message of each bucket equals what the series read gives
for it; a stream resumed with `Last-Event-ID` across a correction gets it once; and the
Python client marks a streamed correction (`Point.correction`)."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from harness.live import PushsvcProcess, SSEClient, post, request, wait_caught_up
from harness.redis_server import RedisServer

from pushsvc.aggregate.aggregator import Aggregator
from pushsvc.core.event import Event
from pushsvc.rules.analytics import default_rule, load_rules

S = 1_000_000
RULES = """
[[rule]]
topics = ["fix.*"]
windows = ["10s"]
grace = "1m"
series = ["1s:1h", "10s:1h"]
"""
T0 = 1_763_700_000 * S + 250_000


@pytest.fixture(scope="module")
def rules_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corrections") / "rules.toml"
    path.write_text(RULES)
    return path


@pytest.fixture(scope="module", params=["memory", "redis"])
def server(request: pytest.FixtureRequest, rules_path: Path) -> Iterator[PushsvcProcess]:
    args = ["serve", "--tick", "0", "--grace", "2s", "--rules", str(rules_path)]
    redis_server = None
    if request.param == "redis":
        redis_server = RedisServer().start()
        args += ["--redis-url", redis_server.url, "--prefix", "fix:"]
    proc = PushsvcProcess(*args).start()
    yield proc
    proc.stop()
    if redis_server is not None:
        redis_server.stop()


def _batches(seed: int) -> list[list[tuple[int, float]]]:
    """Batches of events, one in six late within the grace (some into the same bucket as the
    one before it), then one event past every bucket's grace."""
    rng = random.Random(seed)
    clock, batches = T0, []
    for _ in range(40):
        batch = []
        for _ in range(rng.randint(1, 6)):
            if rng.random() < 1 / 6:
                ts = clock - rng.randint(1, 55 * S)
                batch.append((ts, float(rng.randint(0, 20))))
                ts += rng.randint(0, S // 4)
            else:
                clock += rng.randint(0, 1500) * 1000
                ts = clock
            batch.append((ts, float(rng.randint(0, 20))))
        batches.append(batch)
    batches.append([(clock + 10 * 60 * S, 0.0)])
    return batches


def _reference(rules_path: Path, topic: str, batches: list[list[tuple[int, float]]]) -> list[Any]:
    """The point messages an uninterrupted run publishes (without ids), in order."""
    rules = load_rules(str(rules_path), default_rule((10 * S,), ("count",)))
    aggregator = Aggregator(rules=rules, wall_clock=lambda: 0, lateness_us=2 * S)
    out = []
    for batch in batches:
        events = [Event(value, ts, None) for ts, value in batch]
        drafts = aggregator.apply_events(topic, events)
        out += [orjson.loads(d.body) for d in drafts if d.series is not None]
    return out


def _read(port: int, topic: str, resolution: str) -> list[dict[str, Any]]:
    query = f"resolution={resolution}&since=0"
    status, _, body = request(port, "GET", f"/topics/{topic}/series?{query}")
    assert status == 200, body
    points: list[dict[str, Any]] = json.loads(body)["points"]
    return points


def test_a_stream_gets_each_point_and_each_correction_once(
    server: PushsvcProcess, rules_path: Path
) -> None:
    port = server.port
    topic = "fix.stream"
    batches = _batches(seed=3)
    expected = _reference(rules_path, topic, batches)
    corrections = [m for m in expected if m.get("correction")]
    assert len(corrections) >= 5  # the draw makes some, of both tiers
    assert {m["resolution"] for m in corrections} == {"1s", "10s"}
    with SSEClient(port, f"/topics/{topic}/stream?series=1s&series=10s") as stream:
        stream.next_data("snapshot")
        for batch in batches:
            body = [{"value": value, "ts": ts / S} for ts, value in batch]
            assert post(port, topic, body)[0] == 202
        messages = []
        while len(messages) < len(expected):
            message = stream.next()
            if message.event == "point":
                messages.append(message)
    ids = [m.id for m in messages]
    assert len(set(ids)) == len(ids)
    got = [{k: v for k, v in json.loads(m.data).items() if k != "id"} for m in messages]
    assert got == expected
    # A bucket's first message is its point, each later one a correction of it.
    seen: dict[tuple[str, float], dict[str, Any]] = {}
    for message in got:
        key = (message["resolution"], message["point"]["t"])
        assert message.get("correction", False) is (key in seen), key
        seen[key] = message["point"]
    wait_caught_up(port)
    for resolution in ("1s", "10s"):
        stored = {p["t"]: p for p in _read(port, topic, resolution)}
        last = {t: p for (r, t), p in seen.items() if r == resolution}
        assert stored == last, resolution


def test_the_client_marks_a_streamed_correction(server: PushsvcProcess) -> None:
    from pushsvc.client import Client, Point

    port = server.port
    topic = "fix.client"
    second = T0 - T0 % S
    with Client(f"http://127.0.0.1:{port}") as client:
        messages = client.subscribe(topic, series=["1s"])
        next(messages)  # the snapshot: subscribed
        points = (m for m in messages if isinstance(m, Point))
        assert post(port, topic, [{"value": 1.0, "ts": second / S}])[0] == 202
        assert post(port, topic, [{"value": 2.0, "ts": second / S + 3}])[0] == 202
        first = next(points)
        assert (first.point["count"], first.correction) == (1, False)
        late = [{"value": 5.0, "ts": second / S + 0.5}, {"value": 1.0, "ts": second / S + 4}]
        assert post(port, topic, late)[0] == 202
        corrected = next(points)
        assert corrected.correction and corrected.point["t"] == first.point["t"]
        assert (corrected.point["count"], corrected.point["sum"]) == (2, 6.0)


Message = tuple[str, str, Any]
"""(event, id, parsed data) of an SSE message."""


def _until(stream: SSEClient, last: Callable[[Message], bool]) -> list[Message]:
    """Every message but the snapshot, up to and with the first that `last` holds for."""
    out: list[Message] = []
    while True:
        message = stream.next()
        if message.event != "snapshot":
            out.append((message.event, message.id, json.loads(message.data)))
            if last(out[-1]):
                return out


def _update_of(value: float) -> Callable[[Message], bool]:
    return lambda m: m[0] == "stats" and m[2]["event"]["value"] == value


def _is_point(message: Message) -> bool:
    return message[0] == "point"


@pytest.mark.parametrize("query", ["?series=1s", ""], ids=["series", "plain"])
@pytest.mark.parametrize("drop", ["before-the-late-event", "between-it-and-its-correction"])
def test_a_stream_resumed_across_a_correction_gets_it_once(
    server: PushsvcProcess, query: str, drop: str
) -> None:
    """A subscriber that received a bucket's point drops its connection, and a late event
    corrects that bucket: while it is away (or after it got the late event's update, before
    the correction). Resumed with `Last-Event-ID` (once all is published: from the history),
    it gets what it missed once, and nothing it had: what it holds is what a subscriber that
    stayed connected received, message for message, the correction once. A plain stream
    (no points) gets the late event's update once."""
    port = server.port
    topic = f"fix.resume.{drop}.{'series' if query else 'plain'}"
    path = f"/topics/{topic}/stream{query}"
    second = T0 - T0 % S
    # The second event takes the clock past the first's bucket and its 2 s grace: published.
    on_time = [{"value": 1.0, "ts": second / S}, {"value": 2.0, "ts": second / S + 3}]
    # A late event into that bucket; then one that takes the clock past the next whole
    # second, which makes the bucket's correction.
    late = [{"value": 5.0, "ts": second / S + 0.5}]
    ahead = [{"value": 1.0, "ts": second / S + 4}]
    with SSEClient(port, path) as stayed:
        stayed.next_data("snapshot")
        with SSEClient(port, path) as dropped:
            dropped.next_data("snapshot")
            assert post(port, topic, on_time)[0] == 202
            held = _until(dropped, _is_point if query else _update_of(2.0))
            if drop == "between-it-and-its-correction":
                assert post(port, topic, late)[0] == 202
                held += _until(dropped, _update_of(5.0))
            # What it had parsed when it dropped was received, as an EventSource's would be.
            held += [(m.event, m.id, json.loads(m.data)) for m in dropped.take_parsed()]
            resume_from = dropped.last_event_id
        if drop == "before-the-late-event":
            assert post(port, topic, late)[0] == 202
        assert post(port, topic, ahead)[0] == 202
        wait_caught_up(port)
        with SSEClient(port, path, headers={"Last-Event-ID": resume_from}) as resumed:
            assert post(port, topic, {"value": 99.0, "ts": second / S + 4.5})[0] == 202
            after = _until(resumed, _update_of(99.0))
        everything = _until(stayed, _update_of(99.0))
    assert held + after == everything
    ids = [i for _, i, _ in everything]
    assert len(set(ids)) == len(ids)
    updates = [
        (d["event"]["value"], d.get("late", False)) for e, _, d in everything if e == "stats"
    ]
    assert updates == [(1.0, False), (2.0, False), (5.0, True), (1.0, False), (99.0, False)]
    points = [d for e, _, d in everything if e == "point"]
    if query:
        first, correction = points
        assert correction in [d for _, _, d in after]  # missed, then resumed, once
        assert "correction" not in first and correction["correction"] is True
        assert first["point"]["t"] == correction["point"]["t"] == second / S
        assert (correction["point"]["count"], correction["point"]["sum"]) == (2, 6.0)
        assert _read(port, topic, "1s")[0] == correction["point"]
    else:
        assert points == []
