"""Properties of scopes and tokens (Hypothesis), against a reference written from the contract.

Selectors are topic names, `prefix.*` (every topic starting with `prefix.`, not `prefix`
itself) and `*`. Topics are drawn from a few short dotted segments so that names, prefixes and
patterns overlap often; a few arbitrary valid names keep the general case in.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from pushsvc.core.topics import TOPIC_PATTERN, TopicMatcher
from pushsvc.security.scopes import Scope
from pushsvc.security.tokens import (
    CLOCK_SKEW_S,
    HMAC_ALGORITHM,
    NOT_A_JWT,
    JwtKey,
    TokenError,
    Verifier,
    load_key,
    mint,
)
from support.auth_tokens import forged

SECRET = b"k" * 32 + b"-properties-secret"

segments = st.sampled_from(["a", "b", "ab", "a-b", "c:1", "0"])
dotted = st.lists(segments, min_size=1, max_size=3).map(".".join)
topics = st.one_of(dotted, dotted, dotted, st.from_regex(f"\\A{TOPIC_PATTERN}\\Z"))
selectors = st.one_of(topics, dotted.map(lambda prefix: prefix + ".*"), st.just("*"))
selector_lists = st.lists(selectors, min_size=1, max_size=5)
# Probe topics: the drawn ones, and the prefixes and extensions the patterns are about.
probes = st.lists(topics, min_size=1, max_size=12)


def selects(selector: str, topic: str) -> bool:
    """The contract, spelt out: the reference the implementation is held to."""
    if selector == "*":
        return True
    if selector.endswith(".*"):
        return topic.startswith(selector[:-1])
    return topic == selector


def selected(chosen: Sequence[str], topic: str) -> bool:
    return any(selects(s, topic) for s in chosen)


def _interesting(probe: list[str], *lists: Sequence[str]) -> list[str]:
    """The probe topics plus, for every selector, its topic, prefix and a child."""
    extra = []
    for chosen in lists:
        for selector in chosen:
            if selector.endswith(".*"):
                extra += [selector[:-2], selector[:-1] + "x", selector[:-1] + "x.y"]
            elif selector != "*":
                extra += [selector, selector + ".x", selector + "x"]
    return [t for t in probe + extra if len(t) <= 128]


@given(scope=st.one_of(st.just([]), selector_lists), wanted=selector_lists)
def test_refused_is_exactly_the_explicit_names_outside_the_scope(
    scope: list[str], wanted: list[str]
) -> None:
    names = {s for s in wanted if s != "*" and not s.endswith(".*")}
    expected = sorted(name for name in names if not selected(scope, name))
    assert Scope.of(scope).refused(TopicMatcher(wanted)) == expected


@given(scope=st.one_of(st.just([]), selector_lists), wanted=selector_lists, probe=probes)
def test_restrict_matches_what_both_the_stream_and_the_scope_match(
    scope: list[str], wanted: list[str], probe: list[str]
) -> None:
    granted, asked = Scope.of(scope), TopicMatcher(wanted)
    narrowed = granted.restrict(asked)
    if granted.refused(asked) and asked.exact:
        # Names only, some refused: the caller answers 403 and never streams (Gate.reader).
        return
    for topic in _interesting(probe, scope, wanted):
        assert narrowed(topic) == (selected(wanted, topic) and selected(scope, topic)), topic


@given(scopes=st.lists(st.one_of(st.just([]), selector_lists), max_size=4), probe=probes)
def test_union_allows_what_any_of_its_scopes_allows(
    scopes: list[list[str]], probe: list[str]
) -> None:
    union = Scope.union(Scope.of(s) for s in scopes)
    assert union.empty == (not any(scopes))
    for topic in _interesting(probe, *scopes):
        assert union.allows(topic) == any(selected(s, topic) for s in scopes), topic


@given(scope=st.one_of(st.just([]), selector_lists), selector=selectors, probe=probes)
def test_a_scope_reaches_a_selector_when_they_share_a_topic(
    scope: list[str], selector: str, probe: list[str]
) -> None:
    """What `GET /rules` shows a rule or an alert by: some topic its selector selects is
    readable. The witnesses (each selector's topic, prefix and children) hold such a topic
    whenever one exists."""
    shared = any(
        selects(selector, topic) and selected(scope, topic)
        for topic in _interesting(probe, scope, [selector])
    )
    assert Scope.of(scope).reaches(selector) == shared


# Tokens.


def _rsa_pem() -> tuple[Any, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key, key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _ec_pem() -> tuple[Any, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    return key, key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


KEYS = {"RSA": _rsa_pem(), "EC": _ec_pem()}


@pytest.fixture(scope="module")
def public_keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Any, JwtKey, bytes]]:
    """Per key type: the private key, the loaded public key (as PUSHSVC_JWT_KEY=@PATH) and
    its PEM."""
    folder = tmp_path_factory.mktemp("keys")
    loaded = {}
    for kind, (private, pem) in KEYS.items():
        path = Path(folder / f"{kind}.pem")
        path.write_bytes(pem)
        loaded[kind] = (private, load_key(f"@{path}"), pem)
    return loaded


subjects = st.one_of(st.none(), st.text(min_size=1, max_size=20))
scope_lists = st.lists(selectors, max_size=4)


# From 5 s: minted at x.999, a 1 s token expires at x+1, perhaps before it is verified here.
@given(publish=scope_lists, subscribe=scope_lists, subject=subjects, ttl=st.integers(5, 10**6))
def test_hs256_tokens_round_trip_their_grant(
    publish: list[str], subscribe: list[str], subject: str | None, ttl: int
) -> None:
    now = time.time()
    token = mint(
        SECRET, HMAC_ALGORITHM, publish=publish, subscribe=subscribe, ttl_s=ttl, subject=subject
    )
    grant = Verifier(load_key(SECRET.decode())).verify(token)
    assert grant.publish.selectors == tuple(publish)
    # A topic read allows its late stream too (`Scope.reading`).
    assert grant.subscribe.selectors == Scope.reading(subscribe).selectors
    assert grant.subject == subject
    assert int(now) + ttl <= grant.expires_at <= now + ttl + 1


_BASE64URL = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=", max_size=40
)


@given(token=st.text(max_size=80) | st.lists(_BASE64URL, min_size=3, max_size=3).map(".".join))
def test_a_token_that_is_no_jwt_is_refused_saying_so(token: str) -> None:
    """Whatever the garbage, one plain reason, never PyJWT's (a codec's, a padding's)."""
    with pytest.raises(TokenError) as refused:
        Verifier(load_key(SECRET.decode())).verify(token)
    assert str(refused.value) == f"invalid token: {NOT_A_JWT}"


@given(now=st.floats(1e9, 2e9), ttl=st.integers(1, 10**6))
def test_a_token_lasts_exactly_its_ttl_from_the_second_it_was_minted_in(
    now: float, ttl: int
) -> None:
    """`exp - iat` is the TTL asked for (not a second more), and `iat` is never in the
    future, which a verifier without leeway refuses."""
    token = mint(SECRET, HMAC_ALGORITHM, ttl_s=ttl, now=now)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == ttl
    assert now - 1 < claims["iat"] <= now


@pytest.mark.parametrize("ttl", [0, 0.5, 1.5, -1, float("inf"), float("nan")])
def test_a_token_ttl_under_a_second_or_not_whole_is_refused(ttl: float) -> None:
    with pytest.raises(ValueError, match="whole number of seconds, at least 1s"):
        mint(SECRET, HMAC_ALGORITHM, ttl_s=ttl)


@settings(max_examples=30)  # RSA signing is slow
@given(kind=st.sampled_from(sorted(KEYS)), publish=scope_lists, subscribe=scope_lists)
def test_public_key_tokens_round_trip_their_grant(
    public_keys: dict[str, tuple[Any, JwtKey, bytes]],
    kind: str,
    publish: list[str],
    subscribe: list[str],
) -> None:
    private, key, _ = public_keys[kind]
    token = mint(private, key.algorithm, publish=publish, subscribe=subscribe, ttl_s=60)
    grant = Verifier(key).verify(token)
    assert (grant.publish.selectors, grant.subscribe.selectors) == (
        tuple(publish),
        Scope.reading(subscribe).selectors,
    )


URL_SAFE = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
replacements = st.one_of(st.sampled_from(URL_SAFE), st.sampled_from(".=+/ \x00é"))


@given(
    publish=scope_lists,
    part=st.sampled_from([0, 1, 2]),
    where=st.floats(0, 1, exclude_max=True),
    char=replacements,
)
def test_a_token_altered_by_one_character_never_verifies(
    publish: list[str], part: int, where: float, char: str
) -> None:
    token = mint(SECRET, HMAC_ALGORITHM, publish=publish, subscribe=["*"], ttl_s=600)
    parts = token.split(".")
    segment = parts[part]
    at = int(where * len(segment))
    if segment[at] == char:
        char = "A" if char != "A" else "B"
    parts[part] = segment[:at] + char + segment[at + 1 :]
    altered = ".".join(parts)
    if part == 2 and _decoded(parts[2]) == _decoded(segment):
        # base64url's last character carries bits no byte uses: such a change leaves the
        # signature itself (and so the token) as it was.
        return
    with pytest.raises(TokenError):
        Verifier(load_key(SECRET.decode())).verify(altered)


def _decoded(segment: str) -> bytes | None:
    try:
        return jwt.utils.base64url_decode(segment)
    except ValueError:
        return None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(publish: list[str]) -> dict[str, Any]:
    return {"exp": int(time.time()) + 600, "pushsvc": {"publish": publish, "subscribe": ["*"]}}


@given(kind=st.sampled_from(sorted(KEYS)), publish=scope_lists)
def test_unsigned_and_algorithm_confused_tokens_never_verify(
    public_keys: dict[str, tuple[Any, JwtKey, bytes]], kind: str, publish: list[str]
) -> None:
    _, key, pem = public_keys[kind]
    verifier = Verifier(key)
    payload = _b64(json.dumps(_claims(publish)).encode())
    forged = []
    for alg in ("none", "None", "NONE"):
        header = _b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
        forged += [f"{header}.{payload}.", f"{header}.{payload}"]
    # The classic confusion: HS256 "signed" with the public key's PEM as the secret, the PEM
    # as the file holds it and without its trailing newline.
    for secret in (pem, pem.strip()):
        header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        signature = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        forged.append(f"{header}.{payload}.{_b64(signature)}")
    for token in forged:
        with pytest.raises(TokenError):
            verifier.verify(token)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**400), 10**400)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)
