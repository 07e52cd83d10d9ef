"""JSON Web Tokens: the configured key, what a token grants, verifying and minting (pure).

`PUSHSVC_JWT_KEY` is either an HS256 secret or `@PATH` to a PEM public key, whose type picks
the algorithm (RSA: RS256; EC P-256/384/521: ES256/384/512). The verifier accepts exactly
that one algorithm, so neither `alg: none` nor an HS256 token "signed" with the public key
as its secret can pass (the classic algorithm-confusion attack). `exp` is required.

Claims:

    {"exp": 1763703600, "sub": "dashboard-7",
     "pushsvc": {"publish": ["orders", "sensors.*"], "subscribe": ["orders", "public.*"]}}

An optional `"presence": [selectors]` in the `pushsvc` claim is the presence scope: the topics
whose watchers' subjects the token may be told, where the operator keeps them
(`--presence-subs`; `pushsvc.core.presence`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from pushsvc.errors import InvalidTopic
from pushsvc.security.scopes import Scope

CLAIM = "pushsvc"
HMAC_ALGORITHM = "HS256"
# How far the clock of the host that minted a token may run ahead of ours: an `iat` or `nbf`
# up to this far in the future is accepted. `exp` gets none, so that a stream ends when its
# token expires and no expired token opens one.
CLOCK_SKEW_S = 30
# RFC 7518 §3.2: an HS256 key must be at least as long as the hash (256 bits).
MIN_SECRET_BYTES = 32
NOT_A_JWT = "the token is not a JWT (header.payload.signature, each base64url-encoded JSON)"
_EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}


class TokenError(Exception):
    """The token is missing a part, badly signed, expired or malformed (a 401)."""


@dataclass(frozen=True)
class JwtKey:
    """The verification key and its one algorithm. `secret` is set for HS256 only."""

    algorithm: str
    verify_key: Any
    source: str

    @property
    def can_mint(self) -> bool:
        return self.algorithm == HMAC_ALGORITHM

    def __repr__(self) -> str:  # never the secret, whatever prints a Settings
        return f"JwtKey({self.algorithm}, {self.source})"


def load_key(text: str) -> JwtKey:
    """The `PUSHSVC_JWT_KEY` setting: `@PATH` of a PEM public key, else an HS256 secret.
    ValueError says what is wrong (never echoing the secret)."""
    if text.startswith("@"):
        path = Path(text[1:]).expanduser()
        try:
            pem = path.read_bytes()
        except OSError as exc:
            raise ValueError(f"cannot read the public key {str(path)!r}: {exc.strerror}") from None
        try:
            key = serialization.load_pem_public_key(pem)
        except ValueError:
            raise ValueError(
                f"{str(path)!r} is not a PEM public key (-----BEGIN PUBLIC KEY-----); "
                "give the public half, never the private key"
            ) from None
        return JwtKey(_public_key_algorithm(key), key, f"@{path}")
    if len(text.encode()) < MIN_SECRET_BYTES:
        raise ValueError(
            f"an HS256 secret needs at least {MIN_SECRET_BYTES} bytes "
            "(e.g. `openssl rand -base64 48`), or use @PATH to a PEM public key"
        )
    if text.lstrip().startswith("-----BEGIN"):
        raise ValueError("a PEM key is given as @PATH to its file, not inline")
    return JwtKey(HMAC_ALGORITHM, text.encode(), "secret")


def load_signing_key(path: Path) -> tuple[Any, str]:
    """A PEM private key (unencrypted) and the algorithm its type implies, for minting tokens
    that servers configured with its public half accept."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise ValueError(f"cannot read {str(path)!r}: {exc.strerror}") from None
    except (ValueError, TypeError):
        raise ValueError(f"{str(path)!r} is not an unencrypted PEM private key") from None
    return key, _public_key_algorithm(key.public_key())


def _public_key_algorithm(key: object) -> str:
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise ValueError(f"an RSA key needs at least 2048 bits, not {key.key_size}")
        return "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey):
        algorithm = _EC_ALGORITHMS.get(key.curve.name)
        if algorithm is None:
            raise ValueError(f"EC curve {key.curve.name} is not one of P-256, P-384, P-521")
        return algorithm
    raise ValueError(f"unsupported public key type {type(key).__name__} (use RSA or EC)")


@dataclass(frozen=True, slots=True)
class Grant:
    """What a verified token allows: its subject, scopes and expiry (epoch seconds)."""

    subject: str | None
    publish: Scope
    subscribe: Scope
    expires_at: float
    presence: Scope = Scope(None)  # noqa: RUF009 (frozen)
    """The topics whose watchers' subjects it may be told (the empty scope: none)."""


