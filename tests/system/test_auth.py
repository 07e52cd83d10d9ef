"""Authentication and authorization against a real server: docs/design.md's rules, row by row,
for every endpoint that publishes or reads — and private topics that never leak through a
pattern stream, its snapshot or its replay."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness.live import PushsvcProcess, SSEClient, post, request, wait_until

from pushsvc.security.tokens import load_signing_key, mint
from support.auth_tokens import (
    OTHER_SECRET,
    SECRET,
    claims_for,
    forged,
    hs256,
    remember,
    write_keypair,
)

PRIVATE = "orders"
PUBLIC = "public.news"


def _server(*args: str, **env: str) -> PushsvcProcess:
    return PushsvcProcess("serve", "--tick", "0", "--heartbeat", "1s", *args, env=env).start()


@pytest.fixture(scope="module")
def secured() -> Iterator[PushsvcProcess]:
    """Auth on, `public.*` readable by anyone, `?token=` allowed for subscribing."""
    proc = _server(PUSHSVC_JWT_KEY=SECRET, PUSHSVC_ANONYMOUS="public.*", PUSHSVC_TOKEN_QUERY="true")
    admin = {"Authorization": f"Bearer {hs256(publish=['*'])}"}
    for topic in (PRIVATE, PUBLIC, "sensors.a", "secret.x"):
        assert post(proc.port, topic, {"value": 1}, headers=admin)[0] == 202
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def no_query() -> Iterator[PushsvcProcess]:
    """Auth on, `?token=` not allowed (the default)."""
    proc = _server(PUSHSVC_JWT_KEY=SECRET)
    yield proc
    proc.stop()


def _post(server: PushsvcProcess, topic: str, headers: dict[str, str], query: str = "") -> int:
    path = f"/topics/{topic}/events{query}"
    return request(server.port, "POST", path, {"value": 2}, headers=headers)[0]


def _stream(server: PushsvcProcess, path: str, headers: dict[str, str]) -> int:
    with SSEClient(server.port, path, headers=headers) as stream:
        if stream.status == 200:
            assert stream.next().event == "snapshot"
        return stream.status


def _statuses(
    server: PushsvcProcess, topic: str, headers: dict[str, str], query: str = ""
) -> dict[str, int]:
    extra = f"&{query[1:]}" if query else ""
    return {
        "POST": _post(server, topic, headers, query),
        "stream": _stream(server, f"/topics/{topic}/stream{query}", headers),
        "multi": _stream(server, f"/stream?topic={topic}{extra}", headers),
        "stats": request(server.port, "GET", f"/topics/{topic}/stats{query}", headers=headers)[0],
        "list": request(server.port, "GET", f"/topics{query}", headers=headers)[0],
    }


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# (what is sent, the statuses docs/design.md gives for POST, both streams, stats and /topics)
DENIED = {"POST": 401, "stream": 401, "multi": 401, "stats": 401, "list": 401}
MATRIX = {
    # No token: publishing needs one; reading a private topic too; /topics lists public.*.
    "no token": ({}, {**DENIED, "list": 200}),
    "expired": (_bearer(hs256(publish=[PRIVATE], subscribe=[PRIVATE], expired=True)), DENIED),
    "no exp": (
        _bearer(forged({"alg": "HS256"}, {"pushsvc": {"publish": ["*"]}}, SECRET.encode())),
        DENIED,
    ),
    "wrong key": (_bearer(hs256(publish=["*"], subscribe=["*"], secret=OTHER_SECRET)), DENIED),
    "alg none": (_bearer(forged({"alg": "none"}, claims_for(["*"]), None)), DENIED),
    "not a JWT": (_bearer("not.a.token"), DENIED),
    "Basic scheme": ({"Authorization": "Basic dXNlcjpwYXNz"}, DENIED),
    "wrong scope": (
        _bearer(hs256(publish=["other"], subscribe=["other"])),
        {"POST": 403, "stream": 403, "multi": 403, "stats": 403, "list": 200},
    ),
    "read-only scope": (
        _bearer(hs256(subscribe=[PRIVATE])),
        {"POST": 403, "stream": 200, "multi": 200, "stats": 200, "list": 200},
    ),
    "right scope": (
        _bearer(hs256(publish=[PRIVATE], subscribe=[PRIVATE])),
        {"POST": 202, "stream": 200, "multi": 200, "stats": 200, "list": 200},
    ),
    "malformed scope": (
        _bearer(forged({"alg": "HS256"}, claims_for(["ord*"]), SECRET.encode())),
        DENIED,  # `ord*` is no selector: the token is refused whole, not half-understood
    ),
    "pattern beside the topic": (
        _bearer(hs256(publish=["orders.*"], subscribe=["orders.*"])),
        # `orders.*` covers the topics under `orders.`, not `orders` itself.
        {"POST": 403, "stream": 403, "multi": 403, "stats": 403, "list": 200},
    ),
    "everything": (
        _bearer(hs256(publish=["*"], subscribe=["*"])),
        {"POST": 202, "stream": 200, "multi": 200, "stats": 200, "list": 200},
    ),
}


@pytest.mark.parametrize("case", list(MATRIX))
def test_the_auth_matrix(secured: PushsvcProcess, case: str) -> None:
    headers, expected = MATRIX[case]
    assert _statuses(secured, PRIVATE, headers) == expected
    # A topic's series, like its stats, is read like a stream of that one topic.
    series = request(secured.port, "GET", f"/topics/{PRIVATE}/series", headers=headers)[0]
    assert series == expected["stats"]


def test_a_pattern_scope_covers_the_topics_under_it_only(secured: PushsvcProcess) -> None:
    headers = _bearer(hs256(publish=["sensors.*"], subscribe=["sensors.*"]))
    assert _statuses(secured, "sensors.a", headers) == {
        "POST": 202,
        "stream": 200,
        "multi": 200,
        "stats": 200,
        "list": 200,
    }
    assert _post(secured, "sensors", headers) == 403
    assert _stream(secured, "/topics/sensors/stream", headers) == 403


def test_anonymous_topics_are_readable_without_a_token_but_not_writable(
    secured: PushsvcProcess,
) -> None:
    assert _statuses(secured, PUBLIC, {}) == {
        "POST": 401,
        "stream": 200,
        "multi": 200,
        "stats": 200,
        "list": 200,
    }


def test_errors_are_json_with_a_bearer_challenge(secured: PushsvcProcess) -> None:
    status, headers, body = request(secured.port, "POST", f"/topics/{PRIVATE}/events", {"value": 1})
    assert status == 401
    assert headers["www-authenticate"] == 'Bearer realm="pushsvc"'
    assert json.loads(body)["error"]["code"] == "unauthorized"
    expired = _bearer(hs256(publish=["*"], expired=True))
    status, headers, body = request(
        secured.port, "POST", f"/topics/{PRIVATE}/events", {"value": 1}, headers=expired
    )
    assert status == 401
    assert 'error="invalid_token"' in headers["www-authenticate"]
    assert "expired" in json.loads(body)["error"]["message"]
    status, headers, body = request(
        secured.port, "POST", "/topics/other/events", {"value": 1}, headers=_bearer(hs256())
    )
    assert status == 403
    assert json.loads(body)["error"]["code"] == "forbidden"


def test_a_refused_post_changes_nothing(secured: PushsvcProcess) -> None:
    topic = f"t-{uuid.uuid4().hex[:8]}"
    for headers in (
        {},
        MATRIX["wrong key"][0],
        MATRIX["alg none"][0],
        _bearer(hs256(publish=["x"])),
    ):
        assert _post(secured, topic, headers) in (401, 403)
    reader = _bearer(hs256(subscribe=[topic]))
    assert request(secured.port, "GET", f"/topics/{topic}/stats", headers=reader)[0] == 404


def test_the_cookie_authenticates_streams_and_same_origin_posts(secured: PushsvcProcess) -> None:
    token = hs256(publish=[PRIVATE], subscribe=[PRIVATE])
    cookie = {"Cookie": f"pushsvc_token={token}"}
    own = f"http://127.0.0.1:{secured.port}"
    assert _stream(secured, f"/topics/{PRIVATE}/stream", cookie) == 200
    assert _stream(secured, f"/stream?topic={PRIVATE}", cookie) == 200
    assert request(secured.port, "GET", f"/topics/{PRIVATE}/stats", headers=cookie)[0] == 200
    assert _post(secured, PRIVATE, {**cookie, "Origin": own}) == 202
    # Cross-site request forgery: another site's page posting with the visitor's cookie.
    assert _post(secured, PRIVATE, {**cookie, "Origin": "https://evil.example"}) == 403
    assert _post(secured, PRIVATE, cookie) == 403  # no Origin: not provably ours
    # A header token is not a cookie: no Origin needed (another site cannot set it).
    assert _post(secured, PRIVATE, {**_bearer(token), "Origin": "https://evil.example"}) == 202


def test_a_bad_header_is_judged_even_with_a_good_cookie(secured: PushsvcProcess) -> None:
    good = hs256(publish=[PRIVATE], subscribe=[PRIVATE])
    headers = {"Cookie": f"pushsvc_token={good}", **MATRIX["wrong key"][0]}
    assert _stream(secured, f"/topics/{PRIVATE}/stream", headers) == 401


def test_a_refusal_names_the_cookie_a_browser_user_needs(no_query: PushsvcProcess) -> None:
    """Without a token a 401 says where one goes, the cookie a signed-in browser carries
    included, not just "needs a token"."""
    status, _, body = request(no_query.port, "GET", f"/topics/{PRIVATE}/stats")
    assert status == 401
    assert json.loads(body)["error"]["message"] == (
        f"reading {PRIVATE!r} needs a token (Authorization: Bearer …, or the pushsvc_token "
        "cookie the application sets when it signs its user in)"
    )


def test_the_query_token_is_for_subscribing_only(secured: PushsvcProcess) -> None:
    token = hs256(publish=[PRIVATE], subscribe=[PRIVATE])
    assert _statuses(secured, PRIVATE, {}, query=f"?token={token}") == {
        "POST": 401,  # never for publishing: URLs end up in logs and histories
        "stream": 200,
        "multi": 200,
        "stats": 200,
        "list": 200,
    }


def test_a_query_token_is_refused_as_disabled_unless_enabled(no_query: PushsvcProcess) -> None:
    token = hs256(publish=[PRIVATE], subscribe=[PRIVATE])
    query = f"?token={token}"
    assert _statuses(no_query, PRIVATE, {}, query=query) == DENIED
    # Each 401 says why: not "needs a token", as if none had been sent, but what to change.
    for path in (f"/topics/{PRIVATE}/stream", f"/topics/{PRIVATE}/stats", "/topics", "/alerts"):
        status, headers, body = request(no_query.port, "GET", path + query)
        message = json.loads(body)["error"]["message"]
        assert status == 401 and headers["www-authenticate"].startswith("Bearer"), path
        assert "query tokens are disabled" in message, (path, message)
        assert "PUSHSVC_TOKEN_QUERY=true" in message and "Authorization: Bearer" in message
    status, _, body = request(no_query.port, "GET", f"/stream?topic={PRIVATE}&token={token}")
    assert status == 401 and "query tokens are disabled" in json.loads(body)["error"]["message"]
    # Publishing never takes one: the answer says where the token goes instead.
    status, _, body = request(
        no_query.port, "POST", f"/topics/{PRIVATE}/events{query}", {"value": 1}
    )
    assert status == 401 and "never takes ?token=" in json.loads(body)["error"]["message"]


def test_audience_and_issuer_are_checked_when_configured() -> None:
    server = _server(
        PUSHSVC_JWT_KEY=SECRET, PUSHSVC_JWT_AUDIENCE="pushsvc", PUSHSVC_JWT_ISSUER="auth.example"
    )
    try:
        right = hs256(publish=["*"], audience="pushsvc", issuer="auth.example")
        no_aud = hs256(publish=["*"], issuer="auth.example")
        wrong_aud = hs256(publish=["*"], audience="other", issuer="auth.example")
        wrong_iss = hs256(publish=["*"], audience="pushsvc", issuer="evil.example")
        assert _post(server, PRIVATE, _bearer(right)) == 202
        for token in (no_aud, wrong_aud, wrong_iss):
            assert _post(server, PRIVATE, _bearer(token)) == 401
    finally:
        server.stop()


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_public_key_tokens_and_the_algorithm_confusion_attack(tmp_path: Path, kind: str) -> None:
    private, public = write_keypair(tmp_path, kind)
    server = _server(PUSHSVC_JWT_KEY=f"@{public}")
    try:
        key, algorithm = load_signing_key(private)
        assert algorithm == ("RS256" if kind == "rsa" else "ES256")
        good = remember(mint(key, algorithm, publish=["*"], subscribe=["*"], ttl_s=60))
        assert _statuses(server, PRIVATE, _bearer(good))["POST"] == 202
        # HS256 "signed" with the public key (which anyone has) as the HMAC secret.
        confused = forged({"alg": "HS256"}, claims_for(["*"]), public.read_bytes())
        unsigned = forged({"alg": "none"}, claims_for(["*"]), None)
        (tmp_path / "other").mkdir()
        other_pair = write_keypair(tmp_path / "other", kind)[0]
        other_key, _ = load_signing_key(other_pair)
        stranger = remember(mint(other_key, algorithm, publish=["*"], ttl_s=60))
        for token in (confused, unsigned, stranger, hs256(publish=["*"])):
            assert _post(server, PRIVATE, _bearer(token)) == 401
    finally:
        server.stop()


# ------------------------------------------------------------ private topics in pattern streams


def test_a_wildcard_stream_never_shows_a_forbidden_topic(secured: PushsvcProcess) -> None:
    admin = _bearer(hs256(publish=["*"]))
    narrow = _bearer(hs256(subscribe=[PRIVATE]))  # plus public.* for everyone
    first = post(secured.port, "secret.x", {"value": 5}, headers=admin)
    assert first[0] == 202
    with SSEClient(secured.port, "/stream?topic=*", headers=narrow) as stream:
        snapshot_id, snapshot = stream.next_data("snapshot")
        assert set(snapshot["topics"]) == {PRIVATE, PUBLIC}  # secret.x and sensors.a exist too
        for topic in ("secret.x", "sensors.a", PRIVATE, "secret.x", PUBLIC):
            assert post(secured.port, topic, {"value": 7}, headers=admin)[0] == 202
        live = [data["topic"] for _, data in stream.take(2)]
        assert live == [PRIVATE, PUBLIC]
    # A replay from before those posts carries the same two updates and nothing else.
    resume = {**narrow, "Last-Event-ID": snapshot_id}
    with SSEClient(secured.port, "/stream?topic=*", headers=resume) as replayed:
        assert [data["topic"] for _, data in replayed.take(2)] == [PRIVATE, PUBLIC]
        post(secured.port, PRIVATE, {"value": 8}, headers=admin)
        _, data = replayed.next_data()
        assert data["topic"] == PRIVATE and data["event"]["value"] == 8


def test_topics_lists_only_what_the_caller_may_read(secured: PushsvcProcess) -> None:
    def listed(headers: dict[str, str]) -> set[str]:
        status, _, body = request(secured.port, "GET", "/topics", headers=headers)
        assert status == 200
        return {t["topic"] for t in json.loads(body)["topics"]}

    assert listed({}) == {PUBLIC}
    assert listed(_bearer(hs256(subscribe=["sensors.*"]))) == {PUBLIC, "sensors.a"}
    assert {PRIVATE, PUBLIC, "sensors.a", "secret.x"} <= listed(_bearer(hs256(subscribe=["*"])))


def test_metrics_name_no_topic(secured: PushsvcProcess) -> None:
    status, _, body = request(secured.port, "GET", "/metrics")
    assert status == 200
    for topic in (PRIVATE, "secret.x", "sensors.a"):
        assert topic not in body.decode()


# ------------------------------------------------------------------------------ expiry


def test_a_stream_ends_when_its_token_expires_and_cannot_resume_with_it(
    secured: PushsvcProcess,
) -> None:
    token = hs256(subscribe=[PRIVATE], ttl_s=2)
    expires_at = json.loads(_payload(token))["exp"]
    with SSEClient(secured.port, f"/topics/{PRIVATE}/stream", headers=_bearer(token)) as stream:
        assert stream.next().event == "snapshot"
        with pytest.raises(EOFError):
            while True:  # heartbeats (1 s) and nothing else, until the server ends it
                stream.next(timeout=5)
        ended = time.time()
    assert expires_at <= ended < expires_at + 1.5
    # EventSource reconnects with the same (expired) credentials: a 401, so it stops.
    wait_until(lambda: time.time() > expires_at)
    assert _stream(secured, f"/topics/{PRIVATE}/stream", _bearer(token)) == 401


def _payload(token: str) -> bytes:
    import base64

    part = token.split(".")[1]
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def test_while_keys_rotate_the_server_takes_tokens_of_both_and_of_no_other(topic: str) -> None:
    """PUSHSVC_JWT_KEY the new secret, PUSHSVC_JWT_PREVIOUS_KEY the one it replaces: clients
    holding tokens of the old key go on while the issuer moves to the new one."""
    server = _server(PUSHSVC_JWT_KEY=OTHER_SECRET, PUSHSVC_JWT_PREVIOUS_KEY=SECRET)
    try:
        old = hs256(publish=[topic], subscribe=[topic], secret=SECRET)
        new = hs256(publish=[topic], subscribe=[topic], secret=OTHER_SECRET)
        with SSEClient(server.port, f"/topics/{topic}/stream", headers=_bearer(old)) as stream:
            stream.next_data("snapshot")
            assert post(server.port, topic, {"value": 1}, headers=_bearer(new))[0] == 202
            assert stream.next_data()[1]["event"]["value"] == 1.0
        neither = hs256(publish=[topic], secret=remember("a-third-secret-" + "z" * 32))
        assert post(server.port, topic, {"value": 2}, headers=_bearer(neither))[0] == 401
    finally:
        server.stop()
    # Once rotated (no previous key), the old key's tokens are refused.
    rotated = _server(PUSHSVC_JWT_KEY=OTHER_SECRET)
    try:
        assert post(rotated.port, topic, {"value": 3}, headers=_bearer(old))[0] == 401
    finally:
        rotated.stop()
