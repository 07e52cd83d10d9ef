"""Both Python clients, `Client` and `AsyncClient`, against real `pushsvc serve` processes on the
embedded broker and on Redis: publish, history, series (pandas' `resample` is the oracle),
stats, topics, rules; typed subscriptions that resume with no gap and no duplicate, across a
restart with `--data-dir` too; a retry after a dropped connection logged once; 429's
Retry-After honoured; errors that carry the server's status and code; `frames()`; 100
concurrent async subscriptions on one real asyncio loop.

Each test runs once per client: the async one through `Blocking`, which drives it on a real
asyncio loop of its own (an `asyncio.Runner`), one awaited step at a time."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pandas as pd
import pytest
from harness.live import SRC, PushsvcProcess, post, request, serving_on, wait_until
from harness.net import free_port

from pushsvc.client import (
    AlertChange,
    ApiError,
    AsyncClient,
    Backoff,
    Client,
    Published,
    Snapshot,
    StreamMessage,
    StreamUpdate,
    Unreachable,
)
from support.auth_tokens import SECRET, hs256
from support.proxies import AnswerLosingProxy

T0 = 1_763_700_000.0
T = TypeVar("T")


class Sleeps:
    """The waits a client asked for, in order; each waited for real (a server's limit must
    really pass before the retry)."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def blocking(self, seconds: float) -> None:
        self.waits.append(seconds)
        time.sleep(seconds)

    async def awaiting(self, seconds: float) -> None:
        self.waits.append(seconds)
        await asyncio.sleep(seconds)


class Blocking:
    """An AsyncClient with Client's blocking methods: every call is awaited on a real asyncio
    loop of this object's own; a subscription is stepped one `__anext__` at a time on it."""

    def __init__(
        self, url: str, *, token: str | None, backoff: Backoff | None, sleeps: Sleeps
    ) -> None:
        self._runner = asyncio.Runner()
        self._client = self._runner.run(self._make(url, token, backoff, sleeps))

    @staticmethod
    async def _make(
        url: str, token: str | None, backoff: Backoff | None, sleeps: Sleeps
    ) -> AsyncClient:
        return AsyncClient(url, token=token, backoff=backoff, sleep=sleeps.awaiting)

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._client, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            result = method(*args, **kwargs)
            if isinstance(result, AsyncIterator):
                return self._iterate(result)
            return self._runner.run(result)

        return call

    def _iterate(self, messages: AsyncIterator[T]) -> Iterator[T]:
        try:
            while True:
                try:
                    yield self._runner.run(anext(messages))
                except StopAsyncIteration:
                    return
        finally:
            self._runner.run(messages.aclose())  # type: ignore[attr-defined]

    def close(self) -> None:
        self._runner.run(self._client.aclose())
        self._runner.close()


class Waiting(Client):
    """A Client whose `publish` waits for its outcome (batched, sent at once as it is waited
    for), as the tests shared with the AsyncClient read it."""

    def publish(self, *args: Any, **kwargs: Any) -> Published:  # type: ignore[override]
        return super().publish(*args, **kwargs).result()


class MakeClient(Protocol):
    def __call__(
        self, url: str, *, backoff: Backoff | None = None, token: str | None = None
    ) -> Any: ...


@pytest.fixture(params=["Client", "AsyncClient"])
def make_client(request: pytest.FixtureRequest) -> Iterator[MakeClient]:
    """Makes clients of one kind (closed after the test); their waits are in `sleeps`."""
    made: list[Any] = []
    sleeps = Sleeps()
    request.node.sleeps = sleeps

    def make(url: str, *, backoff: Backoff | None = None, token: str | None = None) -> Any:
        if request.param == "Client":
            client: Any = Waiting(url, token=token, backoff=backoff, sleep=sleeps.blocking)
        else:
            client = Blocking(url, token=token, backoff=backoff, sleeps=sleeps)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def waits(request: pytest.FixtureRequest) -> list[float]:
    sleeps: Sleeps = request.node.sleeps
    return sleeps.waits


def rows(client: Any, topic: str) -> int:
    """How many updates the topic's history holds so far: none while the topic is unknown
    (on Redis its first update follows the 202), which `history` answers with a 404."""
    try:
        return len(client.history(topic))
    except ApiError as unknown:
        if unknown.status != 404:
            raise
        return 0


