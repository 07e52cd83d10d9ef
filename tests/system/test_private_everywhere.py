"""Private everywhere (docs/security.md): no answer to a caller names a topic, an alert, a
condition, a label or an annotation of a topic that caller may not read.

Every operation of the server's own /openapi.json is called — so an endpoint added later is
walked too — by an anonymous caller and by one whose token reads other topics, against a
server that holds a private topic with a rule, a firing alert, a derived metric built from it
and group tags; streams are read up to their first message. Nothing they get back (status
line aside: bodies, headers, errors) may hold the private marker. And asking about the private
topic by name answers exactly as for a topic that does not exist: no existence oracle.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from support.auth_tokens import SECRET, hs256
from support.live import PushsvcProcess, SSEClient, post, request, wait_until

MARKER = re.compile(rb"vault7|payroll", re.IGNORECASE)
PRIVATE = "vault7.payroll"
UNKNOWN = "vault7.nothing"  # never posted to: what the private topic must look like
PUBLIC = "public.news"
OTHER = "other.sales"

RULES = """
[[rule]]
topics = ["vault7.*"]
windows = ["10s", "1m"]
group_by = ["desk"]
series = ["10s:15m", "1m:24h"]

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
    rules = tmp_path_factory.mktemp("private") / "rules.toml"
    rules.write_text(RULES)
    proc = PushsvcProcess(
        "serve",
        "--tick", "0",
        "--heartbeat", "1s",
        env={
            "PUSHSVC_JWT_KEY": SECRET,
            "PUSHSVC_ANONYMOUS": "public.*",
            "PUSHSVC_RULES": str(rules),
        },
    ).start()  # fmt: skip
    admin = _bearer(hs256(publish=["*"], subscribe=["*"]))
    for topic, value, tags in (
        (PRIVATE, 5000, {"desk": "payroll-desk"}),
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
    yield proc
    proc.stop()


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
    """Status and everything received: headers and body, a stream's up to its first message."""
    if _streams(operation):
        with SSEClient(server.port, path, headers=headers) as stream:
            if stream.status == 200:
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
