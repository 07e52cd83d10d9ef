"""Sessions (`[[session]]`) end to end, on the embedded broker, on Redis and on a Redis Cluster
(the sources and the session topic each in a partition of its own, on a primary of its own):
the session topic
holds one event per ended session, equal to the pandas oracle (`support.session_events`) —
late events that extend or join sessions, max_duration cuts, interleaved keys, events
without the key, repeated and out-of-order steps, a funnel that times out — and producers
cannot post to it."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import jsonschema
import pytest
from harness.live import PushsvcProcess, SSEClient, post, request, wait_until
from harness.redis_cluster import RedisClusterServers
from harness.redis_server import RedisServer

from pushsvc.broker.redis.slots import partition_slot
from pushsvc.client import Client, FunnelStep, sessions_of
from pushsvc.core.partitions import DEFAULT_PARTITIONS, partition_of
from support.session_events import (
    STEPS,
    duplicates,
    expected,
    rules,
    scenario,
    session_events,
    window_oracle,
)

# Three partitions of the default 16, whose slots three primaries own (redis-cli's layout):
# the sessionizer reads two partitions and appends to a third, on other nodes of a cluster.
A, B, VISITS = "shop.pages", "shop.clicks", "shop.visits"
S = 1_000_000
BASE_S = 1_763_700_000


@pytest.fixture(
    params=[
        "memory",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("cluster", marks=pytest.mark.cluster),
    ]
)
def server(request: pytest.FixtureRequest, tmp_path: Path, prefix: str) -> Iterator[PushsvcProcess]:
    path = tmp_path / "rules.toml"
    path.write_text(rules(A, B, VISITS))
    partitions = [partition_of(topic, DEFAULT_PARTITIONS) for topic in (A, B, VISITS)]
    assert len(set(partitions)) == 3, partitions
    env = {}
    redis_server = None
    if request.param == "redis":
        redis_server = RedisServer().start()
        env = {"PUSHSVC_REDIS_URL": redis_server.url, "PUSHSVC_PREFIX": prefix}
    elif request.param == "cluster":
        cluster: RedisClusterServers = request.getfixturevalue("redis_cluster")
        owners = {cluster.owner_of(partition_slot(p, DEFAULT_PARTITIONS)).port for p in partitions}
        assert len(owners) == 3, owners
        env = {"PUSHSVC_REDIS_URL": cluster.url, "PUSHSVC_PREFIX": prefix}
    proc = PushsvcProcess("serve", "--tick", "0", "--rules", str(path), env=env).start()
    yield proc
    proc.stop()
    if redis_server is not None:
        redis_server.stop()


def client_stats(port: int, topic: str) -> dict[str, Any]:
    windows: dict[str, Any] = json.loads(request(port, "GET", f"/topics/{topic}/stats")[2])[
        "windows"
    ]
    return windows


def test_the_session_topic_equals_the_pandas_oracle(server: PushsvcProcess) -> None:
    posted = scenario(A, B, seed=11)
    for event in posted:
        status, body = post(server.port, event.topic, event.body())
        assert status == 202, body
    want = expected(posted)
    assert len(want) > 30
    assert any(tags["user"] == "kiosk" for _, _, tags in want[1:])  # cut more than once
    wait_until(
        lambda: len(session_events(server.port, VISITS)) >= len(want),
        timeout=20,
        what="every session to end",
    )
    time.sleep(0.5)  # a duplicate would come now
    got = session_events(server.port, VISITS)
    assert not duplicates(got)
    assert got == want

    # A producer cannot post to the session topic: 400 with a JSON error, nothing changed.
    status, body = post(server.port, VISITS, {"value": 1})
    assert status == 400 and body["error"]["code"] == "session_topic", body
    assert session_events(server.port, VISITS) == want

    # The session topic's own statistics: pandas over the same window of its events.
    clock, oracle = window_oracle(server.port, VISITS, 60 * S)
    status, _, body = request(server.port, "GET", f"/topics/{VISITS}/stats")
    assert status == 200, body
    stats = json.loads(body)
    assert round(stats["ts"] * S) == clock
    window = stats["windows"]["1m"]
    assert oracle["bounce_rate"] is not None and 0 < oracle["bounce_rate"] < 1
    assert window["bounce_rate"] == pytest.approx(oracle["bounce_rate"], rel=1e-12)
    assert window["events_per_session"] == pytest.approx(oracle["events_per_session"], rel=1e-12)
    assert window["active"] == 1  # the closer's session
    assert window["funnel"] == oracle["funnel"]
    assert [step["sessions"] for step in window["funnel"]][:2] != [0, 0]
    # ...as /openapi.json describes them.
    document = json.loads(request(server.port, "GET", "/openapi.json")[2])
    operation = document["paths"]["/topics/{topic}/stats"]["get"]
    schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
    jsonschema.validate(stats, {**schema, "components": document["components"]})
    # ...and as the Python client types them.
    with Client(f"http://127.0.0.1:{server.port}") as client:
        typed = sessions_of(client.stats(VISITS)["windows"], "1m")
    assert typed is not None and typed.active == 1
    assert typed.bounce_rate == window["bounce_rate"]
    assert typed.funnel == [FunnelStep(**step) for step in oracle["funnel"]]
    assert sessions_of(client_stats(server.port, A), "1m") is None
    # A stream may ask for them by name.
    path = f"/topics/{VISITS}/stream?windows=1m&stats=bounce_rate,funnel"
    with SSEClient(server.port, path) as stream:
        _, snapshot = stream.next_data("snapshot")
    assert snapshot["topics"][VISITS]["windows"] == {
        "1m": {"bounce_rate": window["bounce_rate"], "funnel": window["funnel"]}
    }

    text = request(server.port, "GET", "/metrics")[2].decode()
    found = re.search(r'^pushsvc_sessions_ended_total\{outcome="appended"\} (\S+)$', text, re.M)
    assert found and float(found[1]) == len(want), text
    assert re.search(r"^pushsvc_sessions_evicted_total 0\.0$", text, re.M), text
    # One figure, no topic named: /metrics is public (docs/security.md).
    assert re.search(r"^pushsvc_sessions_open 1\.0$", text, re.M), text


def test_past_max_open_the_longest_idle_session_ends_early_marked_evicted(
    tmp_path: Path,
) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(rules(A, B, VISITS).replace("keep_key = true", "keep_key = true\nmax_open = 2"))
    proc = PushsvcProcess("serve", "--tick", "0", "--rules", str(path)).start()
    try:
        # ann, then bob, then cy: three open, one too many: ann's (idle longest) ends at once.
        for at, user in [(0, "ann"), (1, "bob"), (2, "ann"), (3, "bob"), (4, "cy")]:
            body = {"value": 1, "ts": (BASE_S + at), "tags": {"user": user}}
            assert post(proc.port, A, body)[0] == 202
        wait_until(lambda: len(session_events(proc.port, VISITS)) == 1, what="an eviction")
        ((ts, duration, tags),) = session_events(proc.port, VISITS)
        assert (ts, duration) == ((BASE_S + 2) * S, 2.0)
        assert tags == {"events": "2", "reached": "none", "user": "ann", "evicted": "true"}
        text = request(proc.port, "GET", "/metrics")[2].decode()
        assert re.search(r"^pushsvc_sessions_evicted_total 1\.0$", text, re.M), text
        assert re.search(r"^pushsvc_sessions_open 2\.0$", text, re.M), text
    finally:
        proc.stop()


def test_a_pattern_takes_no_session_topic_not_even_another_rules(tmp_path: Path) -> None:
    """Two session rules over `two.*`: each one's session events are in neither's sessions
    (they would only be refused as late, a session's event being dated by its last event)."""
    path = tmp_path / "rules.toml"
    path.write_text(
        '[[rule]]\ntopics = ["two.*"]\nwindows = ["1m"]\n'
        + "".join(
            f'[[session]]\ntopic = "two.{name}"\nfrom = ["two.*"]\nkey = "user"\n'
            'gap = "5s"\nkeep_key = true\n'
            for name in ("visits", "days")
        )
    )
    proc = PushsvcProcess("serve", "--tick", "0", "--rules", str(path)).start()
    try:
        for at, user in [(0, "ann"), (2, "ann"), (100, "closer")]:
            body = {"value": 1, "ts": BASE_S + at, "tags": {"user": user}}
            assert post(proc.port, "two.clicks", body)[0] == 202
        for topic in ("two.visits", "two.days"):
            wait_until(lambda t=topic: session_events(proc.port, t), what=f"{topic}'s session")
        # Each session topic's event was published (and shown to the other rule) by now.
        for topic in ("two.visits", "two.days"):
            [(ts, duration, tags)] = session_events(proc.port, topic)
            assert (ts, duration, tags["user"]) == ((BASE_S + 2) * S, 2.0, "ann")
        text = request(proc.port, "GET", "/metrics")[2].decode()
        assert re.search(r"^pushsvc_session_events_late_total 0\.0$", text, re.M), text
    finally:
        proc.stop()


def _long_window_rules() -> str:
    return f"""
[[rule]]
topics = ["day.clicks"]
windows = ["1m"]

[[rule]]
topics = ["day.visits"]
windows = ["1d"]
stats = ["count", "mean"]

[[session]]
topic = "day.visits"
from = ["day.clicks"]
key = "user"
gap = "6s"
keep_key = true
funnel = {{ tag = "step", steps = {list(STEPS)!r}, within = "20s" }}
""".replace("'", '"')


def _visits(start_s: int, users: dict[str, list[str | None]]) -> list[dict[str, object]]:
    """Each user's clicks two seconds apart (a step, or None for a click of no step) from
    `start_s`, then a closer 90 s later, past every session's end (on Redis too)."""
    bodies: list[dict[str, object]] = []
    for offset, (user, steps) in enumerate(users.items()):
        for i, step in enumerate(steps):
            tags = {"user": user} | ({} if step is None else {"step": step})
            bodies.append({"value": 1, "ts": BASE_S + start_s + offset + 2 * i, "tags": tags})
    bodies.sort(key=lambda body: cast(int, body["ts"]))
    closer = cast(int, bodies[-1]["ts"]) + 90
    bodies.append({"value": 1, "ts": closer, "tags": {"user": f"closer{start_s}"}})
    return bodies


def _day_window_equals_pandas(port: int, sessions: int) -> None:
    """The session topic's latest update carries its session statistics in its `1d` window
    (a long one): pandas over its session events, exact but for `median_s` (1 %)."""
    wait_until(
        lambda: len(session_events(port, "day.visits")) >= sessions,
        timeout=30,
        what=f"{sessions} sessions to end",
    )
    _, oracle = window_oracle(port, "day.visits", 86_400 * S)

    def settled() -> bool:
        window = client_stats(port, "day.visits").get("1d", {})
        return window.get("count") == sessions and "bounce_rate" in window

    wait_until(settled, timeout=10, what="the update of the last session")
    window = client_stats(port, "day.visits")["1d"]
    assert window["bounce_rate"] == oracle["bounce_rate"]
    assert window["events_per_session"] == oracle["events_per_session"]
    assert window["active"] == 1  # the closer's session
    funnel, want = window["funnel"], oracle["funnel"]
    assert isinstance(want, list)
    assert [{**s, "median_s": 0} for s in funnel] == [{**s, "median_s": 0} for s in want]
    for got_step, want_step in zip(funnel, want, strict=True):
        if want_step["median_s"] is None:
            assert got_step["median_s"] is None
        else:
            assert got_step["median_s"] == pytest.approx(want_step["median_s"], rel=0.01)


@pytest.mark.redis
def test_a_session_topic_with_only_a_day_window_keeps_its_statistics_through_a_restart(
    tmp_path: Path,
) -> None:
    """`windows = ["1d"]` (wider than exact_percentiles_up_to): the server starts, and the
    session topic's updates carry its session statistics in the `1d` window; stopped and
    started with `--data-dir`, the sessions of before are still counted (the checkpoint keeps
    them: the log does not keep a day) beside the new ones."""
    path = tmp_path / "rules.toml"
    path.write_text(_long_window_rules())
    args = ("serve", "--tick", "0", "--data-dir", str(tmp_path / "data"), "--rules", str(path))
    before: dict[str, list[str | None]] = {
        "ann": ["view", "cart", None, "checkout"],
        "bob": ["view"],  # a bounce
        "cy": ["view", None, "cart", "checkout", "paid"],
        "dee": [None, None],
    }
    after: dict[str, list[str | None]] = {
        "eve": ["view", "cart"],
        "fay": ["cart"],
        "gus": ["view", None, None, "cart"],
    }
    first = PushsvcProcess(*args).start()
    try:
        for body in _visits(0, before):
            assert post(first.port, "day.clicks", body)[0] == 202
        _day_window_equals_pandas(first.port, len(before))
    finally:
        first.stop()
    second = PushsvcProcess(*args).start()
    try:
        for body in _visits(1_000, after):
            assert post(second.port, "day.clicks", body)[0] == 202
        # The first closer's session ends too.
        _day_window_equals_pandas(second.port, len(before) + 1 + len(after))
    finally:
        second.stop()
