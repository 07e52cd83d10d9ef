"""Mercure authorization: where a request's token is, what a verified token grants, and the
RFC 6750 errors (pure: the endpoint passes headers, cookies and query in).

The token is a JWS signed with pushsvc's own key (`PUSHSVC_JWT_KEY`, one algorithm: see
`pushsvc.security.tokens`), in either shape the Mercure specification has had:

* an RFC 9068 access token (header `typ` `at+jwt`, or `application/at+jwt`, any case) whose
  `authorization_details` entries of type `https://mercure.rocks/authorization-detail` carry
  `actions` (`publish`, `subscribe`; others grant nothing, as the spec asks) and `topics`
  (`{"match": "...", "match_type": "exact" | "urlpattern"}`, `match_type` optional, exact by
  default; `*` is every topic). The current specification knows only this shape; a token
  carrying `authorization_details` without `typ: at+jwt` is refused.
* the `mercure` claim of the pre-standard drafts, `{"publish": [...], "subscribe": [...],
  "payload": ...}`, read only when there are no `authorization_details` (as the reference
  hub's compatibility mode does), `typ` not required. Its entries are matcher objects as
  above, or strings: a string is exact (`*` every topic). A string holding a URI template
  (`{...}`, the drafts before URL patterns) is refused rather than silently read as an exact
  topic; the current spec has no URI templates.

Any other token (neither shape and not `typ: at+jwt`) is refused, so a token minted for
something else (an ID token, a pushsvc `/events` token) is no Mercure credential. `exp` is
required and has no leeway; `iat` and `nbf` may be `CLOCK_SKEW_S` ahead. `aud` and `iss` are
checked when the caller gives them (the settings `jwt_audience` and `jwt_issuer`); the spec
(after RFC 9068) requires both of a hub, so a Mercure deployment sets both.

Every failure is a `MercureAuthError` with the RFC 6750 code and status: a malformed
presentation (header, query, a cookie's origin check) is 400 `invalid_request`; any defect of
a presented token, including malformed or oversized authorization details (no partial
acceptance), is 401 `invalid_token`; a valid token lacking the right, 403
`insufficient_scope` (raised by the endpoint, which knows the operation).
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import jwt

from pushsvc.deliver.mercure_selectors import (
    FALLBACK_BASE_URL,
    MAX_SELECTORS,
    Selector,
    SelectorSet,
)
from pushsvc.security.tokens import CLOCK_SKEW_S, NOT_A_JWT, JwtKey

AUTHORIZATION_DETAIL_TYPE = "https://mercure.rocks/authorization-detail"
ACCESS_TOKEN_TYPE = "at+jwt"
LEGACY_CLAIM = "mercure"
# The spec's recommended cookie name first, then the pre-standard drafts' one.
COOKIE_NAMES = ("__Secure-mercure_access_token", "mercureAuthorization")
# The drafts' query parameter. The current spec refuses tokens in URLs (RFC 9700); pushsvc
# still reads it for the subscribers written for the drafts (an EventSource cannot send a
# header), never alongside an Authorization header.
QUERY_PARAMETER = "authorization"
# Mercure authorization details in a token: as many as the reference hub takes. The
# matchers summed over them are bounded by the selector sets' own limit (MAX_SELECTORS).
MAX_DETAILS = MAX_SELECTORS
# Methods that cannot be forged across sites to change anything (RFC 9110 safe methods, and
# QUERY): a cookie on any other method needs the origin check.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "QUERY"})
_B64TOKEN = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/")
_STATUS = {"invalid_request": 400, "invalid_token": 401, "insufficient_scope": 403}


class MercureAuthError(Exception):
    """A refused presentation or token: `status`, the RFC 6750 `error` code, a description."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.status = _STATUS[error]
        self.error = error
        self.description = description

    @classmethod
    def invalid_request(cls, description: str) -> MercureAuthError:
        return cls("invalid_request", description)

    @classmethod
    def invalid_token(cls, description: str) -> MercureAuthError:
        return cls("invalid_token", description)

    @classmethod
    def insufficient_scope(cls, description: str) -> MercureAuthError:
        return cls("insufficient_scope", description)

    def www_authenticate(self, resource_metadata: str | None = None) -> str:
        """The `WWW-Authenticate` challenge (RFC 6750 §3), with the RFC 9728
        `resource_metadata` when given."""
        params = [f'error="{self.error}"', f'error_description="{_quotable(self.description)}"']
        if resource_metadata is not None:
            params.append(f'resource_metadata="{_quotable(resource_metadata)}"')
        return "Bearer " + ", ".join(params)


