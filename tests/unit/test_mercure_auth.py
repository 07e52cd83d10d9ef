"""Mercure authorization: where the token is taken from, what a token grants, and each refusal
with its RFC 6750 status, code and challenge."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jwt
import pytest

from pushsvc.deliver.mercure_selectors import MAX_SELECTORS, Selector
from pushsvc.security.mercure_auth import (
    AUTHORIZATION_DETAIL_TYPE,
    MAX_DETAILS,
    MercureAuthError,
    MercureGrant,
    bearer_challenge,
    mercure_token,
    verify_mercure_token,
)
from pushsvc.security.tokens import CLOCK_SKEW_S, load_key, load_signing_key
from support.auth_tokens import SECRET, forged, remember, write_keypair

NOW = 1_767_225_300.0
HUB = "https://hub.example.com/.well-known/mercure"
ISSUER = "https://example.com"
KEY = load_key(SECRET)
TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"  # shaped like a JWS; never verified
OTHER = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ5In0.b3RoZXI"

CONFORMANCE_TOKEN = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6ImF0K2p3dCJ9.eyJhdWQiOiJodHRwczovL2xvY2FsaG9zdC8ud2VsbC1rbm93"
    "bi9tZXJjdXJlIiwiaXNzIjoiaHR0cHM6Ly9sb2NhbGhvc3QiLCJhdXRob3JpemF0aW9uX2RldGFpbHMiOlt7InR5"
    "cGUiOiJodHRwczovL21lcmN1cmUucm9ja3MvYXV0aG9yaXphdGlvbi1kZXRhaWwiLCJhY3Rpb25zIjpbInB1Ymxp"
    "c2giXSwidG9waWNzIjpbeyJtYXRjaCI6IioifV19LHsidHlwZSI6Imh0dHBzOi8vbWVyY3VyZS5yb2Nrcy9hdXRo"
    "b3JpemF0aW9uLWRldGFpbCIsImFjdGlvbnMiOlsic3Vic2NyaWJlIl0sInRvcGljcyI6W3sibWF0Y2giOiIqIn1d"
    "fV0sImV4cCI6NDEwMjQ0NDgwMH0.z_S8IP5WZsCK8h3pcq0PB5zvJE0OdTrGA70khAYJQy4"
)


def detail(actions: Any, topics: Any, **more: Any) -> dict[str, Any]:
    return {"type": AUTHORIZATION_DETAIL_TYPE, "actions": actions, "topics": topics, **more}


def access_token(
    details: Any = None,
    *,
    typ: str | None = "at+jwt",
    secret: str = SECRET,
    drop: tuple[str, ...] = (),
    **claims: Any,
) -> str:
    body: dict[str, Any] = {
        "iss": ISSUER,
        "aud": HUB,
        "sub": "urn:uuid:bb3de268",
        "iat": int(NOW),
        "exp": int(NOW) + 300,
    }
    if details is not None:
        body["authorization_details"] = details
    body.update(claims)
    for name in drop:
        body.pop(name)
    headers = {} if typ is None else {"typ": typ}
    return remember(jwt.encode(body, secret, algorithm="HS256", headers=headers))


def verify(token: str, **kwargs: Any) -> MercureGrant:
    options: dict[str, Any] = {"audience": HUB, "issuer": ISSUER, "now": NOW}
    options.update(kwargs)
    return verify_mercure_token(token, KEY, **options)


def refused(token: str, **kwargs: Any) -> MercureAuthError:
    with pytest.raises(MercureAuthError) as caught:
        verify(token, **kwargs)
    return caught.value


def assert_invalid_token(error: MercureAuthError, words: str) -> None:
    assert (error.status, error.error) == (401, "invalid_token")
    assert words in error.description
    assert error.www_authenticate().startswith('Bearer error="invalid_token", error_description="')


# --- where the token comes from -------------------------------------------------------------


def test_no_token_anywhere_is_anonymous() -> None:
    assert mercure_token({}, {}, {}) is None
    assert mercure_token({}, {"mercureAuthorization": ""}, {}) is None  # an emptied cookie


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_the_authorization_header_in_any_case_of_the_scheme(scheme: str) -> None:
    assert mercure_token({"Authorization": f"{scheme} {TOKEN}"}, {}, {}) == TOKEN
    assert mercure_token({"authorization": f"{scheme} {TOKEN}"}, {}, {}) == TOKEN


def test_the_header_wins_over_a_cookie_which_is_ambient() -> None:
    cookies = {"__Secure-mercure_access_token": OTHER, "mercureAuthorization": OTHER}
    found = mercure_token({"Authorization": f"Bearer {TOKEN}"}, cookies, {}, method="POST")
    assert found == TOKEN  # and no origin check: the cookie is not used


def test_the_header_and_the_query_parameter_together_are_refused() -> None:
    with pytest.raises(MercureAuthError) as caught:
        mercure_token({"Authorization": f"Bearer {TOKEN}"}, {}, {"authorization": OTHER})
    error = caught.value
    assert (error.status, error.error) == (400, "invalid_request")
    assert error.www_authenticate() == (
        'Bearer error="invalid_request", error_description="the token is in both the '
        'Authorization header and the authorization query parameter; send it one way"'
    )


def test_the_query_parameter_wins_over_a_cookie() -> None:
    assert mercure_token({}, {"mercureAuthorization": OTHER}, {"authorization": TOKEN}) == TOKEN


def test_the_specs_cookie_name_wins_over_the_drafts() -> None:
    cookies = {"mercureAuthorization": OTHER, "__Secure-mercure_access_token": TOKEN}
    assert mercure_token({}, cookies, {}) == TOKEN
    assert mercure_token({}, {"mercureAuthorization": OTHER}, {}) == OTHER


@pytest.mark.parametrize(
    "header",
    ["Basic dXNlcjpwYXNz", "Bearer", "Bearer ", f"Token {TOKEN}", "Bearer a b", "Bearer é"],
)
def test_a_malformed_authorization_header_is_an_invalid_request(header: str) -> None:
    with pytest.raises(MercureAuthError) as caught:
        mercure_token({"Authorization": header}, {}, {})
    assert (caught.value.status, caught.value.error) == (400, "invalid_request")
    assert "Authorization header" in caught.value.description


@pytest.mark.parametrize("value", ["", "a b", "==", "tok\u00e9n"])
def test_a_malformed_query_parameter_is_an_invalid_request(value: str) -> None:
    with pytest.raises(MercureAuthError) as caught:
        mercure_token({}, {}, {"authorization": value})
    assert (caught.value.status, caught.value.error) == (400, "invalid_request")


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS", "get"])
def test_a_cookie_on_a_safe_method_needs_no_origin(method: str) -> None:
    assert mercure_token({}, {"mercureAuthorization": TOKEN}, {}, method=method) == TOKEN


@pytest.mark.parametrize(
    ("headers", "allowed"),
    [
        ({"Origin": "https://hub.example.com"}, ()),  # the hub's own origin
        ({"Origin": "https://HUB.example.com"}, ()),
        ({"Origin": "https://app.example.com"}, ("https://app.example.com",)),
        ({"Origin": "https://anything.example"}, ("*",)),
        ({"Referer": "https://hub.example.com/page?x=1"}, ()),
    ],
)
def test_a_cookie_on_a_post_from_an_allowed_origin(
    headers: dict[str, str], allowed: tuple[str, ...]
) -> None:
    found = mercure_token(
        headers,
        {"mercureAuthorization": TOKEN},
        {},
        method="POST",
        target_origin="https://hub.example.com",
        allowed_origins=allowed,
    )
    assert found == TOKEN


@pytest.mark.parametrize(
    ("headers", "words"),
    [
        ({}, "needs an Origin or a Referer header"),
        ({"Origin": "https://evil.example"}, "may not use a cookie token"),
        ({"Origin": "null"}, "may not use a cookie token"),
        ({"Referer": "https://evil.example/x"}, "may not use a cookie token"),
        ({"Referer": "/relative"}, "not an absolute URL"),
    ],
)
def test_a_cookie_on_a_post_from_elsewhere_is_refused(headers: dict[str, str], words: str) -> None:
    with pytest.raises(MercureAuthError) as caught:
        mercure_token(
            headers,
            {"__Secure-mercure_access_token": TOKEN},
            {},
            method="POST",
            target_origin="https://hub.example.com",
        )
    assert (caught.value.status, caught.value.error) == (400, "invalid_request")
    assert words in caught.value.description


def test_without_a_target_origin_or_allowed_origins_no_cookie_may_post() -> None:
    with pytest.raises(MercureAuthError):
        mercure_token(
            {"Origin": "https://hub.example.com"},
            {"mercureAuthorization": TOKEN},
            {},
            method="POST",
        )


# --- what a token grants --------------------------------------------------------------------


def test_the_conformance_suites_publisher_token() -> None:
    grant = verify_mercure_token(
        CONFORMANCE_TOKEN,
        load_key("!ChangeThisMercureHubJWTSecretKey!"),
        audience="https://localhost/.well-known/mercure",
        issuer="https://localhost",
        now=NOW,
    )
    assert grant.publish == (Selector("match", "*"),)
    assert grant.subscribe == (Selector("match", "*"),)
    assert (grant.subject, grant.payload, grant.issuer) == (None, None, "https://localhost")
    assert grant.expires_at == 4102444800
    assert grant.may_publish(["https://example.net/foo/1", "raw"])
    assert grant.may_receive(["anything"])


def test_an_access_tokens_details_grant_their_actions_on_their_topics() -> None:
    grant = verify(
        access_token(
            [
                detail(["subscribe"], [{"match": "https://example.com/books/1"}]),
                detail(
                    ["publish", "subscribe", "someday"],
                    [{"match": "https://example.com/users/42/*", "match_type": "urlpattern"}],
                ),
                {"type": "https://other.example/detail", "topics": "not ours to judge"},
            ]
        )
    )
    user = Selector("urlpattern", "https://example.com/users/42/*")
    assert grant.publish == (user,)
    assert grant.subscribe == (Selector("match", "https://example.com/books/1"), user)
    assert grant.subject == "urn:uuid:bb3de268"
    assert grant.may_receive(["https://example.com/books/1"])
    assert not grant.may_receive(["https://example.com/books/2"])
    # The spec's alternate topic: one granted topic of the update is enough to receive it...
    assert grant.may_receive(["https://example.com/books/2", "https://example.com/users/42/b/2"])
    # ...while publishing needs a right on every topic.
    assert grant.may_publish(["https://example.com/users/42/b/2"])
    assert not grant.may_publish(["https://example.com/books/2", "https://example.com/users/42/x"])
    assert not grant.may_publish([])


@pytest.mark.parametrize("typ", ["at+jwt", "AT+JWT", "application/at+jwt", "Application/AT+JWT"])
def test_the_access_token_type_in_any_spelling_rfc_9068_allows(typ: str) -> None:
    grant = verify(access_token([detail(["publish"], [{"match": "a"}])], typ=typ))
    assert grant.publish == (Selector("match", "a"),) and grant.subscribe is None


@pytest.mark.parametrize("typ", [None, "JWT", "at+jwt+x", "id_token"])
def test_authorization_details_without_the_access_token_type_are_refused(typ: str | None) -> None:
    error = refused(access_token([detail(["publish"], [{"match": "a"}])], typ=typ))
    assert_invalid_token(error, '"typ": "at+jwt"')


def test_an_access_token_with_no_mercure_detail_grants_nothing() -> None:
    grant = verify(access_token([{"type": "https://other.example/detail"}]))
    assert (grant.publish, grant.subscribe) == (None, None)
    assert not grant.may_publish(["a"]) and not grant.may_receive(["a"])
    assert verify(access_token(None)).publish is None


def test_a_token_of_another_kind_is_no_mercure_credential() -> None:
    pushsvc_token = access_token(None, typ="JWT", pushsvc={"publish": ["a"], "subscribe": []})
    assert_invalid_token(refused(pushsvc_token), "not a Mercure token")


def test_payloads_come_from_the_first_subscribe_detail_matching_the_subscription() -> None:
    grant = verify(
        access_token(
            [
                detail(["subscribe"], [{"match": "https://example.com/foo"}], payload={"c": 1}),
                detail(
                    ["subscribe"],
                    [{"match": "https://example.com/bar/:id", "match_type": "urlpattern"}],
                    payload={"c": 2},
                ),
                detail(["subscribe"], [{"match": "*"}], payload={"c": 3}),
            ]
        )
    )
    assert grant.payload_for(Selector("match", "https://example.com/foo")) == {"c": 1}
    assert grant.payload_for(Selector("urlpattern", "https://example.com/bar/:id")) == {"c": 2}
    assert grant.payload_for(Selector("match", "https://example.com/bar/7")) == {"c": 2}
    assert grant.payload_for(Selector("match", "elsewhere")) == {"c": 3}


def test_the_drafts_mercure_claim() -> None:
    grant = verify(
        access_token(
            None,
            typ=None,
            mercure={
                "publish": ["*"],
                "subscribe": [
                    "https://example.com/books/1",
                    {
                        "match": "https://example.com/b/:id",
                        "match_type": "urlpattern",
                        "payload": 7,
                    },
                ],
                "payload": {"user": "x"},
            },
        )
    )
    assert grant.publish == (Selector("match", "*"),)
    assert grant.subscribe == (
        Selector("match", "https://example.com/books/1"),
        Selector("urlpattern", "https://example.com/b/:id"),
    )
    assert grant.payload == {"user": "x"}
    assert grant.payload_for(Selector("match", "https://example.com/b/2")) == 7
    assert grant.payload_for(Selector("match", "https://example.com/books/1")) == {"user": "x"}
    assert grant.payload_for(Selector("match", "unmatched")) == {"user": "x"}


def test_the_drafts_claim_without_rights_and_with_an_empty_list() -> None:
    grant = verify(access_token(None, typ=None, mercure={"subscribe": []}))
    assert (grant.publish, grant.subscribe, grant.payload) == (None, (), None)
    assert not grant.may_receive(["a"])


def test_authorization_details_win_over_the_drafts_claim() -> None:
    token = access_token([detail(["subscribe"], [{"match": "a"}])], mercure={"publish": ["*"]})
    grant = verify(token)
    assert (grant.publish, grant.subscribe) == (None, (Selector("match", "a"),))


def test_a_uri_template_of_the_drafts_is_refused_not_read_as_exact() -> None:
    token = access_token(None, typ=None, mercure={"subscribe": ["https://example.com/{id}"]})
    assert_invalid_token(refused(token), "URI template")
    # A lone brace is no template: an exact topic.
    token = access_token(None, typ=None, mercure={"subscribe": ["https://example.com/{"]})
    assert verify(token).subscribe == (Selector("match", "https://example.com/{"),)


@pytest.mark.parametrize(
    ("mercure", "words"),
    [
        ("everything", "'mercure' must be an object"),
        ({"publish": "*"}, "'mercure.publish' must be a list"),
        ({"subscribe": [""]}, "empty topic selector"),
        ({"subscribe": [3]}, "a topic matcher is"),
        ({"subscribe": ["*"] * (MAX_SELECTORS + 1)}, f"more than {MAX_SELECTORS} entries"),
    ],
)
def test_a_malformed_drafts_claim(mercure: Any, words: str) -> None:
    assert_invalid_token(refused(access_token(None, typ=None, mercure=mercure)), words)


@pytest.mark.parametrize(
    ("details", "words"),
    [
        ({"type": AUTHORIZATION_DETAIL_TYPE}, "authorization_details must be a list"),
        (["a string"], "each authorization_details entry must be an object"),
        ([detail([], [{"match": "a"}])], "actions must be a non-empty list of strings"),
        ([detail("publish", [{"match": "a"}])], "actions must be a non-empty list of strings"),
        ([detail(["publish", 1], [{"match": "a"}])], "actions must be a non-empty list of strings"),
        ([detail(["publish"], [])], "topics must be a non-empty list"),
        ([detail(["publish"], {"match": "a"})], "topics must be a non-empty list"),
        ([detail(["publish"], ["a"])], "a topic matcher is"),
        ([detail(["publish"], [{}])], "a topic matcher is"),
        ([detail(["publish"], [{"match": ""}])], "a topic matcher is"),
        ([detail(["publish"], [{"match": 1}])], "a topic matcher is"),
        ([detail(["publish"], [{"match_urlpattern": "https://a/:x"}])], "a topic matcher is"),
        ([detail(["publish"], [{"match": "a", "match_type": 1}])], "a topic matcher is"),
        ([detail(["publish"], [{"match": "a", "match_type": "regex"}])], "unsupported match_type"),
        ([detail(["publish"], [{"match": "a", "match_type": "Exact"}])], "unsupported match_type"),
        (
            [detail(["publish"], [{"match": "https://a/(", "match_type": "urlpattern"}])],
            "is not a URL pattern",
        ),
        ([detail(["publish"], [{"match": "a\u0000"}])], "control or format character U+0000"),
        ([detail(["publish"], [{"match": "a" * 2000}])], "2000 characters"),
        ([detail(["publish"], [{"match": "a"}])] * (MAX_DETAILS + 1), "Mercure authorization det"),
        (
            [detail(["publish"], [{"match": str(i)} for i in range(MAX_SELECTORS + 1)])],
            f"more than {MAX_SELECTORS} topics",
        ),
        (
            [detail(["publish"], [{"match": f"{i}-{j}"} for i in range(60)]) for j in range(2)],
            "too many topic matchers",
        ),
    ],
)
def test_one_malformed_detail_refuses_the_whole_token(details: Any, words: str) -> None:
    valid = detail(["subscribe"], [{"match": "*"}])
    body = [valid, *details] if isinstance(details, list) else details
    assert_invalid_token(refused(access_token(body)), words)


# --- signature, algorithm, times, audience, issuer ----------------------------------------


def test_a_token_signed_with_another_key() -> None:
    token = access_token([], secret="another-secret-" + "x" * 32)
    assert_invalid_token(refused(token), "the signature does not verify")


def test_the_previous_key_verifies_while_keys_rotate() -> None:
    old = "another-secret-" + "x" * 32
    token = access_token([detail(["publish"], [{"match": "a"}])], secret=old)
    grant = verify_mercure_token(
        token, KEY, previous_key=load_key(old), audience=HUB, issuer=ISSUER, now=NOW
    )
    assert grant.publish == (Selector("match", "a"),)


def test_alg_none_is_refused() -> None:
    claims = {"iss": ISSUER, "aud": HUB, "exp": int(NOW) + 60, "authorization_details": []}
    token = forged({"alg": "none", "typ": "at+jwt"}, claims, None)
    assert_invalid_token(refused(token), "not signed with HS256")


def test_a_public_key_used_as_an_hmac_secret_is_refused(tmp_path: Path) -> None:
    private, public = write_keypair(tmp_path, "ec")
    key = load_key(f"@{public}")
    claims = {"iss": ISSUER, "aud": HUB, "exp": int(NOW) + 60, "authorization_details": []}
    token = forged({"alg": "HS256", "typ": "at+jwt"}, claims, public.read_bytes())
    with pytest.raises(MercureAuthError) as caught:
        verify_mercure_token(token, key, audience=HUB, issuer=ISSUER, now=NOW)
    assert_invalid_token(caught.value, "not signed with ES256")
    signing_key, algorithm = load_signing_key(private)
    good = jwt.encode(claims, signing_key, algorithm=algorithm, headers={"typ": "at+jwt"})
    assert verify_mercure_token(good, key, audience=HUB, issuer=ISSUER, now=NOW).publish is None


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "eyJhbGciOiJIUzI1NiJ9..", TOKEN + "x"])
def test_what_is_not_a_jwt(token: str) -> None:
    error = refused(token)
    assert error.status == 401 and error.error == "invalid_token"


def test_exp_is_required_and_has_no_leeway() -> None:
    assert_invalid_token(refused(access_token([], drop=("exp",))), "'exp'")
    assert_invalid_token(refused(access_token([], exp=int(NOW))), "the token has expired")
    assert_invalid_token(refused(access_token([], exp="soon")), "'exp' must be a number")
    assert_invalid_token(refused(access_token([], exp=10**400)), "'exp' is out of range")
    assert verify(access_token([], exp=int(NOW) + 1)).expires_at == NOW + 1


@pytest.mark.parametrize("claim", ["nbf", "iat"])
def test_nbf_and_iat_may_be_a_little_ahead(claim: str) -> None:
    ahead: dict[str, Any] = {claim: int(NOW) + CLOCK_SKEW_S}
    assert verify(access_token([], **ahead)).publish is None
    too_far: dict[str, Any] = {claim: int(NOW) + CLOCK_SKEW_S + 1}
    assert_invalid_token(refused(access_token([], **too_far)), f"'{claim}' is in the future")
    not_a_number: dict[str, Any] = {claim: "x"}
    assert_invalid_token(refused(access_token([], **not_a_number)), f"'{claim}' must be a number")


@pytest.mark.parametrize("aud", ["https://other.example/.well-known/mercure", ["a", "b"]])
def test_a_token_for_another_audience(aud: Any) -> None:
    assert_invalid_token(refused(access_token([], aud=aud)), "audience (aud) is not this hub")


def test_the_audience_may_be_one_of_a_list_and_is_required_when_configured() -> None:
    assert verify(access_token([], aud=["https://x.example", HUB])).publish is None
    assert_invalid_token(refused(access_token([], drop=("aud",))), "audience (aud)")
    assert verify(access_token([], drop=("aud",)), audience=None).publish is None


def test_a_token_from_another_issuer() -> None:
    assert_invalid_token(refused(access_token([], iss="https://evil.example")), "issuer (iss)")
    assert_invalid_token(refused(access_token([], drop=("iss",))), "issuer (iss)")
    grant = verify(access_token([], drop=("iss",)), issuer=None)
    assert grant.issuer is None


def test_sub_must_be_a_string() -> None:
    assert_invalid_token(refused(access_token([], sub=7)), "must be a string")


def test_relative_patterns_resolve_against_the_hubs_url() -> None:
    token = access_token(
        [detail(["subscribe"], [{"match": "/books/:id", "match_type": "urlpattern"}])]
    )
    grant = verify(token, base_url="https://hub.example.com/.well-known/mercure")
    assert grant.may_receive(["https://hub.example.com/books/1"])
    assert grant.may_receive(["/books/1"])
    assert not grant.may_receive(["https://other.example/books/1"])


# --- the challenge --------------------------------------------------------------------------


def test_the_challenge_quotes_safely_and_names_the_metadata() -> None:
    error = MercureAuthError.insufficient_scope('no right on "a\\b" é')
    assert error.status == 403
    assert error.www_authenticate("https://hub.example.com/.well-known/oauth") == (
        'Bearer error="insufficient_scope", error_description="no right on \'a/b\' ?", '
        'resource_metadata="https://hub.example.com/.well-known/oauth"'
    )
    assert bearer_challenge() == "Bearer"
    assert bearer_challenge("https://m.example") == 'Bearer resource_metadata="https://m.example"'


def test_an_unknown_error_code_is_a_programming_error() -> None:
    with pytest.raises(KeyError):
        MercureAuthError("server_error", "no such code in RFC 6750")


def test_a_grant_built_by_hand_checks_and_compiles_its_selectors() -> None:
    grant = MercureGrant(
        publish=(Selector("urlpattern", "/books/:id"),),
        subscribe=None,
        payload=None,
        subject=None,
        base_url="https://hub.example.com/.well-known/mercure",
    )
    assert grant.may_publish(["https://hub.example.com/books/1"])
    assert not grant.may_receive(["https://hub.example.com/books/1"])
    with pytest.raises(ValueError, match="17 groups"):
        MercureGrant((Selector("urlpattern", "/" + "*" * 17),), None, None, None)


def test_a_grant_tells_whether_it_holds_url_patterns_which_a_kept_grant_must_not() -> None:
    def grant(publish: list[Selector], subscribe: list[Selector] | None = None) -> MercureGrant:
        return MercureGrant(
            tuple(publish),
            None if subscribe is None else tuple(subscribe),
            None,
            None,
            base_url=HUB,
        )

    assert not grant([Selector("urlpattern", "*")]).holds_patterns
    assert not grant([Selector("match", "https://example.com/books/1")]).holds_patterns
    assert grant([Selector("urlpattern", "https://example.com/books/:id")]).holds_patterns
    assert grant([], [Selector("urlpattern", "/books/:id")]).holds_patterns
