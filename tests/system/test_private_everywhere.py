"""Private everywhere (docs/security.md): no answer to a caller names a topic, an alert, a
condition, a label or an annotation of a topic that caller may not read.

Every operation of the server's own /openapi.json is called — so an endpoint added later is
walked too — by an anonymous caller and by one whose token reads other topics, against a
server that holds a private topic with a rule (groups, distinct counts, top values, anomaly
scores), a session topic made from it, a firing alert and a derived metric built from it;
streams are read up to their first message. Nothing they get back (status line aside: bodies,
headers, errors) may hold the private marker, and neither may /openapi.json, /metrics or the
400 of an option a public stream does not take. Asking about the private topic by name
answers exactly as for a topic that does not exist, byte for byte, whatever the query's
options: access is judged before anything about the topic is (no existence oracle).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from harness.live import PushsvcProcess, SSEClient, post, request, wait_until

from support.auth_tokens import SECRET, hs256

MARKER = re.compile(rb"vault7|payroll", re.IGNORECASE)
PRIVATE = "vault7.payroll"
UNKNOWN = "vault7.nothing"  # never posted to: what the private topic must look like
PUBLIC = "public.news"
OTHER = "other.sales"

# Every name the private rule gives (tags, so statistics such as distinct_payroll_payee) holds
# the marker: where one leaks, the marker shows.
RULES = """
[[rule]]
topics = ["vault7.*"]
windows = ["10s", "1m"]
group_by = ["payroll_desk"]
distinct = ["payroll_payee"]
top = [{ tag = "payroll_ledger", k = 3 }]
series = ["10s:15m", "1m:24h"]
anomaly = { every = "10s", stat = "mean", learn = "5m", threshold = 0.5 }

[[session]]
topic = "vault7.visits"
from = ["vault7.payroll"]
key = "payroll_payee"
gap = "1h"

[[rule]]
topics = ["public.*", "other.*"]
windows = ["10s", "1m"]
series = ["10s:15m", "1m:24h"]

[[alert]]
name = "payroll_high"
topics = ["vault7.payroll"]
when = "max[10s] > 1000"
labels = { team = "payroll-team" }
annotations = { summary = "payroll spike" }

[[alert]]
name = "news_high"
topics = ["public.*"]
when = "max[10s] > 1000"
annotations = { summary = "busy news" }

[[derive]]
topic = "public.ratio"
every = "10s"
value = "count[1m](vault7.payroll) / count[1m](public.news)"
"""

# Values for the parameters an operation requires, by name; a new required parameter with no
# sample here fails the walk, naming it.
SAMPLES = {"topic": ["*", "public.*"]}


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PushsvcProcess]:
    proc = serve_private(tmp_path_factory, {"PUSHSVC_JWT_KEY": SECRET})
    yield proc
    proc.stop()


def serve_private(tmp_path_factory: pytest.TempPathFactory, auth: dict[str, str]) -> PushsvcProcess:
    """A server with `auth` (its settings) holding the private topic, its firing alert and
    its open session; test_private_everywhere_proxy.py serves it with the auth proxy."""
    rules = tmp_path_factory.mktemp("private") / "rules.toml"
    rules.write_text(RULES)
    proc = PushsvcProcess(
        "serve",
        "--tick", "0",
        "--heartbeat", "1s",
        env={**auth, "PUSHSVC_ANONYMOUS": "public.*", "PUSHSVC_RULES": str(rules)},
    ).start()  # fmt: skip
    admin = _bearer(hs256(publish=["*"], subscribe=["*"]))
    for topic, value, tags in (
        (
            PRIVATE,
            5000,
            {"payroll_desk": "d1", "payroll_payee": "p1", "payroll_ledger": "l1"},
        ),
        (PUBLIC, 2000, {}),
        (OTHER, 1, {}),
    ):
        assert post(proc.port, topic, {"value": value, "tags": tags}, headers=admin)[0] == 202

    def firing() -> set[str]:
        body = request(proc.port, "GET", "/alerts", headers=admin)[2]
        return {a["alert"] for a in json.loads(body)["alerts"] if a["state"] == "firing"}

    wait_until(
        lambda: firing() == {"payroll_high", "news_high"}, timeout=30, what="both alerts fire"
    )
    # The session is open: /metrics has something of it to tell.
    wait_until(
        lambda: re.search(
            rb"^pushsvc_sessions_open(\{[^}]*\})? 1\.0$",
            request(proc.port, "GET", "/metrics")[2],
            re.M,
        ),
        what="the private session open",
    )
    return proc


CALLERS = {
    "anonymous": {},
    "other topics' token": _bearer(hs256(publish=["other.*"], subscribe=["other.*"])),
}


def _operations(server: PushsvcProcess, headers: dict[str, str]) -> list[tuple[str, str, Any]]:
    status, _, body = request(server.port, "GET", "/openapi.json", headers=headers)
    assert status == 200
    spec = json.loads(body)
    return [
        (method.upper(), path, operation)
        for path, operations in spec["paths"].items()
        for method, operation in operations.items()
    ]


def _paths(path: str, operation: dict[str, Any], topic: str) -> list[str]:
    """The requests to make for one operation with `topic` in its path: one per sample of its
    required query parameter (if any)."""
    concrete = path.replace("{topic}", topic)
    required = [
        p["name"]
        for p in operation.get("parameters", [])
        if p.get("in") == "query" and p.get("required")
    ]
    if not required:
        return [concrete]
    assert len(required) == 1 and required[0] in SAMPLES, (
        f"{path}: give SAMPLES a value for its required parameter(s) {required}"
    )
    return [f"{concrete}?{required[0]}={value}" for value in SAMPLES[required[0]]]


def _streams(operation: dict[str, Any]) -> bool:
    return "text/event-stream" in operation["responses"].get("200", {}).get("content", {})


def _call(
    server: PushsvcProcess,
    method: str,
    path: str,
    headers: dict[str, str],
    operation: dict[str, Any],
) -> tuple[int, bytes]:
    """Status and everything received: headers and body, a stream's up to its first message
    (a messages stream's up to its first heartbeat: its head is an `id:` alone, and a topic
    with no messages sends none)."""
    if _streams(operation):
        with SSEClient(server.port, path, headers=headers) as stream:
            if stream.status == 200:
                if path.split("?")[0].endswith("messages"):
                    stream.wait_comments(1)
                else:
                    stream.next()
                head = json.dumps(stream.response_headers).encode()
                return stream.status, head + bytes(stream.raw)
        # Refused: the error body, as a plain request reads it.
    body = {"value": 1} if method == "POST" else None
    status, answer_headers, answer = request(server.port, method, path, body, headers=headers)
    return status, json.dumps(answer_headers).encode() + answer


@pytest.mark.parametrize("caller", list(CALLERS))
def test_no_answer_names_what_the_caller_may_not_read(server: PushsvcProcess, caller: str) -> None:
    headers = CALLERS[caller]
    walked: list[str] = []
    for method, template, operation in _operations(server, headers):
        topics = [PUBLIC, "_alerts", "public.ratio"] if "{topic}" in template else [""]
        for topic in topics:
            for path in _paths(template, operation, topic):
                status, received = _call(server, method, path, headers, operation)
                walked.append(f"{method} {path} {status}")
                leaked = MARKER.search(received)
                assert leaked is None, (
                    f"{method} {path} answered {status} naming {leaked[0]!r}: {received[:600]!r}"
                )
        if "{topic}" in template:
            # Asking for the private topic by name: the answer of a topic that never existed.
            for path in _paths(template, operation, PRIVATE):
                asked = _call(server, method, path, headers, operation)
                unknown = _call(server, method, path.replace(PRIVATE, UNKNOWN), headers, operation)
                assert asked[0] in (401, 403), f"{method} {path}: {asked}"
                same = asked[1].replace(PRIVATE.encode(), UNKNOWN.encode())
                assert (asked[0], _dated(same)) == (unknown[0], _dated(unknown[1])), path
    assert any(line.startswith("GET /rules 200") for line in walked), walked
    assert any(line.startswith("GET /topics/_alerts/stream 200") for line in walked), walked


def _dated(received: bytes) -> bytes:
    """Without what differs from one answer to the next anyway."""
    return re.sub(rb'"(date|x-request-id)": "[^"]*"', b"", received)


# The messages streams that take the public topic, some with the private one (a pattern, or a
# pattern beside it), and the public topic's own stream with a replay of its history.
MESSAGE_PATHS = (
    "/messages?topic=*",
    "/messages?topic=public.*",
    "/messages?topic=vault7.*&topic=public.*",
    f"/topics/{PUBLIC}/messages?replay=1000",
    f"/messages?topic={PUBLIC}&replay=1000",
)


@pytest.mark.parametrize("caller", list(CALLERS))
def test_a_messages_stream_carries_only_the_topics_its_caller_may_read(
    server: PushsvcProcess, caller: str
) -> None:
    """A pattern (`*`, `vault7.*`) is narrowed to what the caller may read: the private topic's
    messages, published before a public one on the same partition, never reach it, and nothing
    it gets (headers, replay, live) names the private topic or its data."""
    headers = CALLERS[caller]
    admin = _bearer(hs256(publish=["*"], subscribe=["*"]))
    private = {"type": "payroll", "data": {"payroll_payee": "p1", "amount": 5000}}
    assert post(server.port, PRIVATE, private, headers=admin)[0] == 202
    news = {"type": "news", "data": {"headline": "opening"}}
    assert post(server.port, PUBLIC, news, headers=admin)[0] == 202
    wait_until(
        lambda: _replayed(server, f"/topics/{PUBLIC}/messages?replay=1", {}) == ["news"],
        what="the public message in the history",
    )
    streams = {path: SSEClient(server.port, path, headers=headers) for path in MESSAGE_PATHS}
    try:
        assert {path: s.status for path, s in streams.items()} == dict.fromkeys(MESSAGE_PATHS, 200)
        # One partition (the embedded server's), in publish order: a private message sent now
        # would come before this public one on a stream it leaked to.
        assert post(server.port, PRIVATE, private, headers=admin)[0] == 202
        last = f"live for {caller}"
        assert post(server.port, PUBLIC, {**news, "data": last}, headers=admin)[0] == 202
        for path, stream in streams.items():
            got = []
            while not got or got[-1].data != json.dumps(last):
                message = stream.next()
                if message.data:  # not the head (an `id:` alone)
                    got.append(message)
            assert {m.event for m in got} == {"news"}, (caller, path, got)
            if "replay" in path:
                assert len(got) >= 2, (path, got)  # the history's, then the live one
            received = json.dumps(stream.response_headers).encode() + bytes(stream.raw)
            assert MARKER.search(received) is None, (caller, path, received[:600])
    finally:
        for stream in streams.values():
            stream.close()


def _replayed(server: PushsvcProcess, path: str, headers: dict[str, str]) -> list[str]:
    """The types a `?replay=1` stream starts with (its first message)."""
    with SSEClient(server.port, path, headers=headers) as stream:
        if stream.status != 200:
            return []
        message = stream.next()
        return [message.event] if message.data else []


def test_a_reader_of_the_private_topic_gets_its_messages(server: PushsvcProcess) -> None:
    """The walk above is not empty-handed: the private messages are there for a reader of them."""
    reader = _bearer(hs256(subscribe=["vault7.*"]))
    admin = _bearer(hs256(publish=["*"], subscribe=["*"]))
    with SSEClient(server.port, "/messages?topic=vault7.*", headers=reader) as stream:
        assert stream.status == 200
        assert post(server.port, PRIVATE, {"type": "payroll", "data": 1}, headers=admin)[0] == 202
        message = stream.next()
        while not message.data:
            message = stream.next()
    assert (message.event, message.data) == ("payroll", "1")


def test_a_reader_of_every_topic_sees_the_private_ones(server: PushsvcProcess) -> None:
    """The walk above is not empty-handed: the private data is there for those who may read it
    (so the marker would show, were it leaking)."""
    admin = _bearer(hs256(subscribe=["*"]))
    for path in ("/rules", "/alerts", "/topics", "/topics/_alerts/history"):
        status, _, body = request(server.port, "GET", path, headers=admin)
        assert status == 200 and MARKER.search(body), path


def test_rules_show_a_pattern_rule_to_a_reader_of_a_topic_it_covers(
    server: PushsvcProcess,
) -> None:
    """`vault7.*` covers `vault7.report`: its reader is shown that rule (with no other
    selector), not the alert of `vault7.payroll`, nor the derived metric built from it."""
    reader = _bearer(hs256(subscribe=["vault7.report"]))
    status, _, body = request(server.port, "GET", "/rules", headers=reader)
    assert status == 200
    shown = json.loads(body)
    assert [rule["topics"] for rule in shown["rules"]] == [["vault7.*"], ["public.*"]]
    assert [alert["name"] for alert in shown["alerts"]] == ["news_high"]
    assert "derive" not in shown


def test_rules_need_a_token_where_nothing_is_readable_without_one() -> None:
    """With no anonymous topics, /rules answers like /topics: 401 without a token."""
    proc = PushsvcProcess("serve", "--tick", "0", env={"PUSHSVC_JWT_KEY": SECRET}).start()
    try:
        status, headers, body = request(proc.port, "GET", "/rules")
        assert status == 401 and headers["www-authenticate"].startswith("Bearer"), body
        token = _bearer(hs256(subscribe=["orders"]))
        assert request(proc.port, "GET", "/rules", headers=token)[0] == 200
    finally:
        proc.stop()


# A stream's options, and the one-topic reads' own, each once valid and once not: whatever a
# request asks, the private topic's answer is the unknown topic's (access comes first).
STREAM_OPTIONS = (
    "group=zz:1",
    "group=payroll_desk:d1",
    "group=bad",
    "stats=distinct_payroll_payee",
    "stats=top_payroll_ledger",
    "stats=mean",
    "stats=nonsense",
    "windows=10s",
    "windows=7m",
    "precision=3",
    "precision=99",
    "series=10s",
    "series=7m",
    "max_hz=0",
    "presence=1",
    "presence=zz",
)
GROUP_OPTIONS = ("group=zz:1", "group=payroll_desk:d1", "group=bad")
# A messages stream's own options, valid and not, and one it refuses (statistics only).
MESSAGE_OPTIONS = (
    "replay=5",
    "replay=1000",
    "replay=0",
    "replay=x",
    "lastEventId=0badc0de:1-0",
    "windows=10s",
)
QUERIES = (
    *(f"/topics/{{topic}}/stream?{option}" for option in STREAM_OPTIONS),
    *(f"/stream?topic={{topic}}&{option}" for option in STREAM_OPTIONS),
    *(f"/topics/{{topic}}/messages?{option}" for option in MESSAGE_OPTIONS),
    *(f"/messages?topic={{topic}}&{option}" for option in MESSAGE_OPTIONS),
    *(f"/messages?topic={{topic}}&topic={PUBLIC}&{option}" for option in MESSAGE_OPTIONS),
    *(f"/topics/{{topic}}/stats?{option}" for option in GROUP_OPTIONS),
    *(
        f"/topics/{{topic}}/history?{option}"
        for option in (*GROUP_OPTIONS, "format=csv", "format=xml", "since=zz", "limit=0")
    ),
    *(
        f"/topics/{{topic}}/series?{option}"
        for option in (*GROUP_OPTIONS, "resolution=10s", "resolution=7m", "points=1")
    ),
)
PUBLIC_PATHS = ("/openapi.json", "/metrics")
_STREAMED: dict[str, Any] = {"responses": {"200": {"content": {"text/event-stream": {}}}}}
_READ: dict[str, Any] = {"responses": {}}


def _ask(server: PushsvcProcess, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
    route = path.split("?")[0]
    operation = _STREAMED if "stream" in route or route.endswith("messages") else _READ
    return _call(server, "GET", path, headers, operation)


@pytest.mark.parametrize("caller", list(CALLERS))
def test_a_private_topic_answers_every_query_as_an_unknown_one(
    server: PushsvcProcess, caller: str
) -> None:
    """Byte for byte (but the name and the date), options valid or not for the private rule:
    a group tag it has or lacks, its statistics, a window, a precision, a tier, a format."""
    headers = CALLERS[caller]
    for query in QUERIES:
        asked = _ask(server, query.format(topic=PRIVATE), headers)
        unknown = _ask(server, query.format(topic=UNKNOWN), headers)
        assert asked[0] in (400, 401, 403), (query, asked)
        same = _dated(asked[1].replace(PRIVATE.encode(), UNKNOWN.encode()))
        assert (asked[0], same) == (unknown[0], _dated(unknown[1])), (query, asked, unknown)
        assert re.search(rb"payroll", unknown[1]) is None, (query, unknown)


@pytest.mark.parametrize("caller", list(CALLERS))
def test_public_answers_name_no_statistic_or_tag_of_a_private_rule(
    server: PushsvcProcess, caller: str
) -> None:
    """/openapi.json, /metrics and the 400s of a public stream's options list what the caller
    may see; a private rule's statistic or tag is refused as an invented one is."""
    headers = CALLERS[caller]
    answers = {path: request(server.port, "GET", path, headers=headers) for path in PUBLIC_PATHS}
    for path, (status, _, body) in answers.items():
        assert status == 200 and MARKER.search(body) is None, (path, body[:600])
    # The open session is counted, with no topic named; the document differs by caller.
    metrics = answers["/metrics"][2]
    assert re.search(rb"^pushsvc_sessions_open 1\.0$", metrics, re.M), metrics
    assert "Authorization" in answers["/openapi.json"][1]["vary"]
    for option, invented in (
        # As long as the private names: equal answers down to their Content-Length.
        ("stats=distinct_payroll_payee", "stats=distinct_zzzzzzz_payee"),
        ("stats=top_payroll_ledger", "stats=top_zzzzzzz_ledger"),
        ("group=payroll_desk:d1", "group=zzzzzzz_desk:d1"),
        ("windows=7m", "windows=8m"),
        ("series=7m", "series=8m"),
    ):
        for path in (f"/stream?topic=public.*&{option}", f"/topics/{PUBLIC}/stream?{option}"):
            if path.startswith("/stream") and option.startswith("group"):
                continue  # a pattern stream's group filter names any tag: nothing to refuse
            refused = _ask(server, path, headers)
            # The 400 echoes what was asked; nothing else in it may name the private rule.
            name, other_name = (o.split("=")[1].split(":")[0] for o in (option, invented))
            unechoed = refused[1].replace(name.encode(), b"")
            assert refused[0] == 400 and MARKER.search(unechoed) is None, (path, refused)
            other = _ask(server, path.replace(option, invented), headers)
            assert _dated(refused[1].replace(name.encode(), other_name.encode())) == _dated(
                other[1]
            ), (path, refused, other)


