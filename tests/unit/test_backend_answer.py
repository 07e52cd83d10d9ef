"""The application backend's answer (`pushsvc.security.backend_answer`): a grant like a token's
claims with a lifetime, or refused whole with a reason that echoes nothing of the body."""

from __future__ import annotations

import json

import pytest

from pushsvc.security.backend_answer import MAX_TTL_S, MalformedAnswer, parse_answer

ASKED_AT = 1_800_000_000.0


def test_a_grant_is_read_as_a_tokens_claims_expiring_its_ttl_after_the_ask() -> None:
    body = {"sub": "u-7", "ttl": 30, "pushsvc": {"publish": ["orders"], "subscribe": ["a.*"]}}
    grant = parse_answer(json.dumps(body).encode(), ASKED_AT)
    assert grant.subject == "u-7" and grant.expires_at == ASKED_AT + 30
    assert grant.publish.selectors == ("orders",) and grant.subscribe.selectors == ("a.*",)


def test_sub_and_either_scope_may_be_left_out() -> None:
    grant = parse_answer(b'{"ttl": 1, "pushsvc": {"subscribe": ["x"]}}', ASKED_AT)
    assert grant.subject is None and grant.publish.empty
    assert parse_answer(b'{"ttl": 1}', ASKED_AT).subscribe.empty


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"", "not JSON (0 bytes)"),
        (b"{secret-session-data", "not JSON"),
        (b'"granted"', "a JSON str, not an object"),
        (b'{"ttl": "60"}', "'ttl' must be a whole number"),
        (b'{"ttl": 1.5}', "'ttl' must be a whole number"),
        (b'{"ttl": true}', "'ttl' must be a whole number"),
        (b'{"ttl": -1}', "'ttl' must be a whole number"),
        (f'{{"ttl": {MAX_TTL_S + 1}}}'.encode(), f"from 1 to {MAX_TTL_S}"),
        (b'{"ttl": 9e999}', "not JSON"),  # orjson refuses an infinite number
        (b'{"ttl": 5, "exp": 1}', "unknown field(s) 'exp'"),
        (b'{"ttl": 5, "sub": ["x"]}', "'sub' must be a string"),
        (b'{"ttl": 5, "pushsvc": []}', "'pushsvc' must be an object"),
        (b'{"ttl": 5, "pushsvc": {"subscibe": ["a"]}}', "unknown field(s) 'subscibe'"),
        (b'{"ttl": 5, "pushsvc": {"publish": [1]}}', "'pushsvc.publish' must be a list"),
        (b'{"ttl": 5, "pushsvc": {"subscribe": ["a", "b*"]}}', "'b*'"),
    ],
)
def test_anything_else_is_malformed_whole(body: bytes, says: str) -> None:
    with pytest.raises(MalformedAnswer) as refused:
        parse_answer(body, ASKED_AT)
    assert says in str(refused.value)
    assert "secret-session-data" not in str(refused.value)