claim_values = st.one_of(json_values, scope_lists, st.just(["*.*"]), st.just("*"))


@given(
    exp=st.one_of(
        st.integers(int(time.time()) + 60, 10**400),
        st.integers(10, 400).map(lambda digits: 10**digits),  # past a double's range, too
        json_values,
    ),
    granted=st.one_of(
        json_values,
        st.fixed_dictionaries({}, optional={"publish": claim_values, "subscribe": claim_values}),
    ),
    sub=json_values,
)
def test_a_well_signed_token_with_any_claims_verifies_or_is_a_token_error(
    exp: Any, granted: Any, sub: Any
) -> None:
    # Only the key's holder can sign these, but what they sign must not crash the server.
    claims = {"exp": exp, "sub": sub, "pushsvc": granted}
    token = jwt.encode(claims, SECRET, algorithm=HMAC_ALGORITHM)
    try:
        grant = Verifier(load_key(SECRET.decode())).verify(token)
    except TokenError:
        return
    assert grant.expires_at > time.time()


def test_an_exp_past_a_doubles_range_is_a_token_error() -> None:
    # Was an OverflowError, so a 500 for any request carrying such a (well-signed) token.
    token = jwt.encode({"exp": 10**400}, SECRET, algorithm=HMAC_ALGORITHM)
    with pytest.raises(TokenError, match="'exp' is out of range"):
        Verifier(load_key(SECRET.decode())).verify(token)