def test_a_reader_of_the_private_rule_is_told_its_names(server: PushsvcProcess) -> None:
    """The narrowing is per caller: a reader of the private topic's rule gets its names in
    /openapi.json, and its streams take them."""
    reader = _bearer(hs256(subscribe=["vault7.*"]))
    body = request(server.port, "GET", "/openapi.json", headers=reader)[2]
    for name in (b"distinct_payroll_payee", b"top_payroll_ledger", b"payroll_desk"):
        assert name in body, name
    path = f"/topics/{PRIVATE}/stream?stats=distinct_payroll_payee&group=payroll_desk:d1"
    with SSEClient(server.port, path, headers=reader) as stream:
        assert stream.status == 200
        _, snapshot = stream.next_data("snapshot")
    assert snapshot["topics"][PRIVATE]["groups"][0]["windows"]["10s"] == {
        "distinct_payroll_payee": 1
    }


def test_an_update_id_tells_when_its_partition_last_numbered_and_nothing_more() -> None:
    """What docs/security.md says ids reveal: an anonymous reader's ids are the partition's
    (here the embedded broker's one partition) stream ids, `ms-seq` on the server's clock: a
    history page's resume id moves to the newest message of any topic, the private topic's
    included, and carries no name or value of it."""
    proc = PushsvcProcess(
        "serve", "--tick", "0",
        env={"PUSHSVC_JWT_KEY": SECRET, "PUSHSVC_ANONYMOUS": "public.*"},
    ).start()  # fmt: skip
    try:
        admin = _bearer(hs256(publish=["*"], subscribe=["*"]))
        at = 1_763_700_000
        assert post(proc.port, PUBLIC, {"value": 1, "ts": at}, headers=admin)[0] == 202

        def head() -> tuple[str, int, int]:
            status, headers, body = request(proc.port, "GET", f"/topics/{PUBLIC}/history")
            assert status == 200 and MARKER.search(body) is None
            epoch, _, position = headers["pushsvc-resume-id"].partition(":")
            ms, _, seq = position.partition("-")
            return epoch, int(ms), int(seq)

        def private_updates() -> int:
            path = f"/topics/{PRIVATE}/history"
            return len(json.loads(request(proc.port, "GET", path, headers=admin)[2])["updates"])

        wait_until(lambda: head()[1] > 0, what="the public update")
        before = head()
        with SSEClient(proc.port, f"/topics/{PUBLIC}/stream") as stream:
            assert stream.next().id == "{}:{}-{}".format(*before)  # the snapshot
            secret = [{"value": v, "ts": at, "tags": {"payroll": "x"}} for v in (1, 2, 3)]
            sent_ms = time.time() * 1000
            assert post(proc.port, PRIVATE, secret, headers=admin)[0] == 202
            wait_until(lambda: private_updates() == 3, what="the private updates")
            # A history page's resume id is the partition's head: the private messages' own,
            # numbered on the server's clock after they were sent.
            epoch, ms, seq = head()
            assert epoch == before[0] and (ms, seq) > before[1:]
            assert ms >= int(sent_ms) - 1000  # the wall clock, give or take a slow machine
            # And the stream's next update comes after it.
            assert post(proc.port, PUBLIC, {"value": 2, "ts": at}, headers=admin)[0] == 202
            live = stream.next()
            live_ms, _, live_seq = live.id.partition(":")[2].partition("-")
            assert live.event == "stats" and (int(live_ms), int(live_seq)) > (ms, seq)
            assert MARKER.search(bytes(stream.raw)) is None
    finally:
        proc.stop()
