"""Where a client talks to and how it introduces itself: the server's base URL, the token
(`Authorization: Bearer`), the User-Agent and the timeouts — the same for both clients."""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from pushsvc import __version__


class Session:
    def __init__(
        self, url: str, token: str | None, *, timeout: float, stream_timeout: float
    ) -> None:
        parts = httpx.URL(url)
        if parts.scheme not in ("http", "https") or not parts.host:
            raise ValueError(f"{url!r} is not an http(s):// URL")
        # Paths are joined below the base, so that a server mounted under a prefix works.
        self.base = url.rstrip("/") + "/"
        self.token = token
        self.timeout = httpx.Timeout(timeout)
        # A read waits at most this long on a stream: several of the server's heartbeats
        # (15 s by default), so that a connection that died silently is noticed.
        self.stream_timeout = httpx.Timeout(timeout, read=stream_timeout)

    def url(self, path: str) -> str:
        return self.base + path

    def headers(self, extra: Mapping[str, str]) -> dict[str, str]:
        headers = {"User-Agent": f"pushsvc-python/{__version__}", **extra}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers
