"""HTTPS served directly (`--certfile`, `--keyfile`): the server's SSL context, loaded once
at start-up so that a missing, unreadable or mismatched pair is a one-line error before any
process, socket or Redis is started. Behind a proxy, the proxy terminates TLS instead."""

from __future__ import annotations

import ssl

from pushsvc.config import Settings
from pushsvc.errors import ConfigError


def server_context(settings: Settings) -> ssl.SSLContext | None:
    """The context serving `settings`' certificate chain (TLS 1.2 or later); None without TLS.
    Raises ConfigError naming the files when they do not load as a matching pair."""
    if settings.certfile is None or settings.keyfile is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(settings.certfile, settings.keyfile)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"--certfile {settings.certfile} / --keyfile {settings.keyfile}: not a PEM "
            f"certificate chain and its private key ({exc})"
        ) from None
    return context