def bearer_challenge(resource_metadata: str | None = None) -> str:
    """The challenge of a 401 for a request with no token: no error code (RFC 6750 §3.1)."""
    if resource_metadata is None:
        return "Bearer"
    return f'Bearer resource_metadata="{_quotable(resource_metadata)}"'


def _quotable(text: str) -> str:
    """RFC 6750 allows %x20-21 / %x23-5B / %x5D-7E in error_description: no quote, no
    backslash, nothing outside printable ASCII."""
    return "".join(
        "'" if c == '"' else "/" if c == "\\" else c if " " <= c <= "~" else "?" for c in text
    )


@dataclass(frozen=True)
class MercureGrant:
    """What a verified token allows. `publish` / `subscribe`: the selectors of its details
    with that action, in order, duplicates dropped (None: no detail has the action).
    `payload`: the `mercure` claim's `payload` (drafts' tokens; None for access tokens): the
    fallback of `payload_for`. `expires_at`: `exp`, when the endpoint ends a stream.
    `subscribe_payloads`: each subscribe detail's topics and payload, in the token's order.
    `base_url`: what relative URL patterns resolve against (the hub's URL).

    Built, the selectors are checked and compiled (`SelectorSet`): ValueError over a limit."""

    publish: tuple[Selector, ...] | None
    subscribe: tuple[Selector, ...] | None
    payload: Any
    subject: str | None
    expires_at: float = float("inf")
    issuer: str | None = None
    subscribe_payloads: tuple[tuple[tuple[Selector, ...], Any], ...] = ()
    base_url: str = FALLBACK_BASE_URL
    publish_set: SelectorSet = field(init=False, repr=False, compare=False)
    subscribe_set: SelectorSet = field(init=False, repr=False, compare=False)
    _payload_sets: tuple[tuple[SelectorSet, Any], ...] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        def selectors(given: Sequence[Selector] | None) -> SelectorSet:
            return SelectorSet(given or (), base_url=self.base_url)

        object.__setattr__(self, "publish_set", selectors(self.publish))
        object.__setattr__(self, "subscribe_set", selectors(self.subscribe))
        payload_sets = tuple((selectors(t), p) for t, p in self.subscribe_payloads)
        object.__setattr__(self, "_payload_sets", payload_sets)

    @property
    def holds_patterns(self) -> bool:
        """Whether the grant holds compiled URL patterns (of the process's limited live ones)."""
        return any(
            s.holds_patterns
            for s in (self.publish_set, self.subscribe_set, *(p for p, _ in self._payload_sets))
        )

    def may_publish(self, topics: Sequence[str]) -> bool:
        """The spec's rule for a publisher: a right on every topic of the update."""
        return bool(topics) and self.publish_set.matches_all(topics)

    def may_receive(self, topics: Sequence[str]) -> bool:
        """The spec's rule for a private update: a subscribe right on one of its topics."""
        return self.subscribe_set.matches_any(topics)

    def payload_for(self, selector: Selector) -> Any:
        """The payload of the first subscribe detail whose topics match the subscription's
        own matcher text taken as a topic (the spec's "Payloads"), else `payload`."""
        for topics, payload in self._payload_sets:
            if topics.matches_any((selector.text,)):
                return payload
        return self.payload


