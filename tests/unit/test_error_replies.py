"""Request errors carry a code, never HTTP; the API's one table gives each its status and
headers (pure)."""

from __future__ import annotations

import inspect

import pytest

from pushsvc import errors
from pushsvc.core.answers import error_of
from pushsvc.http.api.error_replies import headers_of, status_of


def _kinds() -> list[type[errors.RequestError]]:
    return [
        kind
        for _, kind in inspect.getmembers(errors, inspect.isclass)
        if issubclass(kind, errors.RequestError) and kind is not errors.RequestError
    ]


@pytest.mark.parametrize("kind", _kinds(), ids=lambda kind: kind.__name__)
def test_every_request_error_has_a_status_of_its_own(kind: type[errors.RequestError]) -> None:
    assert 400 <= status_of(kind.__new__(kind)) < 600 and status_of(kind.__new__(kind)) != 500


@pytest.mark.parametrize(
    ("error", "status", "headers"),
    [
        (errors.LateEvent("old", index=2), 400, {}),
        (errors.BrokerFull("full"), 503, {"Retry-After": "5"}),
        (errors.BrokerUnavailable("down"), 503, {"Retry-After": "1"}),
        (errors.TooManyTopics.at(10), 429, {}),
        (errors.RateLimited("slow down", retry_after_s=3), 429, {"Retry-After": "3"}),
        (errors.Unauthorized("no token"), 401, {"WWW-Authenticate": 'Bearer realm="pushsvc"'}),
        (
            errors.Unauthorized("expired", invalid_token=True),
            401,
            {"WWW-Authenticate": 'Bearer realm="pushsvc", error="invalid_token"'},
        ),
        (
            errors.ServerBusy("full", retry_after_s=1),
            503,
            {"Retry-After": "1", "Connection": "close"},
        ),
    ],
)
def test_status_and_headers(
    error: errors.RequestError, status: int, headers: dict[str, str]
) -> None:
    assert (status_of(error), headers_of(error)) == (status, headers)
    assert error_of(error).error.code == error.code


def test_no_error_knows_http() -> None:
    for kind in _kinds():
        assert not hasattr(kind, "status") and not hasattr(kind, "headers"), kind
