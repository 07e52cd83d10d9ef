"""Delta streams end to end: `Client` and `AsyncClient` subscribed with `delta` hand on, update
for update and id for id, exactly what a plain stream of the same topics and projection
received — on the embedded server and on Redis (where a multi-topic stream writes its
cursor), through batches, a topic's deletion, and a connection dropped and resumed with
Last-Event-ID while updates were posted. Hypothesis draws the steps and the projection. The
wire itself carries patches (`event: stats-delta`), with the ids the full updates have."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from harness.live import SRC, PushsvcProcess, post, request, serving_on, wait_until
from harness.net import free_port
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_clients import MakeClient, make_client  # noqa: F401  (a fixture)

from pushsvc.client import Backoff, Client, RawMessage, StreamOptions

T0 = 1_763_700_000.0


@pytest.fixture(scope="module", params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def pushsvc(request: pytest.FixtureRequest) -> Iterator[PushsvcProcess]:
    with serving_on(request.param, "--tick", "0", "--heartbeat", "1s") as proc:
        yield proc


publish = st.tuples(
    st.just("publish"),
    st.integers(0, 1),
    st.lists(
        st.tuples(st.floats(-1e6, 1e6, allow_nan=False), st.sampled_from(["x", "y"])),
        min_size=1,
        max_size=4,
    ),
)
steps = st.lists(
    st.one_of(
        publish, publish, st.tuples(st.just("delete"), st.integers(0, 1)), st.just(("drop",))
    ),
    min_size=2,
    max_size=7,
)
projections = st.sampled_from(
    [{}, {"windows": ["1m"]}, {"stats": ["mean", "p99", "var"], "precision": 4}]
)


class Reader:
    """One subscription's messages, read as far as a marker, kept as (event, id, JSON) of
    each update and each deletion."""

    def __init__(self, client: Any, topics: list[str], options: StreamOptions) -> None:
        self.client, self.topics, self.options = client, topics, options
        self.kept: list[tuple[str, str | None, Any]] = []
        self.last_id: str | None = None
        self.messages: Iterator[RawMessage] | None = None

    def open(self) -> None:
        """Connect; a first connection reads its snapshot, so that it is live before anything
        is posted (a resume replays what it missed instead)."""
        self.messages = self.client.messages(
            self.topics, last_event_id=self.last_id, options=self.options
        )
        if self.last_id is None:
            assert next(self.messages).event == "snapshot"

    def drop(self) -> None:
        assert self.messages is not None
        self.messages.close()  # type: ignore[attr-defined]
        self.messages = None

    def read_to(self, mark: str) -> None:
        """Until the update whose event is tagged `mark`, or the deletion of topic `mark`."""
        if self.messages is None:
            self.open()
        assert self.messages is not None
        for message in self.messages:
            if message.id:
                self.last_id = message.id
            data = message.json()
            if message.event == "stats":
                self.kept.append((message.event, message.id, data))
                if (data.get("event") or {}).get("tags", {}).get("mark") == mark:
                    return
            elif message.event == "snapshot" and data.get("deleted"):
                self.kept.append((message.event, message.id, data))
                if mark in data["deleted"]:
                    return


@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(plan=steps, projection=projections)
def test_a_delta_client_hands_on_what_a_plain_stream_received(
    pushsvc: PushsvcProcess,
    make_client: MakeClient,  # noqa: F811
    plan: list[tuple[Any, ...]],
    projection: dict[str, Any],
) -> None:
    name = uuid.uuid4().hex[:8]
    topics = [f"{name}.a", f"{name}.b"]
    plain_client = Client(pushsvc.base)
    plain = Reader(plain_client, topics, StreamOptions(**projection))
    deltas = Reader(make_client(pushsvc.base), topics, StreamOptions(delta=True, **projection))
    plain.open()
    deltas.open()
    clock = T0
    try:
        for n, step in enumerate(plan):
            if step[0] == "drop":
                if deltas.last_id is not None and deltas.messages is not None:
                    deltas.drop()  # what is posted next comes while it is away: a replay
                continue
            topic = topics[step[1]]
            if step[0] == "delete":
                status, _, _ = request(pushsvc.port, "DELETE", f"/topics/{topic}")
                if status == 404:
                    continue  # never published: nothing to delete, nothing sent
                assert status == 200
                mark = topic
            else:
                mark = f"m{n}"
                events = []
                for k, (value, tag) in enumerate(step[2]):
                    clock += 0.25
                    tags = {"k": tag, **({"mark": mark} if k == len(step[2]) - 1 else {})}
                    events.append({"value": value, "ts": clock, "tags": tags})
                assert post(pushsvc.port, topic, events)[0] == 202
            if deltas.messages is None and step[0] == "delete":
                deltas.open()
            plain.read_to(mark)
            deltas.read_to(mark)
        assert deltas.kept == plain.kept
        published = sum(1 for step in plan if step[0] == "publish")
        assert len([m for m in plain.kept if m[0] == "stats"]) >= published
    finally:
        for reader in (plain, deltas):
            if reader.messages is not None:
                reader.drop()
        plain_client.close()


def test_a_resumed_delta_stream_replays_whole_updates_with_their_ids(
    pushsvc: PushsvcProcess,
) -> None:
    topic = f"w{uuid.uuid4().hex[:8]}"
    events = [{"value": float(i), "ts": T0 + i, "tags": {"k": "x"}} for i in range(6)]
    assert post(pushsvc.port, topic, events)[0] == 202

    def history() -> list[dict[str, Any]]:
        status, _, body = request(pushsvc.port, "GET", f"/topics/{topic}/history")
        return orjson.loads(body)["updates"] if status == 200 else []

    wait_until(lambda: len(history()) == 6, what="six updates")
    first = history()[0]["id"]
    raw: dict[str, list[tuple[str, str]]] = {}
    for query in ("", "&delta=positional"):
        got: list[tuple[str, str]] = []
        url = f"{pushsvc.base}/stream?topic={topic}&lastEventId={first}{query}"
        with httpx.stream("GET", url, timeout=10) as response:
            event = ident = ""
            for line in response.iter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("id: "):
                    ident = line[4:]
                elif line.startswith("data: "):
                    got.append((event, ident))
                    if len(got) == 5:
                        break
        raw[query] = got
    # The client's last update of each topic is not known to a new connection: whole.
    assert raw["&delta=positional"] == raw[""]
    assert [event for event, _ in raw[""]] == ["stats"] * 5


def test_live_updates_after_the_first_come_as_smaller_patches(pushsvc: PushsvcProcess) -> None:
    topic = f"p{uuid.uuid4().hex[:8]}"
    assert post(pushsvc.port, topic, {"value": 1.0, "ts": T0})[0] == 202
    sizes: dict[str, list[int]] = {"stats": [], "stats-delta": []}
    with httpx.stream(
        "GET", f"{pushsvc.base}/stream?topic={topic}&delta=positional", timeout=10
    ) as response:
        event = ""
        posted = False
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "snapshot" and not posted:
                for i in range(4):  # one at a time: runs of one update each
                    assert post(pushsvc.port, topic, {"value": 2.0 + i, "ts": T0 + i})[0] == 202
                posted = True
            elif line.startswith("data: ") and event in sizes:
                sizes[event].append(len(line))
                assert orjson.loads(line[6:])  # one line of JSON
                if len(sizes["stats"]) + len(sizes["stats-delta"]) == 4:
                    break
    # The first live update of the topic is whole (the stream began with a snapshot); the
    # rest are patches against the one before, each smaller than a whole one.
    assert len(sizes["stats"]) == 1 and len(sizes["stats-delta"]) == 3
    assert max(sizes["stats-delta"]) < min(sizes["stats"])


def test_pushsvc_subscribe_with_delta_prints_the_whole_updates(pushsvc: PushsvcProcess) -> None:
    topic = f"s{uuid.uuid4().hex[:8]}"
    assert post(pushsvc.port, topic, {"value": 0.5, "ts": T0})[0] == 202
    procs = {
        flag: subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pushsvc",
                "subscribe",
                f"--url={pushsvc.base}",
                topic,
                "--count=5",
                flag,
            ],
            env={**os.environ, "PYTHONPATH": SRC},
            stdout=subprocess.PIPE,
            text=True,
        )
        for flag in ("--no-delta", "--delta")
    }
    printed: dict[str, list[Any]] = {}
    try:
        for proc in procs.values():  # live once it printed its snapshot
            assert proc.stdout is not None
            assert orjson.loads(proc.stdout.readline())["event"] == "snapshot"
        for i in range(1, 6):  # one at a time: live, the four after the first are patches
            assert post(pushsvc.port, topic, {"value": i * 0.7, "ts": T0 + i})[0] == 202
        for flag, proc in procs.items():
            out, _ = proc.communicate(timeout=60)
            assert proc.returncode == 0
            printed[flag] = [orjson.loads(line) for line in out.splitlines()]
    finally:
        for proc in procs.values():
            proc.kill()
            proc.wait()
    assert printed["--delta"] == printed["--no-delta"]
    assert [line["event"] for line in printed["--delta"]] == ["stats"] * 5


def test_across_a_restart_without_data_dir_a_delta_client_hands_on_what_a_plain_one_does(
    make_client: MakeClient,  # noqa: F811
) -> None:
    """A new epoch: both streams resume with a gap snapshot; the delta one's next updates of
    each topic are whole again, then patches, and equal the plain one's."""
    args = ("serve", "--port", str(free_port()), "--tick", "0")
    first = PushsvcProcess(*args).start()
    topics = ["r.a", "r.b"]
    backoff = Backoff(base=0.05, cap=0.2)
    plain = make_client(first.base, backoff=backoff).messages(topics)
    deltas = make_client(first.base, backoff=backoff).messages(
        topics, options=StreamOptions(delta=True)
    )
    second: PushsvcProcess | None = None
    got: dict[str, list[tuple[str, str | None, Any]]] = {"plain": [], "delta": []}

    def take(name: str, messages: Iterator[RawMessage], count: int) -> None:
        while sum(1 for m in got[name] if m[0] == "stats") < count:
            message = next(messages)
            got[name].append((message.event, message.id, message.json()))

    try:
        assert next(plain).event == next(deltas).event == "snapshot"
        for i in range(4):
            assert post(first.port, topics[i % 2], {"value": i * 1.1, "ts": T0 + i})[0] == 202
        take("plain", plain, 4)
        take("delta", deltas, 4)
        first.stop()
        second = PushsvcProcess(*args).start()
        for name, messages in (("plain", plain), ("delta", deltas)):
            # Back, with the gap snapshot of the new epoch, before anything is posted.
            message = next(messages)
            assert message.event == "snapshot" and message.json()["gap"], message
            got[name].append((message.event, message.id, message.json()))
        for i in range(4, 10):
            assert post(second.port, topics[i % 2], {"value": i * 1.1, "ts": T0 + i})[0] == 202
        take("plain", plain, 10)
        take("delta", deltas, 10)
        stats = {name: [m for m in kept if m[0] == "stats"] for name, kept in got.items()}
        assert stats["delta"] == stats["plain"]
    finally:
        plain.close()  # type: ignore[attr-defined]
        deltas.close()  # type: ignore[attr-defined]
        first.stop()
        if second is not None:
            second.stop()


