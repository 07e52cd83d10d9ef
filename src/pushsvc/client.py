"""A small HTTP client for the producer and subscriber tools (standard library only)."""

from __future__ import annotations

import http.client
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

import orjson

from pushsvc.sse_parser import EventStreamParser, SSEMessage


class ClientError(Exception):
    """The server answered with an error, or could not be reached."""


@dataclass(frozen=True)
class Server:
    """Where a pushsvc web process listens, e.g. `http://127.0.0.1:8000`."""

    url: str

    def _connection(self, timeout: float | None) -> http.client.HTTPConnection:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ClientError(f"{self.url!r} is not an http(s):// URL")
        kind = (
            http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        )
        return kind(parts.hostname, parts.port, timeout=timeout)

    def _base_path(self) -> str:
        return urlsplit(self.url).path.rstrip("/")

    def post_events(self, topic: str, events: list[dict[str, object]]) -> int:
        """POST a batch; return how many were accepted. ClientError carries the server's error."""
        conn = self._connection(timeout=30)
        try:
            conn.request(
                "POST",
                f"{self._base_path()}/topics/{topic}/events",
                body=orjson.dumps(events),
                headers={"Content-Type": "application/json"},
            )
            response = conn.getresponse()
            body = response.read()
        except OSError as exc:
            raise ClientError(f"cannot reach {self.url}: {exc}") from None
        finally:
            conn.close()
        if response.status != 202:
            raise ClientError(f"HTTP {response.status}: {body.decode(errors='replace')}")
        return int(orjson.loads(body)["accepted"])

    def stream(
        self,
        selectors: list[str],
        *,
        last_event_id: str | None = None,
        options: Mapping[str, str] | None = None,
        reconnect: bool = True,
    ) -> Iterator[SSEMessage]:
        """Messages of `/stream`, reconnecting like EventSource (same Last-Event-ID, `retry:`)."""
        query = urlencode([("topic", s) for s in selectors] + list((options or {}).items()))
        retry_s = 3.0
        while True:
            conn = self._connection(timeout=None)
            headers = {"Accept": "text/event-stream"}
            if last_event_id:
                headers["Last-Event-ID"] = last_event_id
            try:
                conn.request("GET", f"{self._base_path()}/stream?{query}", headers=headers)
                response = conn.getresponse()
                if response.status != 200:
                    raise ClientError(f"HTTP {response.status}: {response.read().decode()}")
                parser = EventStreamParser()
                while chunk := response.read1(65536):
                    for message in parser.feed(chunk):
                        if message.id:
                            last_event_id = message.id
                        yield message
                    if parser.retry is not None:
                        retry_s = parser.retry / 1000
            except OSError as exc:
                if not reconnect:
                    raise ClientError(f"cannot reach {self.url}: {exc}") from None
            finally:
                conn.close()
            if not reconnect:
                return
            time.sleep(retry_s)
