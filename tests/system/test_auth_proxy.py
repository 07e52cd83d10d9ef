"""Access decided by the application's backend (`--auth-url`, docs/security.md), against a
real backend process (tests/support/auth_backend.py: it grants what the forwarded bearer
token says, and misbehaves on request) and pushsvc as a real process.

Allowed, denied (as if no credential was sent), a stream ended when its grant expires and
the renewed ask says no, and failing closed: a backend down, slow or answering garbage is a
503 with Retry-After, never a 200. Concurrent asks for one credential are one ask.
"""

from __future__ import annotations

import json
import re
import secrets
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from harness.app_process import AppProcess
from harness.live import PushsvcProcess, SSEClient, metric_sample, post, request, wait_until

from pushsvc.security.backend_auth import ASK_TIMEOUT_S, MAX_ASKS
from support.auth_tokens import OTHER_SECRET, SECRET, hs256, remember

ALICE = {"Authorization": f"Bearer {hs256(publish=['orders'], subscribe=['orders'])}"}
CAROL = {"Authorization": f"Bearer {hs256(subscribe=['orders', 'audit'], subject='carol')}"}
STREAM = "/topics/orders/stream"


@pytest.fixture(scope="module")
def backend() -> Iterator[AppProcess]:
    with AppProcess("-m", "support.auth_backend") as app:
        yield app


def _mode(backend: AppProcess, **state: Any) -> None:
    """How the backend answers from now on, its record of asks cleared; by default it
    grants what the token says, at once, for a minute."""
    given = {"mode": "tokens", "delay_s": 0, "ttl": 60, "body": "", "forget": True, **state}
    assert request(backend.port, "POST", "/mode", given)[0] == 200


def _asks(backend: AppProcess) -> list[dict[str, Any]]:
    asks: list[dict[str, Any]] = json.loads(request(backend.port, "GET", "/asks")[2])
    return asks


def _pushsvc(backend: AppProcess, *args: str) -> PushsvcProcess:
    return PushsvcProcess(
        "serve",
        "--tick", "0",
        "--heartbeat", "1s",
        "--auth-url", f"{backend.url}/auth",
        "--anonymous", "public.*",
        *args,
    ).start()  # fmt: skip


@pytest.fixture
def server(backend: AppProcess) -> Iterator[PushsvcProcess]:
    _mode(backend)
    proc = _pushsvc(backend, "--auth-cookies", "session")
    yield proc
    proc.stop()


def _judged(port: int, path: str, headers: dict[str, str]) -> tuple[int, str | None, Any]:
    """Status, WWW-Authenticate and body of a request that is refused (or the status of a
    stream that opens)."""
    if "stream" in path:
        with SSEClient(port, path, headers=headers) as stream:
            if stream.status == 200:
                stream.next()
                return 200, None, None
    status, answer_headers, body = request(port, "GET", path, headers=headers)
    return status, answer_headers.get("www-authenticate"), json.loads(body)


def test_the_backend_grants_publishing_and_reading(
    backend: AppProcess, server: PushsvcProcess
) -> None:
    """What the application answers is what the caller may do: publish and read `orders`,
    and the backend hears only the listed cookie and header, the client's address, the action
    and the topics."""
    sent = {**ALICE, "Cookie": "session=s1; tracking=t1", "X-Other": "not forwarded"}
    # A cookie is part of the credential: a POST must come from pushsvc's own origin (CSRF),
    # as a cookie token's must.
    assert post(server.port, "orders", {"value": 7}, headers=sent)[0] == 403
    sent["Origin"] = f"http://127.0.0.1:{server.port}"
    assert post(server.port, "orders", {"value": 7}, headers=sent)[0] == 202
    with SSEClient(server.port, STREAM, headers=sent) as stream:
        assert stream.status == 200
        _, snapshot = stream.next_data("snapshot")
        assert snapshot["topics"]["orders"]["windows"]["10s"]["count"] == 1
    asks = _asks(backend)
    # The publish asked; the stream, a moment later, used the grant it kept.
    assert len(asks) == 1, asks
    assert asks[0]["body"] == {"action": "publish", "topics": ["orders"], "address": "127.0.0.1"}
    assert asks[0]["cookies"] == ["session"]
    assert "authorization" in asks[0]["headers"] and "x-other" not in asks[0]["headers"]
    # What the grant does not cover is refused as a token's scope refuses it.
    assert post(server.port, "audit", {"value": 1}, headers=sent)[0] == 403
    assert _judged(server.port, "/topics/audit/stream", sent)[0] == 403


