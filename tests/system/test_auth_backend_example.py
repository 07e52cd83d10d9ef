"""The Flask-Login example of docs/security.md (examples/auth_backend/app.py), run as its
readers would: the application and pushsvc as real processes, users signing in with the
application's form and reading pushsvc with its session cookie alone."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness.app_process import AppProcess
from harness.live import PushsvcProcess, SSEClient, post, request

from support.auth_tokens import remember

APP = Path(__file__).resolve().parents[2] / "examples" / "auth_backend" / "app.py"


@pytest.fixture(scope="module")
def app() -> Iterator[AppProcess]:
    # Grants of a second: a signed-out user's stream ends within a second or two.
    with AppProcess(str(APP), "--port", "0", env={"GRANT_TTL_S": "1"}) as process:
        yield process


@pytest.fixture(scope="module")
def pushsvc(app: AppProcess) -> Iterator[PushsvcProcess]:
    proc = PushsvcProcess(
        "serve",
        "--tick", "0",
        "--heartbeat", "1s",
        "--auth-url", f"{app.url}/pushsvc/auth",
        "--auth-cookies", "session",
        "--anonymous", "public.*",
    ).start()  # fmt: skip
    yield proc
    proc.stop()


def _sign_in(app: AppProcess, user: str, password: str) -> tuple[int, str]:
    """The status of the form's POST and the session cookie it set ("" if none)."""
    conn = http.client.HTTPConnection("127.0.0.1", app.port, timeout=10)
    try:
        conn.request(
            "POST",
            "/login",
            body=f"username={user}&password={password}",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        response = conn.getresponse()
        response.read()
        cookie = (response.getheader("Set-Cookie") or "").split(";")[0]
        return response.status, remember(cookie) if cookie else ""
    finally:
        conn.close()


def test_a_signed_in_user_reads_and_publishes_with_the_session_cookie(
    app: AppProcess, pushsvc: PushsvcProcess
) -> None:
    status, cookie = _sign_in(app, "alice", "wonderland")
    assert status == 200 and cookie.startswith("session=")
    alice = {"Cookie": cookie, "Origin": f"http://127.0.0.1:{pushsvc.port}"}
    with SSEClient(pushsvc.port, "/topics/orders/stream", headers=alice) as stream:
        assert stream.status == 200
        stream.next_data("snapshot")
        assert post(pushsvc.port, "orders", {"value": 42}, headers=alice)[0] == 202
        _, update = stream.next_data("stats")
        assert update["topic"] == "orders"


def test_what_the_application_does_not_grant_is_refused(
    app: AppProcess, pushsvc: PushsvcProcess
) -> None:
    """bob reads public topics only; a wrong password gets no cookie; no cookie is anonymous."""
    assert _sign_in(app, "alice", "wrong")[0] == 401
    _, cookie = _sign_in(app, "bob", "builder")
    bob = {"Cookie": cookie}
    status, _, body = request(pushsvc.port, "GET", "/topics/orders/stream", headers=bob)
    assert status == 403, body
    with SSEClient(pushsvc.port, "/topics/public.news/stream", headers=bob) as stream:
        assert stream.status == 200
    origin = {"Origin": f"http://127.0.0.1:{pushsvc.port}"}
    assert post(pushsvc.port, "orders", {"value": 1}, headers={**bob, **origin})[0] == 403
    status, _, body = request(pushsvc.port, "GET", "/topics/orders/stream")
    assert status == 401 and json.loads(body)["error"]["code"] == "unauthorized"


def test_signing_out_ends_the_stream_when_its_grant_expires(
    app: AppProcess, pushsvc: PushsvcProcess
) -> None:
    """While signed in the stream outlives its one-second grants; once signed out, the
    renewal is answered 401 and the stream ends, though the browser still holds the cookie."""
    _, cookie = _sign_in(app, "alice", "wonderland")
    with SSEClient(pushsvc.port, "/topics/orders/stream", headers={"Cookie": cookie}) as stream:
        assert stream.status == 200
        stream.next_data("snapshot")
        stream.wait_comments(3, timeout=15)  # heartbeats of a second: past two grants
        status, _, _ = request(app.port, "POST", "/logout", headers={"Cookie": cookie})
        assert status == 200
        stream.wait_closed(timeout=15)
    status, _, _ = request(pushsvc.port, "GET", "/topics/orders/stream", headers={"Cookie": cookie})
    assert status == 401