def mercure_token(
    headers: Mapping[str, str],
    cookies: Mapping[str, str],
    query: Mapping[str, str],
    *,
    method: str = "GET",
    target_origin: str | None = None,
    allowed_origins: Collection[str] = (),
) -> str | None:
    """The request's token, or None when it presents none (anonymous).

    Precedence, as the spec has it: the `Authorization: Bearer` header (scheme in any case);
    with it, a cookie is ignored (cookies are ambient), but the `authorization` query
    parameter is a second mechanism the client chose, refused (RFC 6750 §2). Then the query
    parameter; then the cookie (`COOKIE_NAMES`, in order; an empty one is no cookie).

    A cookie on an unsafe method (a POST: publishing) is a CSRF risk: the spec has the hub
    check that the `Origin` header, else the origin of `Referer`, is the hub's own
    (`target_origin`) or an allowed publisher origin (`allowed_origins`; `*` allows all),
    and refuse the request when neither header is there. Each refusal is a 400
    `invalid_request`: the token was never looked at."""
    header = _header(headers, "authorization")
    from_query = query.get(QUERY_PARAMETER)
    if header is not None:
        if from_query is not None:
            raise MercureAuthError.invalid_request(
                "the token is in both the Authorization header and the authorization query "
                "parameter; send it one way"
            )
        return _bearer(header)
    if from_query is not None:
        if not _is_token(from_query):
            raise MercureAuthError.invalid_request(
                "the authorization query parameter is not a token"
            )
        return from_query
    cookie = next((cookies[name] for name in COOKIE_NAMES if cookies.get(name)), None)
    if cookie is None:
        return None
    if method.upper() not in SAFE_METHODS:
        _check_origin(headers, target_origin, allowed_origins)
    return cookie


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:  # a plain dict: compare names in any case, as HTTP does
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    return value


def _bearer(header: str) -> str:
    scheme, _, token = header.partition(" ")
    token = token.strip(" ")
    if scheme.lower() != "bearer" or not _is_token(token):
        raise MercureAuthError.invalid_request(
            'the Authorization header is not "Bearer" followed by a token'
        )
    return token


def _is_token(text: str) -> bool:
    """RFC 6750's b64token: base64url characters, then any `=`."""
    body = text.rstrip("=")
    return bool(body) and all(c in _B64TOKEN for c in body)


def _check_origin(
    headers: Mapping[str, str], target_origin: str | None, allowed_origins: Collection[str]
) -> None:
    origin = _header(headers, "origin")
    if origin is None:
        referer = _header(headers, "referer")
        if referer is None:
            raise MercureAuthError.invalid_request(
                "a token in a cookie needs an Origin or a Referer header on this method"
            )
        parts = urlsplit(referer)
        if not (parts.scheme and parts.netloc):
            raise MercureAuthError.invalid_request("the Referer header is not an absolute URL")
        origin = f"{parts.scheme}://{parts.netloc}"
    origin = origin.lower()
    allowed = {o.lower() for o in allowed_origins}
    if target_origin is not None:
        allowed.add(target_origin.lower())
    if "*" not in allowed and origin not in allowed:
        raise MercureAuthError.invalid_request(
            f"origin {_quotable(origin)[:200]!r} may not use a cookie token on this method"
        )


def verify_mercure_token(
    token: str,
    key: JwtKey,
    *,
    audience: str | None,
    issuer: str | None,
    now: float | None = None,
    previous_key: JwtKey | None = None,
    base_url: str = FALLBACK_BASE_URL,
) -> MercureGrant:
    """The grant of a token signed with `key` (or, while keys rotate, `previous_key`), or
    MercureAuthError (401 `invalid_token`). `base_url`: the hub's URL, against which the
    token's relative URL patterns are resolved."""
    now = time.time() if now is None else now
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise MercureAuthError.invalid_token(f"invalid token: {NOT_A_JWT}") from None
    claims = _decode(token, key, previous_key, audience=audience, issuer=issuer)
    _check_times(claims, now)
    subject = claims.get("sub")
    if subject is not None and not isinstance(subject, str):
        raise MercureAuthError.invalid_token("invalid token: 'sub' must be a string")
    details = claims.get("authorization_details")
    is_access_token = _is_access_token(header)
    if details is not None:
        if not is_access_token:
            raise MercureAuthError.invalid_token(
                "invalid token: a token with authorization_details is an RFC 9068 access "
                'token, whose header has "typ": "at+jwt"'
            )
        parts = _from_details(details)
    elif isinstance(claims.get(LEGACY_CLAIM), Mapping):
        parts = _from_legacy(claims[LEGACY_CLAIM])
    elif LEGACY_CLAIM in claims:
        raise MercureAuthError.invalid_token(f"invalid token: {LEGACY_CLAIM!r} must be an object")
    elif is_access_token:
        parts = _Parts()
    else:
        raise MercureAuthError.invalid_token(
            'invalid token: not a Mercure token (neither "typ": "at+jwt" nor a "mercure" claim)'
        )
    return parts.grant(subject, float(claims["exp"]), claims.get("iss"), base_url)