def test_a_caller_with_no_credential_is_not_asked_about(
    backend: AppProcess, server: PushsvcProcess
) -> None:
    """Anonymous readers of public topics cost the backend nothing."""
    assert _judged(server.port, "/topics/public.news/stream", {})[0] == 200
    assert _judged(server.port, STREAM, {})[0] == 401
    assert _asks(backend) == []


def test_a_refusal_says_what_a_caller_signs_in_with(server: PushsvcProcess) -> None:
    """A browser user signs in with the application's cookie, not a "token": the 401 names
    what this server takes (here `--auth-cookies session` and the default header)."""
    status, _, body = _judged(server.port, STREAM, {"Cookie": "tracking=t1"})
    assert status == 401
    assert body["error"]["message"] == (
        "reading 'orders' needs a sign-in the application grants (the session cookie or the "
        "Authorization header, which pushsvc asks the application about)"
    )
    status, _, body = request(server.port, "POST", "/topics/orders/events", {"value": 1})
    assert status == 401
    assert json.loads(body)["error"]["message"].startswith(
        "publishing needs a sign-in the application grants (the session cookie"
    )


@pytest.mark.parametrize("deny", ["401", "403", "empty", "no session"])
def test_a_denial_answers_as_no_credential_does(
    backend: AppProcess, server: PushsvcProcess, deny: str
) -> None:
    """The backend's 401, its 403, an empty grant, or a credential it does not know: the
    answer is the one for a caller with no credential, byte for byte, for reading, for
    publishing, and for a private topic as for one that does not exist."""
    _mode(backend, mode="tokens" if deny == "no session" else deny)
    credential = {"Authorization": "Bearer not-a-session"} if deny == "no session" else ALICE
    for path in (STREAM, "/topics/nothing.here/stream", "/stream?topic=orders", "/topics"):
        assert _judged(server.port, path, credential) == _judged(server.port, path, {}), path
    refused = request(
        server.port, "POST", "/topics/orders/events", {"value": 1}, headers=credential
    )
    anonymous = request(server.port, "POST", "/topics/orders/events", {"value": 1})
    assert (refused[0], refused[2]) == (anonymous[0], anonymous[2])
    assert refused[0] == 401
    assert _asks(backend), "the backend was asked"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _unavailable(port: int, path: str, headers: dict[str, str]) -> None:
    status, answer_headers, body = request(port, "GET", path, headers=headers)
    assert status == 503, (status, body)
    assert int(answer_headers["retry-after"]) >= 1
    assert json.loads(body)["error"]["code"] == "auth_unavailable"


def test_a_backend_down_fails_closed() -> None:
    """Nothing listens at the URL: a request it must judge is a 503 with Retry-After (a
    stream, a read, a publish), never a 200; anonymous reads go on; one log line says so."""
    url = f"http://127.0.0.1:{_free_port()}/auth"
    proc = PushsvcProcess(
        "serve", "--tick", "0", "--auth-url", url, "--anonymous", "public.*"
    ).start()  # fmt: skip
    try:
        for path in (STREAM, "/topics/public.news/stream", "/topics"):
            _unavailable(proc.port, path, ALICE)
        status, headers, _ = request(
            proc.port, "POST", "/topics/orders/events", {"value": 1}, headers=ALICE
        )
        assert status == 503 and "retry-after" in headers
        assert _judged(proc.port, "/topics/public.news/stream", {})[0] == 200
        proc.wait_for_log(re.escape(f"the auth backend {url} could not be reached"))
        failed = metric_sample(proc.port, "pushsvc_auth_asks_total", '{outcome="failed"}')
        assert failed == 4  # the three reads and the publish; anonymous reads asked nothing
    finally:
        proc.stop()


def test_a_slow_backend_fails_closed_at_the_timeout(backend: AppProcess) -> None:
    """An answer later than the ask's 2 s is no answer: 503; once the backend is quick
    again, the next request is judged (a failure is not kept)."""
    _mode(backend, delay_s=ASK_TIMEOUT_S + 3)
    proc = _pushsvc(backend)
    try:
        _unavailable(proc.port, STREAM, ALICE)
        proc.wait_for_log(rf"did not answer within {ASK_TIMEOUT_S:g}s")
        _mode(backend)
        assert _judged(proc.port, STREAM, ALICE)[0] == 200
    finally:
        proc.stop()


