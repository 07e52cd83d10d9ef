"""Presence on the embedded server (docs/api.md): exact counts through joins and leaves,
streams the server ends (a token's expiry) and clients that go (a clean close, a reset); the
`?presence=1` stream event; the subjects told only to a presence scope where the operator keeps
them; a private topic's presence never shown to others."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness.live import PushsvcProcess, SSEClient, post, request, run_tool, wait_until
from harness.raw_streams import close_cleanly, open_stream, reset

from support.auth_tokens import SECRET, hs256, remember
from support.gunicorn import gunicorn

PRIVATE = "vault.payroll"
UNKNOWN = "vault.nothing"


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


ADMIN = _bearer(hs256(subscribe=["*"], presence=["*"], subject="admin"))
ALICE = _bearer(hs256(subscribe=["public.*"], subject="alice"))
WATCHER = _bearer(hs256(subscribe=["public.*"], presence=["public.*"], subject="watcher"))


@pytest.fixture(scope="module")
def server() -> Iterator[PushsvcProcess]:
    proc = PushsvcProcess(
        "serve",
        "--tick", "0",
        "--heartbeat", "1s",
        env={
            "PUSHSVC_JWT_KEY": SECRET,
            "PUSHSVC_ANONYMOUS": "public.*",
            "PUSHSVC_PRESENCE_SUBS": "true",
        },
    ).start()  # fmt: skip
    yield proc
    proc.stop()


def presence(
    server: PushsvcProcess, topic: str, headers: dict[str, str] | None = None
) -> dict[str, object]:
    status, answer_headers, body = request(
        server.port, "GET", f"/topics/{topic}/presence", headers=headers
    )
    assert status == 200, body
    assert answer_headers["cache-control"] == "no-store"
    answer: dict[str, object] = json.loads(body)
    assert answer["topic"] == topic
    return answer


def watching(server: PushsvcProcess, topic: str) -> object:
    return presence(server, topic)["watching"]


def test_counts_are_exact_through_joins_and_leaves(server: PushsvcProcess) -> None:
    topic = "public.joins"
    assert watching(server, topic) == 0  # a topic nobody watches, never posted to
    one = SSEClient(server.port, f"/topics/{topic}/stream")
    # Counted from the moment the stream is accepted: no wait.
    assert one.status == 200 and watching(server, topic) == 1
    two = SSEClient(server.port, f"/stream?topic={topic}&topic=public.other")
    assert watching(server, topic) == 2 and watching(server, "public.other") == 1
    # A pattern stream counts for every topic it would receive, posted to or not.
    three = SSEClient(server.port, "/stream?topic=public.*")
    assert watching(server, topic) == 3 and watching(server, "public.other") == 2
    assert watching(server, "public.never") == 1
    one.close()
    wait_until(lambda: watching(server, topic) == 2, what="the closed stream leaves")
    three.close()
    wait_until(lambda: watching(server, topic) == 1, what="the pattern stream leaves")
    assert watching(server, "public.never") == 0
    assert watching(server, "public.other") == 1
    two.close()
    wait_until(lambda: watching(server, topic) == 0, what="the last stream leaves")
    assert watching(server, "public.other") == 0


def test_streams_the_server_ends_and_clients_that_reset_leave(server: PushsvcProcess) -> None:
    topic = "public.resets"
    stays = SSEClient(server.port, f"/topics/{topic}/stream")
    # A stream the server ends: its token expires (3 s: time to open it on a loaded machine).
    short = _bearer(hs256(subscribe=[topic], ttl_s=3))
    expiring = SSEClient(server.port, f"/topics/{topic}/stream", headers=short)
    gone = [open_stream(server.port, f"/topics/{topic}/stream") for _ in range(4)]
    try:
        assert watching(server, topic) == 6
        reset(gone[0])
        reset(gone[1])
        close_cleanly(gone[2])
        wait_until(lambda: watching(server, topic) == 3, what="three clients gone")
        expiring.wait_closed(timeout=10)
        wait_until(lambda: watching(server, topic) == 2, what="the expired stream's leave")
        reset(gone[3])
        wait_until(lambda: watching(server, topic) == 1, what="the last reset")
    finally:
        for sock in gone:
            sock.close()
        expiring.close()
        stays.close()
    wait_until(lambda: watching(server, topic) == 0, what="every stream gone")


def test_a_stream_asking_for_presence_gets_it_when_it_changes(server: PushsvcProcess) -> None:
    topic = "public.events"
    with SSEClient(server.port, f"/topics/{topic}/stream?presence=1") as stream:
        head = stream.next()
        assert head.event == "snapshot"
        message = stream.next()
        while message.event != "presence":
            message = stream.next()
        # No id of its own: Last-Event-ID stays the stream's (here its head's, `earliest`: the
        # topic has published nothing).
        assert message.id == head.id == "earliest"
        assert json.loads(message.data) == {"topics": {topic: {"watching": 1}}}
        with SSEClient(server.port, f"/stream?topic={topic}&topic=public.b"):
            _, data = stream.next_data("presence")
            assert data == {"topics": {topic: {"watching": 2}}}
        _, data = stream.next_data("presence")
        assert data == {"topics": {topic: {"watching": 1}}}
        # Nothing changes: no event (the heartbeats of the next two seconds come, none else).
        stream.wait_comments(len(stream.comments) + 2)
        assert not stream._pending  # the messages parsed and not read yet


def test_subjects_are_told_only_to_a_presence_scope(server: PushsvcProcess) -> None:
    topic = "public.subjects"
    with (
        SSEClient(server.port, f"/topics/{topic}/stream", headers=ALICE),
        SSEClient(server.port, f"/topics/{topic}/stream", headers=ALICE),
        SSEClient(server.port, f"/topics/{topic}/stream"),  # anonymous: counted, not named
    ):
        assert presence(server, topic) == {"topic": topic, "watching": 3}
        assert presence(server, topic, ALICE) == {"topic": topic, "watching": 3}
        assert presence(server, topic, WATCHER) == {
            "topic": topic,
            "watching": 3,
            "subs": ["alice"],
        }
        with SSEClient(
            server.port, f"/topics/{topic}/stream?presence=1", headers=WATCHER
        ) as stream:
            _, data = stream.next_data("presence")
            assert data == {"topics": {topic: {"watching": 4, "subs": ["alice", "watcher"]}}}


def test_a_private_topics_presence_shows_to_no_one_else(server: PushsvcProcess) -> None:
    """Asked by name, its answer is that of a topic that never existed, byte for byte; and a
    pattern stream that may not read it is not counted for it."""
    with (
        SSEClient(server.port, f"/topics/{PRIVATE}/stream", headers=ADMIN) as private,
        SSEClient(server.port, "/stream?topic=*", headers=ALICE),  # narrowed to public.*
        SSEClient(server.port, "/stream?topic=*"),  # anonymous: public.* too
    ):
        assert private.status == 200
        for headers in ({}, ALICE, WATCHER):
            asked = request(server.port, "GET", f"/topics/{PRIVATE}/presence", headers=headers)
            unknown = request(server.port, "GET", f"/topics/{UNKNOWN}/presence", headers=headers)
            assert asked[0] in (401, 403), asked
            assert (asked[0], asked[2].replace(PRIVATE.encode(), UNKNOWN.encode())) == (
                unknown[0],
                unknown[2],
            )
            assert b"payroll" not in unknown[2]
        # Its reader sees its one stream: the two `*` streams never receive it.
        assert presence(server, PRIVATE, ADMIN) == {
            "topic": PRIVATE,
            "watching": 1,
            "subs": ["admin"],
        }
        assert watching(server, "public.any") == 2
        # A stream asking for presence of it is refused as any stream of it is.
        refused = request(server.port, "GET", f"/topics/{PRIVATE}/stream?presence=1")
        assert refused[0] == 401


def test_a_token_minted_with_presence_selectors_is_told_the_subjects(
    server: PushsvcProcess,
) -> None:
    topic = "public.minted"
    minted = run_tool(
        "token", "--subscribe", "public.*", "--presence", "public.*", "--sub", "ops", "--ttl",
        "1h", env={"PUSHSVC_JWT_KEY": SECRET},
    )  # fmt: skip
    assert minted.returncode == 0, minted.stderr
    token = remember(minted.stdout.strip())
    with SSEClient(server.port, f"/topics/{topic}/stream", headers=ALICE):
        assert presence(server, topic, _bearer(token)) == {
            "topic": topic,
            "watching": 1,
            "subs": ["alice"],
        }
    bad = run_tool("token", "--presence", "bad*", env={"PUSHSVC_JWT_KEY": SECRET})
    assert bad.returncode != 0 and "bad*" in bad.stderr


@pytest.mark.parametrize(
    ("path", "said"),
    [
        ("/topics/public.a/stream?presence=maybe", b"?presence= takes 1 or 0"),
        ("/stream?topic=public.*&presence=1", b"name at least one topic"),
        ("/topics/bad%20name/presence", b"invalid topic"),
    ],
)
def test_bad_presence_requests_are_a_clear_400(
    server: PushsvcProcess, path: str, said: bytes
) -> None:
    status, headers, body = request(server.port, "GET", path)
    assert status == 400 and headers["content-type"] == "application/json", body
    assert said in body, body
    assert watching(server, "public.a") == 0  # nothing was counted


def test_presence_events_reach_a_stream_the_wsgi_server_writes(tmp_path: Path) -> None:
    """Under gunicorn (and TLS) the WSGI server writes the stream, not pushsvc: the presence
    event goes out there too, among the stream's own writes, and its count moves."""
    topic = "public.gunicorn"
    settings = {"PUSHSVC_TICK": "0", "PUSHSVC_HEARTBEAT": "1s"}
    with (
        gunicorn(settings, tmp_path) as (port, _),
        SSEClient(port, f"/topics/{topic}/stream?presence=1") as stream,
    ):
        _, data = stream.next_data("presence")
        assert data == {"topics": {topic: {"watching": 1}}}
        assert post(port, topic, {"value": 7})[0] == 202
        _, update = stream.next_data("stats")
        assert update["event"]["value"] == 7
        with SSEClient(port, f"/topics/{topic}/stream"):
            _, data = stream.next_data("presence")
            assert data == {"topics": {topic: {"watching": 2}}}


@pytest.mark.redis  # the workers' private Redis
def test_serve_with_workers_counts_the_streams_of_every_worker() -> None:
    """`serve --workers 2`: two processes on one port (a private Redis between them), each
    stream on one of them; whichever answers counts them all."""
    proc = PushsvcProcess("serve", "--workers", "2", "--tick", "0").start()
    topic = "workers.presence"
    streams = [SSEClient(proc.port, f"/topics/{topic}/stream") for _ in range(8)]
    try:
        # Several reads in a row, so that both workers answer (the kernel spreads them).
        wait_until(
            lambda: {watching(proc, topic) for _ in range(6)} == {8}, what="8 on every worker"
        )
        for stream in streams[:5]:
            stream.close()
        wait_until(
            lambda: {watching(proc, topic) for _ in range(6)} == {3}, what="3 on every worker"
        )
    finally:
        for stream in streams:
            stream.close()
        proc.stop()