# -------------------------------------------------------------- the minting host's clock


def _verify_claims(**claims: Any) -> float:
    token = jwt.encode(claims, SECRET, algorithm=HMAC_ALGORITHM)
    return Verifier(load_key(SECRET.decode())).verify(token).expires_at


def test_a_token_minted_on_a_host_whose_clock_runs_a_little_ahead_is_accepted() -> None:
    # PyJWT alone refuses an `iat` one second in the future: random 401s for an application
    # minting tokens on another host.
    now = time.time()
    ahead = now + CLOCK_SKEW_S / 2
    assert _verify_claims(iat=int(ahead), nbf=int(ahead), exp=int(ahead + 60)) > now


def test_a_token_issued_further_ahead_than_the_allowed_skew_is_refused() -> None:
    ahead = time.time() + CLOCK_SKEW_S + 60
    with pytest.raises(TokenError, match="not yet valid"):
        _verify_claims(nbf=int(ahead), exp=int(ahead + 60))


def test_the_skew_allowance_never_lets_an_expired_token_in() -> None:
    with pytest.raises(TokenError, match="expired"):
        _verify_claims(exp=int(time.time()) - 1)


# ------------------------------------------------------------------ rotating keys

NEW_SECRET = b"n" * 32 + b"-the-new-secret"