GARBAGE = {
    "not JSON": b"<html>oops</html>",
    "a JSON list, not an object": b"[]",
    "'ttl' must be": b'{"pushsvc": {"subscribe": ["orders"]}}',
    "'ttl' must be a whole": b'{"ttl": 0, "pushsvc": {"subscribe": ["orders"]}}',
    "'pushsvc.subscribe' must be a list": b'{"ttl": 60, "pushsvc": {"subscribe": "orders"}}',
    "invalid topic 'bad topic!'": b'{"ttl": 60, "pushsvc": {"subscribe": ["bad topic!"]}}',
    "unknown field(s) 'subscribe'": b'{"ttl": 60, "subscribe": ["orders"]}',
    "'sub' must be a string": b'{"ttl": 60, "sub": 7, "pushsvc": {"subscribe": ["orders"]}}',
}


def test_a_malformed_answer_is_a_503_and_one_clear_line(
    backend: AppProcess, server: PushsvcProcess
) -> None:
    """Whatever the backend answers that is not a grant opens nothing: 503, a log line
    saying what is wrong with it, and the server serves on."""
    for said, body in GARBAGE.items():
        _mode(backend, mode="garbage", body=body.decode())
        _unavailable(server.port, STREAM, ALICE)
        server.wait_for_log(r"answered a malformed grant: .*" + re.escape(said))
    _mode(backend, mode="garbage", body="x" * 70_000)
    _unavailable(server.port, STREAM, ALICE)
    server.wait_for_log("answered more than 65536 bytes")
    assert request(server.port, "GET", "/healthz")[0] == 200
    assert not [line for line in server.output if "Traceback" in line]


def test_a_backend_error_fails_closed(backend: AppProcess, server: PushsvcProcess) -> None:
    _mode(backend, mode="error")
    _unavailable(server.port, STREAM, ALICE)
    server.wait_for_log("answered 500, not 200, 401 or 403")


