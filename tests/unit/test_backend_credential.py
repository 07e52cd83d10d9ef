"""What identifies a caller to the application (`BackendAuth.credential`): only the listed
cookies, as sent, and the Authorization header; nothing of them, no ask; the cache's key
follows the values."""

from __future__ import annotations

from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from pushsvc.security.backend_auth import BackendAuth


def _request(headers: dict[str, str]) -> Request:
    return Request(EnvironBuilder(path="/topics", headers=headers).get_environ())


def _auth() -> BackendAuth:
    return BackendAuth("http://app/auth", cookies=["session", "csrf"])


def test_only_the_listed_cookies_and_the_authorization_header_are_forwarded_as_sent() -> None:
    auth = _auth()
    sent = {
        "Cookie": 'tracking=t; session="a b\\"c"; pushsvc_token=x; csrf=k; session=second',
        "Authorization": "Bearer s",
        "X-Other": "o",
        "X-Tenant": "7",
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
    assert auth.credential(_request({"Cookie": "tracking=t", "X-Tenant": "7"})) is None
    header_only = auth.credential(_request({"Authorization": "Basic dTpw"}))
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
            {"Cookie": "session=1", "Authorization": "Bearer 1"},
        )
    ]
    assert all(key is not None for key in keys)
    first, same, other, other_name, more = (key.key for key in keys if key is not None)
    assert first == same
    assert len({first, other, other_name, more}) == 4
    auth.close()
