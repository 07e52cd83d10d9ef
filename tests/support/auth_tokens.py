"""Keys and tokens for the security tests: real keys, real signatures, and the forgeries an
attacker would try (unsigned, re-signed with the public key as an HMAC secret)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from pushsvc.security.tokens import mint

SECRET = "test-secret-" + "s3cr3t-" * 6  # an HS256 secret over 32 bytes
OTHER_SECRET = "another-secret-" + "x" * 32

# Every credential the suite uses, so that the log check (conftest) can look for each.
CREDENTIALS: set[str] = {SECRET, OTHER_SECRET}


def remember(token: str) -> str:
    CREDENTIALS.add(token)
    return token


def hs256(
    *,
    publish: list[str] | None = None,
    subscribe: list[str] | None = None,
    # An hour: tokens minted at collection (parametrised cases) must outlive a suite that
    # runs their module late.
    ttl_s: float = 3600,
    secret: str = SECRET,
    subject: str | None = None,
    expired: bool = False,
    **claims: Any,
) -> str:
    """A token signed with `secret`; `expired`: one that expired a minute ago."""
    return remember(
        mint(
            secret.encode(),
            "HS256",
            publish=publish or [],
            subscribe=subscribe or [],
            ttl_s=ttl_s,
            subject=subject,
            now=time.time() - ttl_s - 60 if expired else None,
            **claims,
        )
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(header: dict[str, Any], claims: dict[str, Any], hmac_key: bytes | None) -> str:
    """A token built by hand: unsigned (`hmac_key` None, as for `alg: none`) or HMAC-signed
    with any bytes, such as a public key's PEM (what PyJWT itself refuses to produce)."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = b""
    if hmac_key is not None:
        signature = hmac.new(hmac_key, signing_input.encode(), hashlib.sha256).digest()
    return remember(f"{signing_input}.{_b64(signature)}")


def claims_for(topics: list[str], *, ttl_s: float = 300) -> dict[str, Any]:
    return {
        "exp": int(time.time() + ttl_s),
        "pushsvc": {"publish": topics, "subscribe": topics},
    }


def write_keypair(directory: Path, kind: str) -> tuple[Path, Path]:
    """A new RSA-2048 or EC P-256 key pair as PEM files: (private, public)."""
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    key = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if kind == "rsa"
        else ec.generate_private_key(ec.SECP256R1())
    )
    private = directory / f"{kind}.key"
    public = directory / f"{kind}.pub"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public
