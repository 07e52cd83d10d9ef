"""What identifies a caller to the application (`BackendAuth.credential`): only the listed
cookies, as sent, and the listed headers; nothing listed, no ask; the cache's key follows
the values."""

from __future__ import annotations

from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from pushsvc.security.backend_auth import BackendAuth


def _request(headers: dict[str, str]) -> Request:
    return Request(EnvironBuilder(path="/topics", headers=headers).get_environ())


def _auth() -> BackendAuth:
    return BackendAuth(
        "http://app/auth",
        cookies=["session", "csrf"],
        headers=["Authorization", "X-Tenant"],
        timeout_s=1,
        max_asks=1,
        cache_size=10,
    )


def test_only_the_listed_cookies_and_headers_are_forwarded_as_sent() -> None:
    auth = _auth()
    sent = {
        "Cookie": 'tracking=t; session="a b\\"c"; pushsvc_token=x; csrf=k; session=second',
        "Authorization": "Bearer s",
        "X-Other": "o",
    }
    credential = auth.credential(_request(sent))
    assert credential is not None
    assert credential.headers == (
        ("Cookie", 'session="a b\\"c"; csrf=k'),
        ("Authorization", "Bearer s"),
    )
    assert credential.has_cookies
    assert "Bearer s" not in repr(credential)
    auth.close()


def test_nothing_listed_sent_is_no_credential() -> None:
    auth = _auth()
    assert auth.credential(_request({"Cookie": "tracking=t", "X-Other": "o"})) is None
    header_only = auth.credential(_request({"X-Tenant": "7"}))
    assert header_only is not None and not header_only.has_cookies
    auth.close()


def test_the_key_is_the_same_for_the_same_values_and_differs_otherwise() -> None:
    auth = _auth()
    keys = [
        auth.credential(_request(headers))
        for headers in (
            {"Cookie": "session=1"},
            {"Cookie": "session=1; tracking=t"},
            {"Cookie": "session=2"},
            {"Cookie": "csrf=1"},
            {"Cookie": "session=1", "X-Tenant": "1"},
        )
    ]
    assert all(key is not None for key in keys)
    first, same, other, other_name, more = (key.key for key in keys if key is not None)
    assert first == same
    assert len({first, other, other_name, more}) == 4
    auth.close()