def test_concurrent_asks_for_one_credential_are_one_ask(backend: AppProcess) -> None:
    """A reconnect storm of one user's streams: the first asks, the others wait on its
    answer; then the grant is kept. Another credential is asked about once too."""
    _mode(backend, delay_s=1)
    proc = _pushsvc(backend)
    try:
        statuses: list[int] = []

        def open_stream() -> None:
            statuses.append(_judged(proc.port, STREAM, ALICE)[0])

        threads = [threading.Thread(target=open_stream) for _ in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert statuses == [200] * 20
        assert len(_asks(backend)) == 1
        assert _judged(proc.port, STREAM, CAROL)[0] == 200
        assert _judged(proc.port, STREAM, ALICE)[0] == 200
        assert len(_asks(backend)) == 2
        granted = metric_sample(proc.port, "pushsvc_auth_asks_total", '{outcome="granted"}')
        assert granted == 2
    finally:
        proc.stop()


def test_asks_in_flight_are_bounded(backend: AppProcess) -> None:
    """Past `MAX_ASKS` asks waiting on the backend, another credential's request is a 503 at
    once, not one more connection to a backend that is already behind: fresh credentials
    from five addresses (each may hold a quarter of the asks) against a backend that takes
    0.5 s to answer never have more than that many asks at it. The backend answers well within
    the auth timeout (2 s): an ask the process gave up on would free its slot while the backend
    still held it, and the backend's count would no longer be the process's."""
    _mode(backend, delay_s=0.5)
    proc = _pushsvc(backend)
    answers: Counter[int] = Counter()
    lock = threading.Lock()
    until = time.monotonic() + 4

    def ask(source: str) -> None:
        while time.monotonic() < until:
            fresh = {"Authorization": f"Bearer {secrets.token_urlsafe(24)}"}
            status = request(proc.port, "GET", "/topics", headers=fresh, source=source)[0]
            with lock:
                answers[status] += 1

    try:
        threads = [threading.Thread(target=ask, args=(f"127.0.0.{2 + n % 5}",)) for n in range(100)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        most = json.loads(request(backend.port, "GET", "/in-flight")[2])["most"]
        # More than one address's quarter at once, never more than the process's asks.
        assert MAX_ASKS // 4 < most <= MAX_ASKS, most
        # Denied, a caller reads as anyone may (200); past an address's quarter, 429.
        assert answers[503] > 0 and set(answers) <= {200, 429, 503}, answers
    finally:
        proc.stop()


def test_a_grant_is_never_kept_past_its_lifetime(backend: AppProcess) -> None:
    _mode(backend, ttl=2)
    proc = _pushsvc(backend)
    try:
        assert _judged(proc.port, STREAM, ALICE)[0] == 200
        assert _judged(proc.port, STREAM, ALICE)[0] == 200
        assert len(_asks(backend)) == 1  # kept within its lifetime
        wait_until(
            lambda: _judged(proc.port, STREAM, ALICE)[0] == 200 and len(_asks(backend)) == 2,
            timeout=15,
            what="a request after the lifetime asks again",
        )
    finally:
        proc.stop()


@pytest.mark.parametrize("renewal", ["401", "empty", "error", "narrower"])
def test_a_stream_ends_when_its_grant_expires_and_the_renewal_says_no(
    backend: AppProcess, renewal: str
) -> None:
    """A grant of a second: the stream lives on through its renewals (heartbeats past
    several lifetimes), and ends once a renewal denies, fails, or allows less than the
    stream reads — as a stream ends at its token's `exp`."""
    _mode(backend, ttl=1)
    proc = _pushsvc(backend)
    try:
        with SSEClient(proc.port, STREAM, headers=CAROL, timeout=20) as stream:
            assert stream.status == 200
            stream.next_data("snapshot")
            stream.wait_comments(4)  # 4 heartbeats of 1 s: past three lifetimes
            assert len(_asks(backend)) >= 3, _asks(backend)
            if renewal == "narrower":
                # A well-formed grant that no longer covers `orders`.
                grant = {"ttl": 1, "sub": "carol", "pushsvc": {"subscribe": ["audit"]}}
                _mode(backend, mode="garbage", body=json.dumps(grant))
            else:
                _mode(backend, mode=renewal, ttl=1)
            stream.wait_closed(timeout=10)
        proc.wait_for_log("stream ended: expired")
    finally:
        proc.stop()


def test_the_openapi_document_names_the_forwarded_credentials(server: PushsvcProcess) -> None:
    """The credentials the application judges are the API's security schemes, and what it
    judges may answer 503; the document stays valid OpenAPI."""
    from openapi_spec_validator import validate

    spec = json.loads(request(server.port, "GET", "/openapi.json")[2])
    validate(spec)
    schemes = spec["components"]["securitySchemes"]
    assert schemes["application_cookie_session"] == {
        "type": "apiKey",
        "in": "cookie",
        "name": "session",
        "description": "the application's own credential, judged by it (--auth-url)",
    }
    assert schemes["application_header_Authorization"]["in"] == "header"
    assert "bearer" not in schemes  # no key: pushsvc judges no token of its own
    for path in ("/topics", "/rules", "/topics/{topic}/stream", "/topics/{topic}/stats"):
        (operation,) = spec["paths"][path].values()
        assert {"401", "429", "503"} <= set(operation["responses"]), path


def test_with_a_key_too_a_valid_token_is_judged_here_and_a_bad_one_by_the_backend(
    backend: AppProcess,
) -> None:
    """With --jwt-key and --auth-url together: pushsvc's own tokens are judged without asking;
    a token that is not one of them goes to the application, whose grant is used; when the
    application denies it too, the answer is the bad token's 401 (`invalid_token`)."""
    _mode(backend)
    proc = _pushsvc(backend, "--jwt-key", SECRET)
    try:
        assert _judged(proc.port, STREAM, ALICE)[0] == 200
        assert _asks(backend) == []
        # Signed with another key: not pushsvc's; the backend (which knows the suite's key
        # only) denies it as well.
        forged = {"Authorization": f"Bearer {hs256(subscribe=['orders'], secret=OTHER_SECRET)}"}
        status, headers, body = request(proc.port, "GET", STREAM, headers=forged)
        assert (status, json.loads(body)["error"]["code"]) == (401, "unauthorized")
        assert 'error="invalid_token"' in headers["www-authenticate"]
        assert len(_asks(backend)) == 1
        # An opaque session token of the application's: not a JWT, judged by the backend.
        _mode(
            backend,
            mode="garbage",
            body=json.dumps({"ttl": 60, "pushsvc": {"subscribe": ["orders"]}}),
        )
        opaque = {"Authorization": f"Bearer {remember('app-session-7f3a')}"}
        assert _judged(proc.port, STREAM, opaque)[0] == 200
        assert len(_asks(backend)) == 1
    finally:
        proc.stop()
