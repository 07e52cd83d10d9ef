"""The Python client: `Endpoint` (the HTTP transport the tools use, standard library only) and
`Client` (publish with retries, history as a pandas DataFrame — the tools extra —, typed
subscriptions).

    from pushsvc.client import Client
    client = Client("http://127.0.0.1:8000", token=None)
    client.publish("orders", [{"value": 12.5}])
    frame = client.history("orders", since="2025-11-21T04:40:00Z")   # pandas.DataFrame
    for message in client.subscribe(["orders"], last_event_id=frame.attrs["resume_id"]):
        ...   # StreamUpdate or Snapshot
"""

from __future__ import annotations

import http.client
import random
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode, urlsplit

import orjson

from pushsvc.client.models import (
    Message,
    Point,
    Snapshot,
    StreamUpdate,
    history_dataframe,
    series_dataframe,
)
from pushsvc.client.sse_parser import EventStreamParser, SSEMessage

if TYPE_CHECKING:
    import pandas as pd

RETRYABLE = frozenset({429, 503})
"""A 503 means nothing was logged (or, `replicas_unconfirmed`, logged under the request's
Idempotency-Key), a 429 that this client is over a limit: both safe to retry."""
IDEMPOTENCY_KEY = "Idempotency-Key"
HISTORY_PAGE = 10_000  # the server's largest ?limit=


class ClientError(Exception):
    """The server answered with an error, or could not be reached. `status` is the HTTP status
    (None when there was no answer)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Unreachable(ClientError):
    """No answer: the server could not be reached, or the connection was lost before its
    answer arrived (the request may have been logged)."""


def new_idempotency_key() -> str:
    """A fresh key for one batch: a random UUID, as the IETF draft and Stripe suggest."""
    return str(uuid.uuid4())


@dataclass(frozen=True)
class Endpoint:
    """Where a pushsvc web process listens, e.g. `http://127.0.0.1:8000`, and the token to
    send (`Authorization: Bearer`), when the server wants one."""

    url: str
    token: str | None = None

    def _headers(self, **headers: str) -> dict[str, str]:
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

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

    def post_events(
        self, topic: str, events: list[dict[str, object]], *, idempotency_key: str | None = None
    ) -> int:
        """POST a batch; return how many were accepted. ClientError carries the server's
        error, Unreachable a lost connection."""
        return self.post_body(topic, orjson.dumps(events), idempotency_key=idempotency_key)

    def post_body(self, topic: str, body: bytes, *, idempotency_key: str | None = None) -> int:
        """POST a JSON body (an event or a batch), with `Idempotency-Key` when one is given;
        how many events the server accepted (by this request, or by the earlier one it
        replays)."""
        headers = {"Content-Type": "application/json"}
        if idempotency_key is not None:
            headers[IDEMPOTENCY_KEY] = idempotency_key
        answer = self._request(
            "POST",
            f"{self._base_path()}/topics/{quote(topic, safe='')}/events",
            202,
            body=body,
            headers=self._headers(**headers),
        )
        return int(orjson.loads(answer)["accepted"])

    def get(self, path: str, query: Sequence[tuple[str, str]] = ()) -> bytes:
        """GET a path under the server's URL; ClientError unless it answers 200."""
        target = f"{self._base_path()}{path}" + (f"?{urlencode(query)}" if query else "")
        return self._request("GET", target, 200, headers=self._headers(Accept="application/json"))

    def _request(
        self,
        method: str,
        target: str,
        expected: int,
        *,
        headers: dict[str, str],
        body: bytes | None = None,
    ) -> bytes:
        """One request on a fresh connection; its body, or ClientError (with the server's
        Retry-After as its cause) unless it answers `expected`."""
        conn = self._connection(timeout=30)
        try:
            conn.request(method, target, body=body, headers=headers)
            response = conn.getresponse()
            answer = response.read()
        except (OSError, http.client.HTTPException) as exc:
            # RemoteDisconnected, a closed connection before the answer, is both.
            raise Unreachable(f"cannot reach {self.url}: {exc!r}") from None
        finally:
            conn.close()
        if response.status != expected:
            raise ClientError(
                f"HTTP {response.status}: {answer.decode(errors='replace')}", response.status
            ) from RetryAfter.of(response)
        return answer

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
            headers = self._headers(Accept="text/event-stream")
            if last_event_id:
                headers["Last-Event-ID"] = last_event_id
            try:
                conn.request("GET", f"{self._base_path()}/stream?{query}", headers=headers)
                response = conn.getresponse()
                if response.status != 200:
                    raise ClientError(
                        f"HTTP {response.status}: {response.read().decode(errors='replace')}",
                        response.status,
                    ) from RetryAfter.of(response)
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