def _decode(
    token: str, key: JwtKey, previous: JwtKey | None, *, audience: str | None, issuer: str | None
) -> dict[str, Any]:
    keys = (key,) if previous is None else (key, previous)
    for index, candidate in enumerate(keys):
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                candidate.verify_key,
                algorithms=[candidate.algorithm],
                audience=audience,
                issuer=issuer,
                # Times are checked against the caller's clock (`_check_times`).
                options={
                    "require": ["exp"],
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "verify_aud": audience is not None,
                    "verify_iss": issuer is not None,
                },
            )
            return claims
        except (jwt.InvalidSignatureError, jwt.InvalidAlgorithmError) as exc:
            if index + 1 < len(keys):
                continue  # not signed with this key: the previous one may have signed it
            if isinstance(exc, jwt.InvalidAlgorithmError):
                raise MercureAuthError.invalid_token(
                    f"invalid token: not signed with {candidate.algorithm}, the one algorithm "
                    "this server accepts"
                ) from None
            raise MercureAuthError.invalid_token(
                "invalid token: the signature does not verify"
            ) from None
        except jwt.DecodeError:
            raise MercureAuthError.invalid_token(f"invalid token: {NOT_A_JWT}") from None
        except (jwt.InvalidAudienceError, jwt.MissingRequiredClaimError) as exc:
            if isinstance(exc, jwt.MissingRequiredClaimError) and exc.claim not in ("aud", "iss"):
                raise MercureAuthError.invalid_token(f"invalid token: no {exc.claim!r}") from None
            if isinstance(exc, jwt.InvalidAudienceError) or exc.claim == "aud":
                raise MercureAuthError.invalid_token(
                    "invalid token: its audience (aud) is not this hub"
                ) from None
            raise MercureAuthError.invalid_token(
                "invalid token: its issuer (iss) is not the trusted one"
            ) from None
        except jwt.InvalidIssuerError:
            raise MercureAuthError.invalid_token(
                "invalid token: its issuer (iss) is not the trusted one"
            ) from None
        except jwt.PyJWTError as exc:
            raise MercureAuthError.invalid_token(f"invalid token: {exc}") from None
    raise AssertionError("unreachable")  # pragma: no cover


def _check_times(claims: Mapping[str, Any], now: float) -> None:
    for name in ("exp", "nbf", "iat"):
        value = claims.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
            raise MercureAuthError.invalid_token(f"invalid token: {name!r} must be a number")
    try:
        expires_at = float(claims["exp"])
    except OverflowError:
        raise MercureAuthError.invalid_token("invalid token: 'exp' is out of range") from None
    if expires_at <= now:  # no leeway: no expired token opens a stream
        raise MercureAuthError.invalid_token("the token has expired")
    for name in ("nbf", "iat"):
        if claims.get(name) is not None and claims[name] > now + CLOCK_SKEW_S:
            raise MercureAuthError.invalid_token(f"invalid token: {name!r} is in the future")


def _is_access_token(header: Mapping[str, Any]) -> bool:
    typ = header.get("typ")
    if not isinstance(typ, str):
        return False
    typ = typ.lower()
    return typ.removeprefix("application/") == ACCESS_TOKEN_TYPE


@dataclass
class _Parts:
    publish: list[Selector] | None = None
    subscribe: list[Selector] | None = None
    payload: Any = None
    subscribe_payloads: list[tuple[list[Selector], Any]] = field(default_factory=list)

    def add(self, actions: Collection[str], topics: list[Selector], payload: Any) -> None:
        if "publish" in actions:
            self.publish = (self.publish or []) + topics
        if "subscribe" in actions:
            self.subscribe = (self.subscribe or []) + topics
            self.subscribe_payloads.append((topics, payload))

    def grant(
        self, subject: str | None, expires_at: float, issuer: Any, base_url: str
    ) -> MercureGrant:
        try:
            return MercureGrant(
                publish=None if self.publish is None else tuple(dict.fromkeys(self.publish)),
                subscribe=None if self.subscribe is None else tuple(dict.fromkeys(self.subscribe)),
                payload=self.payload,
                subject=subject,
                expires_at=expires_at,
                issuer=issuer if isinstance(issuer, str) else None,
                subscribe_payloads=tuple((tuple(t), p) for t, p in self.subscribe_payloads),
                base_url=base_url,
            )
        except ValueError as exc:
            raise MercureAuthError.invalid_token(f"invalid token: {exc}") from None