def _token(secret: bytes, **claims: Any) -> str:
    return jwt.encode({"exp": int(time.time()) + 60, **claims}, secret, algorithm=HMAC_ALGORITHM)


def test_while_keys_rotate_tokens_of_the_new_and_the_previous_key_verify() -> None:
    rotating = Verifier(load_key(NEW_SECRET.decode()), previous=load_key(SECRET.decode()))
    assert rotating.verify(_token(NEW_SECRET, sub="new")).subject == "new"
    assert rotating.verify(_token(SECRET, sub="old")).subject == "old"
    with pytest.raises(TokenError, match="Signature verification failed"):
        rotating.verify(_token(b"x" * 48, sub="neither"))


def test_without_the_previous_key_its_tokens_are_refused() -> None:
    with pytest.raises(TokenError, match="Signature verification failed"):
        Verifier(load_key(NEW_SECRET.decode())).verify(_token(SECRET))


def test_the_previous_key_does_not_revive_an_expired_token() -> None:
    rotating = Verifier(load_key(NEW_SECRET.decode()), previous=load_key(SECRET.decode()))
    expired = jwt.encode({"exp": int(time.time()) - 1}, SECRET, algorithm=HMAC_ALGORITHM)
    with pytest.raises(TokenError, match="expired"):
        rotating.verify(expired)


def test_the_previous_key_keeps_its_own_algorithm(tmp_path: Path) -> None:
    """An RSA key rotated to an HS256 secret: an HS256 token "signed" with the old public key
    as its secret (the confusion attack) is refused by both."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "old.pem").write_bytes(pem)
    rotating = Verifier(load_key(NEW_SECRET.decode()), previous=load_key(f"@{tmp_path}/old.pem"))
    signed = jwt.encode({"exp": int(time.time()) + 60}, private, algorithm="RS256")
    assert rotating.verify(signed).expires_at > time.time()
    claims = {"exp": int(time.time()) + 60}
    confused = forged({"alg": "HS256", "typ": "JWT"}, claims, hmac_key=pem)
    with pytest.raises(TokenError, match=r"Signature verification failed|not allowed"):
        rotating.verify(confused)


def test_a_reader_of_a_topic_reads_its_late_stream_and_nothing_more() -> None:
    scope = Scope.reading(["orders", "public.*"])
    assert scope.allows("orders") and scope.allows("orders.late")
    assert not scope.allows("orders.other") and not scope.allows("ordersx.late")
    assert scope.allows("public.a.late")
    assert Scope.reading([]).empty
    # A name with no room for the suffix has no late stream to read (none can be logged).
    longest = "a" * 128
    assert Scope.reading([longest]).selectors == (longest,)