@pytest.fixture(scope="module", params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def pushsvc(request: pytest.FixtureRequest) -> Iterator[PushsvcProcess]:
    with serving_on(request.param, "--tick", "0", "--heartbeat", "1s") as proc:
        yield proc


def _events(count: int, start: float = T0, step: float = 0.4) -> list[dict[str, Any]]:
    return [
        {"value": float((i * 7) % 11), "ts": start + i * step, "tags": {"k": "v"}}
        for i in range(count)
    ]


def test_publish_then_read_history_series_stats_topics_and_rules(
    pushsvc: PushsvcProcess, make_client: MakeClient, topic: str
) -> None:
    client = make_client(pushsvc.base)
    events = _events(20)
    assert client.publish(topic, events[:12]) == 12
    assert client.publish(topic, events[12]) == 1  # one event, not in a list
    assert client.publish(topic, events[13:]) == 7

    # A 202 means logged: the aggregator's updates follow.
    wait_until(lambda: rows(client, topic) == len(events), what="every update")
    history = client.history(topic)
    assert history["value"].tolist() == [e["value"] for e in events]
    assert history["id"].is_unique and history.attrs["gap"] is False
    assert history.attrs["resume_id"] == history["id"].iloc[-1]

    # Buckets of 1 s close once the topic clock passes their end plus the 5 s lateness.
    assert client.publish(topic, {"value": 0.0, "ts": T0 + 20}) == 1
    wait_until(lambda: rows(client, topic) == len(events) + 1, what="the last update")
    series = client.series(topic, resolution="1s", until=T0 + 8)
    frame = pd.DataFrame(
        {"value": [e["value"] for e in events]},
        index=pd.to_datetime([round(e["ts"] * 1e6) for e in events], unit="us", utc=True),
    )
    expected = frame["value"].resample("1s").agg(["count", "sum", "mean", "min", "max"])
    expected = expected[
        (expected["count"] > 0) & (expected.index < pd.Timestamp(T0 + 8, unit="s", tz="UTC"))
    ]
    got = series[["count", "sum", "mean", "min", "max"]]
    pd.testing.assert_frame_equal(
        got, expected, check_names=False, check_freq=False, check_dtype=False
    )

    stats = client.stats(topic)
    assert stats["topic"] == topic and stats["windows"]["10s"]["count"] == 1
    assert topic in [t["topic"] for t in client.topics()]
    assert "digest" in client.rules()
    assert client.alerts() == []


def test_subscribe_yields_typed_messages_and_resumes_from_an_id(
    pushsvc: PushsvcProcess, make_client: MakeClient, topic: str
) -> None:
    client = make_client(pushsvc.base)
    messages = client.subscribe(topic)
    snapshot = next(messages)
    assert isinstance(snapshot, Snapshot) and not snapshot.gap
    assert post(pushsvc.port, topic, {"value": 2.5, "ts": T0, "tags": {"k": "v"}})[0] == 202
    update = next(messages)
    assert isinstance(update, StreamUpdate)
    assert (update.topic, update.ts, update.reason) == (topic, T0, "event")
    assert update.event is not None and (update.event.value, update.event.tags) == (2.5, {"k": "v"})
    assert update.windows["10s"]["count"] == 1 and update.windows["10s"]["var"] is None
    messages.close()

    # Missed while away: exactly those, replayed first (no snapshot: nothing was lost).
    for value in (3.0, 4.0):
        assert post(pushsvc.port, topic, {"value": value})[0] == 202
    resumed = client.subscribe([topic], last_event_id=update.id, windows=["10s"], stats=["count"])
    missed = [next(resumed), next(resumed)]
    assert all(isinstance(m, StreamUpdate) for m in missed)
    assert [m.event.value for m in missed if isinstance(m, StreamUpdate) and m.event] == [3.0, 4.0]
    # The two came now, long after T0: the 10 s window holds them alone; only what was asked.
    assert [m.windows for m in missed if isinstance(m, StreamUpdate)] == [
        {"10s": {"count": 1}},
        {"10s": {"count": 2}},
    ]
    resumed.close()


def test_a_subscription_resumes_across_a_restart_with_data_dir_with_no_gap_and_no_duplicate(
    make_client: MakeClient, topic: str, tmp_path: Path
) -> None:
    args = ("serve", "--port", str(free_port()), "--tick", "0", "--data-dir", str(tmp_path))
    first = PushsvcProcess(*args).start()
    client = make_client(first.base, backoff=Backoff(base=0.05, cap=0.2))
    messages = client.subscribe(topic)
    received: list[StreamMessage] = [next(messages)]
    second: PushsvcProcess | None = None
    try:
        for i in range(3):
            assert post(first.port, topic, {"value": float(i), "ts": T0 + i})[0] == 202
        received += [next(messages) for _ in range(3)]
        first.stop()
        second = PushsvcProcess(*args).start()
        for i in range(3, 6):
            assert post(second.port, topic, {"value": float(i), "ts": T0 + i})[0] == 202
        while sum(isinstance(m, StreamUpdate) for m in received) < 6:
            received.append(next(messages))
        snapshots = [m for m in received if isinstance(m, Snapshot)]
        assert snapshots and not any(s.gap for s in snapshots)
        updates = [m for m in received if isinstance(m, StreamUpdate)]
        assert [u.event.value for u in updates if u.event] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
        _, _, body = request(second.port, "GET", f"/topics/{topic}/history")
        assert [u.id for u in updates] == [u["id"] for u in json.loads(body)["updates"]]
    finally:
        messages.close()
        first.stop()
        if second is not None:
            second.stop()


def test_a_retry_after_a_dropped_connection_is_logged_once(
    request: pytest.FixtureRequest, pushsvc: PushsvcProcess, make_client: MakeClient, topic: str
) -> None:
    proxy = AnswerLosingProxy(pushsvc.port)
    try:
        client = make_client(proxy.base, backoff=Backoff(retries=3, cap=0.0))
        assert client.publish(topic, [{"value": 1}, {"value": 2}]) == 2
        assert proxy.lost == 1 and len(waits(request)) == 1
        first, retry = proxy.keys()
        assert first and first == retry
        assert client.publish(topic, {"value": 3}) == 1
        assert proxy.keys()[2] not in ("", first)  # the next batch: a fresh key
    finally:
        proxy.close()
    direct = make_client(pushsvc.base)
    wait_until(lambda: rows(direct, topic) == 3, what="three updates")
    assert direct.history(topic)["value"].tolist() == [1.0, 2.0, 3.0]


def test_publish_waits_the_retry_after_of_a_429(
    request: pytest.FixtureRequest, make_client: MakeClient, topic: str
) -> None:
    # Two events per second, a burst of two: a batch of three leaves the bucket in debt, so
    # the next POST is refused with Retry-After: 1 (until it refills).
    proc = PushsvcProcess("serve", "--tick", "0", "--publish-rate", "2").start()
    try:
        client = make_client(proc.base, backoff=Backoff(retries=3, base=0.01))
        assert client.publish(topic, [{"value": 1}, {"value": 2}, {"value": 3}]) == 3
        assert waits(request) == []
        assert client.publish(topic, {"value": 4}) == 1
        assert waits(request) == [1]  # what the server said, not the 0.01 s backoff
        # A 202 means logged: the aggregator's updates follow.
        wait_until(lambda: rows(client, topic) == 4, what="four updates")
        assert client.history(topic)["value"].tolist() == [1, 2, 3, 4]
    finally:
        proc.stop()


def test_publish_raises_at_once_when_the_server_asks_for_a_longer_wait_than_it_takes(
    request: pytest.FixtureRequest, make_client: MakeClient, topic: str
) -> None:
    # One event in 1000 s: the second is refused with a Retry-After far over a minute.
    proc = PushsvcProcess("serve", "--tick", "0", "--publish-rate", "0.001").start()
    try:
        client = make_client(proc.base, backoff=Backoff(retries=5, max_retry_after=60))
        client.publish(topic, {"value": 1})
        with pytest.raises(ApiError) as refused:
            client.publish(topic, {"value": 2})
        assert (refused.value.status, refused.value.code) == (429, "rate_limited")
        assert refused.value.retry_after is not None and refused.value.retry_after > 60
        assert waits(request) == []
    finally:
        proc.stop()


def test_errors_carry_the_status_and_the_servers_code_and_are_not_retried(
    request: pytest.FixtureRequest, pushsvc: PushsvcProcess, make_client: MakeClient, topic: str
) -> None:
    client = make_client(pushsvc.base)
    with pytest.raises(ApiError) as refused:
        client.publish(topic, [{"value": 1}, {"value": "twelve"}])
    error = refused.value
    assert (error.status, error.code, error.index) == (400, "invalid_event", 1)
    assert "value" in error.message
    with pytest.raises(ApiError) as bad_topic:
        client.history("no spaces allowed")
    assert (bad_topic.value.status, bad_topic.value.code) == (400, "invalid_topic")
    with pytest.raises(ApiError) as bad_tier:
        client.series(topic, resolution="7s")
    assert bad_tier.value.status == 400 and bad_tier.value.code is not None
    assert waits(request) == []
    with pytest.raises(ApiError) as unknown:  # the bad batch changed nothing
        client.history(topic)
    assert (unknown.value.status, unknown.value.code) == (404, "not_found")
    assert waits(request) == []


def test_history_and_stats_agree_that_an_unknown_topic_is_not_found(
    pushsvc: PushsvcProcess, make_client: MakeClient, topic: str
) -> None:
    client = make_client(pushsvc.base)
    for read in (client.stats, client.history):
        with pytest.raises(ApiError) as unknown:
            read(topic)
        assert (unknown.value.status, unknown.value.code) == (404, "not_found")
    # A topic that has updates, none of them from `since` on: an empty frame, as before.
    assert client.publish(topic, {"value": 1.0, "ts": T0}) == 1
    wait_until(lambda: rows(client, topic) == 1, what="its update")
    assert client.history(topic, since=T0 + 60).empty


def test_publish_takes_a_bare_number_and_names_what_it_takes_otherwise(
    pushsvc: PushsvcProcess, make_client: MakeClient, topic: str
) -> None:
    client = make_client(pushsvc.base)
    assert client.publish(topic, 12.5) == 1
    assert client.publish(topic, [1, {"value": 2}]) == 2
    for wrong in ("12.5", None, True, [None]):
        with pytest.raises(TypeError, match=r"an event is a number or a mapping like \{'value'"):
            client.publish(topic, wrong)
    wait_until(lambda: rows(client, topic) == 3, what="three updates")
    assert client.history(topic)["value"].tolist() == [12.5, 1.0, 2.0]


def test_an_unreachable_server_is_retried_then_raised(
    request: pytest.FixtureRequest, make_client: MakeClient, topic: str
) -> None:
    client = make_client(f"http://127.0.0.1:{free_port()}", backoff=Backoff(retries=2, cap=0.0))
    with pytest.raises(Unreachable) as lost:
        client.publish(topic, {"value": 1})
    assert lost.value.status is None and "cannot reach" in str(lost.value)
    assert len(waits(request)) == 2


class RestartingSleeps(Sleeps):
    """Sleeps that start the server again once the client has waited `after` times (a restart
    that lasts longer than the old budget of five retries), then wait as usual."""

    def __init__(self, server: PushsvcProcess, after: int) -> None:
        super().__init__()
        self.server = server
        self.after = after

    def _maybe_restart(self) -> None:
        if len(self.waits) == self.after:
            self.server.start()

    def blocking(self, seconds: float) -> None:
        super().blocking(seconds)
        self._maybe_restart()

    async def awaiting(self, seconds: float) -> None:
        await super().awaiting(seconds)
        self._maybe_restart()


@pytest.mark.parametrize("kind", ["Client", "AsyncClient"])
def test_publish_retries_through_a_restart_longer_than_five_retries(kind: str, topic: str) -> None:
    """During a server's restart a publish is retried for up to 30 s by default, however many
    tries that takes (fast ones here): it used to raise Unreachable after five retries."""
    port = str(free_port())
    server = PushsvcProcess("serve", "--port", port, "--tick", "0").start()
    server.stop()
    sleeps = RestartingSleeps(server, after=8)
    # Only how long each wait is differs from the default backoff: the budget is the default's.
    fast = Backoff(base=0.01, cap=0.05)
    client: Any = (
        Client(server.base, backoff=fast, sleep=sleeps.blocking)
        if kind == "Client"
        else Blocking(server.base, token=None, backoff=fast, sleeps=sleeps)
    )
    try:
        assert client.publish(topic, [{"value": 1.0}, {"value": 2.0}]) == 2
        assert len(sleeps.waits) >= 8  # restarted at the 8th: the next try may go through
        # A 202 means logged: the aggregator's updates follow.
        wait_until(lambda: rows(client, topic) == 2, what="two updates")
        assert client.history(topic)["value"].tolist() == [1.0, 2.0]
    finally:
        client.close()
        server.stop()


def test_publish_gives_up_when_its_time_is_up(topic: str) -> None:
    """`Backoff.give_up_after`: no attempt starts later than that after the first; then the
    last error is raised."""
    sleeps = Sleeps()
    client = Client(
        f"http://127.0.0.1:{free_port()}",
        backoff=Backoff(base=0.01, cap=0.05, give_up_after=0.5),
        sleep=sleeps.blocking,
    )
    started = time.monotonic()
    with client, pytest.raises(Unreachable):
        client.publish(topic, {"value": 1.0}).result()
    assert time.monotonic() - started < 0.5 + 2.0  # the last try's refusal is prompt
    assert len(sleeps.waits) > 5


def test_a_subscription_to_an_unreachable_server_warns_each_retry_and_gives_up_at_max_retries(
    request: pytest.FixtureRequest, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    client = make_client(url, backoff=Backoff(cap=0.0))
    with caplog.at_level(logging.WARNING, logger="pushsvc.client"), pytest.raises(Unreachable):
        next(iter(client.subscribe("orders", max_retries=3)))
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 3 == len(waits(request))
    assert all(
        re.fullmatch(rf"cannot reach {url}/: ConnectError: .*; retrying in 0\.0 s", line)
        for line in warned
    ), warned


def test_a_token_opens_its_scope_and_a_refusal_raises_at_once(
    request: pytest.FixtureRequest, make_client: MakeClient
) -> None:
    proc = PushsvcProcess("serve", "--tick", "0", env={"PUSHSVC_JWT_KEY": SECRET}).start()
    try:
        token = hs256(publish=["private"], subscribe=["private"])
        holder = make_client(proc.base, token=token)
        messages = holder.subscribe("private")
        assert isinstance(next(messages), Snapshot)
        assert holder.publish("private", {"value": 1.5}) == 1
        update = next(messages)
        assert isinstance(update, StreamUpdate) and update.topic == "private"
        messages.close()
        with pytest.raises(ApiError) as forbidden:
            holder.publish("other", {"value": 1})
        assert (forbidden.value.status, forbidden.value.code) == (403, "forbidden")
        anonymous = make_client(proc.base)
        with pytest.raises(ApiError) as refused:
            next(anonymous.subscribe("private"))
        assert (refused.value.status, refused.value.code) == (401, "unauthorized")
        assert waits(request) == []
    finally:
        proc.stop()


def test_frames_grow_from_the_history_with_every_live_update(
    pushsvc: PushsvcProcess, make_client: MakeClient, topic: str
) -> None:
    client = make_client(pushsvc.base)
    assert client.publish(topic, _events(3)) == 3
    wait_until(lambda: rows(client, topic) == 3, what="three updates")
    frames = client.frames(topic, every="100ms")
    first = next(frames)
    assert first["value"].tolist() == [0.0, 7.0, 3.0]
    assert client.publish(topic, _events(2, start=T0 + 5)) == 2
    grown = next(frames)
    while len(grown) < 5:  # the two may arrive in two intervals
        grown = next(frames)
    frames.close()
    pd.testing.assert_frame_equal(grown, client.history(topic), check_like=False)
    assert grown.attrs["resume_id"] == grown["id"].iloc[-1]


def test_frames_keep_coming_while_updates_never_pause(
    pushsvc: PushsvcProcess, make_client: MakeClient, topic: str
) -> None:
    # Batches of 200 updates back to back, frames every 100 ms: a frame falls due while the
    # messages never stop coming, so it must not wait for a quiet moment.
    client = make_client(pushsvc.base)
    assert client.publish(topic, {"value": 0.0}) == 1
    wait_until(lambda: rows(client, topic) == 1, what="the first update")
    frames = client.frames(topic, every="100ms")
    next(frames)
    stop = threading.Event()

    def trickle() -> None:
        while not stop.is_set():
            assert post(pushsvc.port, topic, [{"value": 1.0}] * 200)[0] == 202

    producer = threading.Thread(target=trickle, daemon=True)
    producer.start()
    try:
        sizes = [len(next(frames)) for _ in range(4)]
        assert not stop.is_set()  # four frames came while the producer was still posting
    finally:
        stop.set()
        producer.join()
        frames.close()
    assert sizes == sorted(sizes) and len(set(sizes)) == 4  # each grew


def _watching(port: int, topic: str) -> int:
    """The streams the server holds on `topic` (GET /topics)."""
    listed = json.loads(request(port, "GET", "/topics")[2])["topics"]
    return sum(int(t["subscribers"]) for t in listed if t["topic"] == topic)


@pytest.mark.parametrize("ending", ["the frames closed", "the client closed"])
def test_a_frames_reader_ends_at_once_and_quietly(
    ending: str, topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    """`frames()` reads its stream in a thread. On a quiet topic (no heartbeat for a minute)
    that thread ends, and the server lets go of its stream, as soon as the frames or the
    client are closed, with nothing logged. It used to wait for the next message: closing
    the client under it then looked like a lost connection, warned "cannot reach" and
    retried, in whatever test ran next."""
    proc = PushsvcProcess("serve", "--tick", "0", "--heartbeat", "60s").start()
    client = Client(proc.base)
    try:
        assert client.publish(topic, {"value": 1.0}) == 1
        wait_until(lambda: rows(client, topic) == 1, what="the update")
        with caplog.at_level(logging.WARNING, logger="pushsvc.client"):
            frames = client.frames(topic, every="100ms")
            next(frames)  # the history; the reader starts with the next
            assert client.publish(topic, {"value": 2.0}) == 1
            assert len(next(frames)) == 2
            assert _watching(proc.port, topic) == 1
            if ending == "the frames closed":
                frames.close()
            else:
                client.close()

            def reading() -> bool:
                return any(t.name == f"pushsvc-frames-{topic}" for t in threading.enumerate())

            wait_until(lambda: not reading(), timeout=3, what="the reader thread ended")
            wait_until(lambda: _watching(proc.port, topic) == 0, timeout=3, what="its stream gone")
            frames.close()
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    finally:
        client.close()
        proc.stop()


def test_subscribe_yields_alert_changes_of_the_alerts_topic(
    make_client: MakeClient, topic: str, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(
        '[[alert]]\nname = "hot"\ntopics = ["*"]\nwhen = "max[10s] > 90"\n'
        'labels = { severity = "page" }\n'
    )
    proc = PushsvcProcess("serve", "--tick", "0", "--rules", str(rules)).start()
    try:
        client = make_client(proc.base)
        changes = client.subscribe("_alerts")
        assert isinstance(next(changes), Snapshot)
        assert (
            client.publish(topic, [{"value": 20.0, "ts": T0}, {"value": 95.0, "ts": T0 + 1}]) == 2
        )
        fired = next(changes)
        assert isinstance(fired, AlertChange)
        assert (fired.alert, fired.topic, fired.group, fired.state) == (
            "hot",
            topic,
            None,
            "firing",
        )
        assert (fired.value, fired.since, fired.labels) == (95.0, T0 + 1, {"severity": "page"})
        assert client.publish(topic, {"value": 20.0, "ts": T0 + 20}) == 1
        resolved = next(changes)
        assert isinstance(resolved, AlertChange) and resolved.state == "resolved"
        assert resolved.since == T0 + 20
        changes.close()
        assert client.alerts() == []
    finally:
        proc.stop()


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_hundred_concurrent_async_subscriptions_each_see_their_updates(
    pushsvc: PushsvcProcess,
) -> None:
    topics = [f"c-{uuid.uuid4().hex[:8]}-{i}" for i in range(100)]
    opened = 0
    all_open = asyncio.Event()

    async def watch(client: AsyncClient, topic: str) -> list[float]:
        nonlocal opened
        values: list[float] = []
        async for message in client.subscribe(topic):
            if isinstance(message, Snapshot):
                opened += 1
                if opened == len(topics):
                    all_open.set()
            elif isinstance(message, StreamUpdate) and message.event is not None:
                values.append(message.event.value)
                if len(values) == 2:
                    return values
        raise AssertionError("the subscription ended")

    async with AsyncClient(pushsvc.base) as client:
        watchers = [asyncio.create_task(watch(client, t)) for t in topics]
        await asyncio.wait_for(all_open.wait(), 60)
        for i, topic in enumerate(topics):
            assert await client.publish(topic, [{"value": i}, {"value": -i}]) == 2
        results = await asyncio.wait_for(asyncio.gather(*watchers), 60)
    assert results == [[float(i), float(-i)] for i in range(len(topics))]


# A program that leaves a subscription the plainest way: `break` out of its loop and let the
# `async with` close the client. Whatever asyncio prints (an error while it closes a generator
# the program dropped goes to the loop's exception handler, which prints it) goes to stderr.
BREAK_OUT = """
import asyncio, sys
from pushsvc.client import AsyncClient

async def main(url, topic, how):
    async with AsyncClient(url) as client:
        if how == "subscribe":
            async for message in client.subscribe(topic):
                break
        elif how == "raw_stream":
            async for message in client.raw_stream(topic):
                break
        elif how == "messages":  # the topic's one message, kept before: replayed at once
            async for message in client.messages(topic, replay=1):
                break
        else:  # the program goes on with other work on its loop before it ends
            async for message in client.subscribe(topic):
                break
            await client.publish(topic, {"value": 1.0})
            await asyncio.sleep(0.05)
    print("ended")

asyncio.run(main(*sys.argv[1:]))
"""


@pytest.mark.parametrize(
    "how", ["subscribe", "raw_stream", "messages", "subscribe, then more work"]
)
def test_breaking_out_of_an_async_subscription_prints_nothing(
    pushsvc: PushsvcProcess, topic: str, how: str
) -> None:
    """It printed "an error occurred during closing of asynchronous generator ...
    RuntimeError: aclose(): asynchronous generator is already running", twice."""
    if how == "messages":
        assert post(pushsvc.port, topic, {"data": "hello"})[0] == 202
        wait_until(lambda: request(pushsvc.port, "GET", f"/topics/{topic}/stats")[0] == 200)
    done = subprocess.run(
        [sys.executable, "-c", BREAK_OUT, pushsvc.base, topic, how],
        capture_output=True,
        text=True,
        timeout=30,
        # Not asyncio's debug mode (it prints slow steps): the program as a user runs it.
        env={
            **{
                k: v
                for k, v in os.environ.items()
                if k not in ("PYTHONASYNCIODEBUG", "PYTHONDEVMODE")
            },
            "PYTHONPATH": SRC,
        },
        check=False,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "ended\n", "")


def test_a_frames_reader_waiting_to_connect_again_ends_when_closed(topic: str) -> None:
    """A frames reader whose server went away waits the stream's `retry:` (30 s here) before
    it connects again. Closing the frames ends that wait at once: the thread used to sleep
    it out."""
    proc = PushsvcProcess("serve", "--tick", "0", env={"PUSHSVC_RETRY": "30s"}).start()
    client = Client(proc.base)
    try:
        assert client.publish(topic, {"value": 1.0}) == 1
        wait_until(lambda: rows(client, topic) == 1, what="the update")
        frames = client.frames(topic, every="100ms")
        next(frames)  # the history; the reader starts with the next
        assert client.publish(topic, {"value": 2.0}) == 1
        assert len(next(frames)) == 2

        def reading() -> bool:
            return any(t.name == f"pushsvc-frames-{topic}" for t in threading.enumerate())

        proc.stop()  # the stream ends; the reader waits 30 s before it tries again
        assert reading()
        frames.close()
        wait_until(lambda: not reading(), timeout=3, what="the reader thread ended")
    finally:
        client.close()
        proc.stop()