def _from_details(details: Any) -> _Parts:
    if not isinstance(details, list):
        raise MercureAuthError.invalid_token("invalid token: authorization_details must be a list")
    parts = _Parts()
    count = 0
    for detail in details:
        if not isinstance(detail, Mapping):
            raise MercureAuthError.invalid_token(
                "invalid token: each authorization_details entry must be an object"
            )
        if detail.get("type") != AUTHORIZATION_DETAIL_TYPE:
            continue  # another API's detail: not ours to judge
        count += 1
        if count > MAX_DETAILS:
            raise MercureAuthError.invalid_token(
                f"invalid token: more than {MAX_DETAILS} Mercure authorization details"
            )
        actions = detail.get("actions")
        if (
            not isinstance(actions, list)
            or not actions
            or not all(isinstance(a, str) for a in actions)
        ):
            raise MercureAuthError.invalid_token(
                "invalid token: a Mercure authorization detail's actions must be a non-empty "
                "list of strings"
            )
        topics = detail.get("topics")
        if not isinstance(topics, list) or not topics:
            raise MercureAuthError.invalid_token(
                "invalid token: a Mercure authorization detail's topics must be a non-empty list"
            )
        if len(topics) > MAX_SELECTORS:
            raise MercureAuthError.invalid_token(
                f"invalid token: more than {MAX_SELECTORS} topics in a detail"
            )
        parts.add(set(actions), [_matcher(t) for t in topics], detail.get("payload"))
    return parts


def _matcher(entry: Any) -> Selector:
    """A topic matcher object: `{"match": "...", "match_type"?: "exact" | "urlpattern"}`."""
    if isinstance(entry, Mapping):
        match, match_type = entry.get("match"), entry.get("match_type")
        if isinstance(match, str) and match and (match_type is None or isinstance(match_type, str)):
            try:
                return Selector.of_type(match_type, match)
            except ValueError as exc:
                raise MercureAuthError.invalid_token(f"invalid token: {exc}") from None
    raise MercureAuthError.invalid_token(
        'invalid token: a topic matcher is {"match": "<non-empty string>", '
        '"match_type": "exact" | "urlpattern" (optional)}'
    )


def _from_legacy(claim: Mapping[str, Any]) -> _Parts:
    parts = _Parts(payload=claim.get("payload"))
    for action in ("publish", "subscribe"):
        if action not in claim:
            continue
        entries = claim[action]
        if not isinstance(entries, list):
            raise MercureAuthError.invalid_token(
                f"invalid token: '{LEGACY_CLAIM}.{action}' must be a list"
            )
        if len(entries) > MAX_SELECTORS:
            raise MercureAuthError.invalid_token(
                f"invalid token: more than {MAX_SELECTORS} entries in '{LEGACY_CLAIM}.{action}'"
            )
        if not entries:
            parts.add({action}, [], None)
        for entry in entries:
            payload = entry.get("payload") if isinstance(entry, Mapping) else None
            parts.add({action}, [_legacy_matcher(entry)], payload)
    if parts.subscribe is not None:
        # A string entry carries no payload of its own: the claim's payload stands in.
        parts.subscribe_payloads = [
            (topics, parts.payload if payload is None else payload)
            for topics, payload in parts.subscribe_payloads
        ]
    return parts


def _legacy_matcher(entry: Any) -> Selector:
    if not isinstance(entry, str):
        return _matcher(entry)
    if not entry:
        raise MercureAuthError.invalid_token("invalid token: an empty topic selector")
    opening = entry.find("{")
    if opening >= 0 and entry.find("}", opening) > opening:
        raise MercureAuthError.invalid_token(
            f"invalid token: {_quotable(entry)[:200]!r} is a URI template of the Mercure drafts; "
            'give {"match": "...", "match_type": "urlpattern"} instead'
        )
    return Selector("match", entry)