@dataclass(frozen=True)
class Verifier:
    """Checks tokens against the key, or while keys are rotated the previous key too (each
    with its own one algorithm), and the audience and issuer, when configured."""

    key: JwtKey
    audience: str | None = None
    issuer: str | None = None
    previous: JwtKey | None = None

    def verify(self, token: str) -> Grant:
        keys = (self.key,) if self.previous is None else (self.key, self.previous)
        for key in keys:
            try:
                claims = self._decode(token, key)
                break
            except (jwt.InvalidSignatureError, jwt.InvalidAlgorithmError) as exc:
                refused = exc  # not signed with this key: the next one may have signed it
            except jwt.ExpiredSignatureError:
                raise TokenError("the token has expired") from None
            except jwt.DecodeError:
                # PyJWT's own words (a codec's, a padding's) say nothing to whoever sent it.
                raise TokenError(f"invalid token: {NOT_A_JWT}") from None
            except jwt.PyJWTError as exc:
                raise TokenError(f"invalid token: {exc}") from None
        else:
            raise TokenError(f"invalid token: {refused}")
        grant = _grant(claims)
        if grant.expires_at <= time.time():  # the leeway is for iat and nbf only
            raise TokenError("the token has expired")
        return grant

    def _decode(self, token: str, key: JwtKey) -> dict[str, Any]:
        claims: dict[str, Any] = jwt.decode(
            token,
            key.verify_key,
            algorithms=[key.algorithm],
            audience=self.audience,
            issuer=self.issuer,
            leeway=CLOCK_SKEW_S,
            options={
                "require": ["exp"] + (["aud"] if self.audience else []),
                "verify_aud": self.audience is not None,
            },
        )
        return claims


def _grant(claims: Mapping[str, Any]) -> Grant:
    granted = claims.get(CLAIM, {})
    if not isinstance(granted, Mapping):
        raise TokenError(f"invalid token: the {CLAIM!r} claim must be an object")
    subject = claims.get("sub")
    if subject is not None and not isinstance(subject, str):
        raise TokenError("invalid token: 'sub' must be a string")
    try:
        publish = Scope.of(_selectors(granted, "publish"))
        subscribe = Scope.reading(_selectors(granted, "subscribe"))
        presence = Scope.of(_selectors(granted, "presence"))
    except InvalidTopic as exc:
        raise TokenError(f"invalid token: {exc.message}") from None
    try:
        # PyJWT checked that `exp` is an integer, not that a double can hold it.
        expires_at = float(claims["exp"])
    except OverflowError:
        raise TokenError("invalid token: 'exp' is out of range") from None
    return Grant(subject, publish, subscribe, expires_at, presence)


def _selectors(granted: Mapping[str, Any], name: str) -> tuple[str, ...]:
    value = granted.get(name, [])
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise TokenError(f"invalid token: '{CLAIM}.{name}' must be a list of selectors")
    return tuple(value)


def mint(
    signing_key: Any,
    algorithm: str,
    *,
    publish: Sequence[str] = (),
    subscribe: Sequence[str] = (),
    ttl_s: float,
    presence: Sequence[str] = (),
    subject: str | None = None,
    audience: str | None = None,
    issuer: str | None = None,
    now: float | None = None,
) -> str:
    """A signed token granting these selectors for exactly `ttl_s` seconds (whole, at least
    one): `exp` is `iat + ttl_s`, `iat` the second it is minted in (`now`, rounded down: a
    verifier without leeway refuses an `iat` in the future). ValueError for another TTL."""
    check_ttl(ttl_s)
    Scope.of(publish), Scope.of(subscribe), Scope.of(presence)  # refuse what no server takes
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "iat": issued,
        "exp": issued + int(ttl_s),
        CLAIM: {"publish": list(publish), "subscribe": list(subscribe)},
    }
    if presence:
        claims[CLAIM]["presence"] = list(presence)
    for name, value in (("sub", subject), ("aud", audience), ("iss", issuer)):
        if value is not None:
            claims[name] = value
    return jwt.encode(claims, signing_key, algorithm=algorithm)


def check_ttl(ttl_s: float) -> None:
    """A token's lifetime: `exp` and `iat` are whole seconds, so is the TTL; under a second
    it could expire before it is used (and 0 would be no token at all)."""
    if not (math.isfinite(ttl_s) and ttl_s >= 1 and ttl_s == int(ttl_s)):
        raise ValueError(f"a token's TTL is a whole number of seconds, at least 1s; got {ttl_s:g}s")