def test_delta_streams_of_one_shape_that_take_different_forms_share_gzip_safely(
    pushsvc: PushsvcProcess, caplog: pytest.LogCaptureFixture
) -> None:
    """Gzip delta streams of the same topics share a compression context. Some join later:
    after a reset point of the context (32 runs of one topic) they are in its shared
    sequence, and then the other topic's next update is a patch for the early streams and
    whole for them. Each still hands on exactly the plain stream's updates, and none ever
    got a patch without its base (it would have connected again, a warning): a stream never
    takes a compressed segment of bytes it would not have sent."""
    name = uuid.uuid4().hex[:8]
    a, b = f"{name}.a", f"{name}.b"
    clients = [Client(pushsvc.base) for _ in range(7)]
    try:
        plain = Reader(clients[0], [a, b], StreamOptions())
        early = [Reader(c, [a, b], StreamOptions(delta=True)) for c in clients[1:4]]
        late = [Reader(c, [a, b], StreamOptions(delta=True)) for c in clients[4:]]
        for reader in (plain, *early):
            reader.open()
        n = 0

        def send(topic: str, readers: list[Reader]) -> None:
            nonlocal n
            n += 1
            event = {"value": n * 0.3, "ts": T0 + n, "tags": {"mark": f"g{n}"}}
            assert post(pushsvc.port, topic, event)[0] == 202
            for reader in readers:
                reader.read_to(f"g{n}")

        send(a, [plain, *early])
        send(b, [plain, *early])
        for reader in late:
            reader.open()
        everyone = [plain, *early, *late]
        for _ in range(40):  # past a reset point: every stream in the shared sequence
            send(a, everyone)
        for _ in range(3):
            send(b, everyone)
        for reader in early:
            assert reader.kept == plain.kept
        for reader in late:
            assert reader.kept == plain.kept[2:]
        assert not [r for r in caplog.records if "connecting again" in r.getMessage()]
    finally:
        for client in clients:
            client.close()