class RetryAfter(Exception):
    """The cause of a ClientError whose answer said how long to wait (`Retry-After`)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(seconds)
        self.seconds = seconds

    @classmethod
    def of(cls, response: http.client.HTTPResponse) -> RetryAfter | None:
        value = response.getheader("Retry-After")
        if value is None or not value.strip().isdigit():
            return None
        return cls(float(value))


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter: attempt n waits up to `base * 2**n`, at most
    `cap` seconds (longer when the server's Retry-After says so)."""

    retries: int = 5
    base: float = 0.2
    cap: float = 10.0

    def delay(self, attempt: int, error: ClientError) -> float:
        wait = random.uniform(0, min(self.cap, self.base * 2**attempt))
        hint = error.__cause__
        if isinstance(hint, RetryAfter):
            wait = max(wait, min(hint.seconds, self.cap))
        return wait


class Client:
    """pushsvc for Python programs. `token` goes as `Authorization: Bearer`.

    * `publish` sends every batch with a fresh `Idempotency-Key` and retries it with the same
      key, backing off, after a 503, a 429 (a limit) or a lost connection: the server logs a
      batch once however often it arrives within its idempotency window. Never anything
      else (a 4xx would be refused again).
    * `history` returns a DataFrame of a topic's recent updates.
    * `subscribe` yields typed messages and reconnects with Last-Event-ID.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        backoff: Backoff | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.endpoint = Endpoint(url, token)
        self.backoff = backoff or Backoff()
        self._sleep = sleep

    def publish(
        self, topic: str, events: Mapping[str, object] | Sequence[Mapping[str, object]]
    ) -> int:
        """POST one event or a batch (accepted whole or rejected whole); the number accepted."""
        batch = [dict(events)] if isinstance(events, Mapping) else [dict(e) for e in events]
        # One body and one key for every attempt: a repeat must be the same request.
        body = orjson.dumps(batch)
        key = new_idempotency_key()
        attempt = 0
        while True:
            try:
                return self.endpoint.post_body(topic, body, idempotency_key=key)
            except ClientError as exc:
                retryable = isinstance(exc, Unreachable) or exc.status in RETRYABLE
                if not retryable or attempt >= self.backoff.retries:
                    raise
                self._sleep(self.backoff.delay(attempt, exc))
                attempt += 1

    def history_page(
        self, topic: str, *, since: str | float | datetime | None = None, limit: int | None = None
    ) -> dict[str, Any]:
        """One answer of `GET /topics/{topic}/history` as parsed JSON."""
        query = []
        if since is not None:
            query.append(("since", _since(since)))
        if limit is not None:
            query.append(("limit", str(limit)))
        body = self.endpoint.get(f"/topics/{quote(topic, safe='')}/history", query)
        page: dict[str, Any] = orjson.loads(body)
        return page

    def history(
        self, topic: str, *, since: str | float | datetime | None = None, limit: int | None = None
    ) -> pd.DataFrame:
        """The topic's updates as a DataFrame, one row per update, oldest first (columns in
        `pushsvc.core.history_table`).

        Without `since`: the newest `limit` (the server's default: 1000). With `since` — an
        update id (exclusive), epoch seconds, an RFC 3339 string or an aware datetime
        (inclusive, on the updates' `ts`) — every update from there that the history holds,
        page by page, or the first `limit`. `frame.attrs` holds `resume_id` (the Last-Event-ID
        that continues this frame live with no gap and no duplicate) and `gap` (updates after
        `since` were lost).
        """
        first = self.history_page(topic, since=since, limit=limit)
        pages = [first]
        wanted = limit if limit is not None else float("inf")
        got = len(first["updates"])
        while since is not None and pages[-1]["more"] and got < wanted:
            size = HISTORY_PAGE if limit is None else min(HISTORY_PAGE, limit - got)
            page = self.history_page(topic, since=pages[-1]["resume_id"], limit=size)
            pages.append(page)
            got += len(page["updates"])
        updates = [u for page in pages for u in page["updates"]]
        frame = history_dataframe(updates, first["windows"], first["stats"])
        frame.attrs["resume_id"] = pages[-1]["resume_id"]
        frame.attrs["gap"] = first["gap"]
        return frame

    def series(
        self,
        topic: str,
        *,
        since: str | float | datetime | None = None,
        until: str | float | datetime | None = None,
        resolution: str = "auto",
        points: int | None = None,
        group: Mapping[str, str] | None = None,
    ) -> pd.DataFrame:
        """The topic's (or one group's) closed buckets as a DataFrame indexed by bucket start
        (UTC), one column per statistic. `resolution`: a tier the topic keeps ("1s", "1m",
        …) or "auto", which loads the range across tiers in one frame: the coarsest tier
        giving about `points / 2` points, the recent part from finer ones
        (`frame.attrs["segments"]` says which). `since`/`until`: epoch seconds, RFC 3339
        strings or aware datetimes (`until` exclusive); without them, all the tier keeps.
        `group`: every tag the topic groups by, e.g. {"station": "grill"}."""
        query = [("resolution", resolution)]
        if since is not None:
            query.append(("since", _since(since)))
        if until is not None:
            query.append(("until", _since(until)))
        if points is not None:
            query.append(("points", str(points)))
        query += [("group", f"{tag}:{value}") for tag, value in (group or {}).items()]
        answer = orjson.loads(self.endpoint.get(f"/topics/{quote(topic, safe='')}/series", query))
        frame = series_dataframe(answer["points"])
        frame.attrs["resolution"] = answer["resolution"]
        frame.attrs["segments"] = answer["segments"]
        frame.attrs["more"] = answer["more"]
        return frame

    def subscribe(
        self,
        selectors: Sequence[str],
        *,
        last_event_id: str | None = None,
        options: Mapping[str, str] | None = None,
    ) -> Iterator[Message]:
        """Snapshots and updates of these topics (names, `prefix.*`, `*`), forever: a lost
        connection or a 503/429 is retried with backoff, resuming with the last id seen (a
        `Snapshot` with `gap` says when the server could not replay). Other refusals raise
        ClientError."""
        attempt = 0
        while True:
            try:
                for message in self.endpoint.stream(
                    list(selectors), last_event_id=last_event_id, options=options, reconnect=False
                ):
                    attempt = 0
                    if message.id:
                        last_event_id = message.id
                    if message.event == "stats":
                        yield StreamUpdate.parse(message.data)
                    elif message.event == "snapshot":
                        yield Snapshot.parse(message.data, message.id)
                    elif message.event == "point":
                        yield Point.parse(message.data)
            except ClientError as exc:
                if exc.status is not None and exc.status not in RETRYABLE:
                    raise
                error = exc
            else:
                error = ClientError("the stream ended")
            self._sleep(self.backoff.delay(min(attempt, 8), error))
            attempt += 1


def batches(events: list[dict[str, object]], size: int) -> Iterator[list[dict[str, object]]]:
    """`events` in order, `size` at a time: one POST each (`pushsvc publish`, `pushsvc replay`)."""
    for start in range(0, len(events), size):
        yield events[start : start + size]


def _since(since: str | float | datetime) -> str:
    if isinstance(since, datetime):
        if since.tzinfo is None:
            raise ValueError("give `since` as an aware datetime (a naive one has no time zone)")
        return repr(since.timestamp())
    if isinstance(since, bool):
        raise TypeError("`since` is an id, a time string, epoch seconds or a datetime")
    return since if isinstance(since, str) else repr(float(since))
