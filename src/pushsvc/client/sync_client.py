"""`Client`: pushsvc for blocking Python programs, on httpx. `AsyncClient` (async_client.py) has
the same methods for asyncio; both run the same plans (calls.py) and stream cursor
(stream.py)."""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
from httpx_sse import SSEError, connect_sse

from pushsvc.client import calls
from pushsvc.client.batching import BatchSettings
from pushsvc.client.calls import UNSET, Call, GroupChoice, Plan, Publishable, Time
from pushsvc.client.errors import ApiError, ClientError, Unreachable
from pushsvc.client.live_frames import DEFAULT_MAX_ROWS, LiveFrame, interval_seconds
from pushsvc.client.message_streams import MessageStream
from pushsvc.client.models import StreamMessage, typed_message
from pushsvc.client.published import PublishFuture
from pushsvc.client.retry import Backoff, retrying
from pushsvc.client.session import Session
from pushsvc.client.stream import MessageOptions, RawMessage, StreamCursor, StreamOptions
from pushsvc.client.sync_batcher import Batcher

if TYPE_CHECKING:
    import pandas as pd

T = TypeVar("T")


class Client:
    """pushsvc for Python programs (one per server; safe to share between threads).

        with Client("http://127.0.0.1:8000", token=None) as client:
            client.publish("orders", [{"value": 12.5}])
            client.publish("orders", data={"order": 4711}, type="shipped")  # a message
            frame = client.history("orders", since="2025-11-21T04:40:00Z")  # pandas
            for message in client.subscribe("orders", last_event_id=frame.attrs["resume_id"]):
                ...  # Snapshot, StreamUpdate, Point or AlertChange
            for message in client.messages("orders"):
                ...  # Message(id, type, data) as published, or a Gap

    * `publish` sends each batch with a fresh `Idempotency-Key` and retries it with the same
      key, backing off, after a lost connection, a 503 or a 429 (after its Retry-After): the
      server logs it once however often it arrives, for up to 30 s (`Backoff.give_up_after`;
      `backoff=Backoff(give_up_after=…)` to change it), then raises the last error. Other
      errors raise `ApiError` at once.
    * Reads (`history`, `series`, `stats`, `topics`, `rules`, `alerts`) retry the same way.
    * `subscribe` yields typed messages forever, reconnecting like a browser's EventSource:
      with the last id it saw (`Last-Event-ID`), after the server's `retry:`.
    * `messages` yields the application's messages as published, reconnecting alike.
    * `frames` yields a growing DataFrame of a topic's updates, every `every`.

    `http` is an httpx.Client of your own (proxies, TLS, HTTP/2, event hooks); by default one
    is made with `timeout` and httpx's reading of the environment (`HTTPS_PROXY`,
    `SSL_CERT_FILE`, …), and closed by `close()`.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        backoff: Backoff | None = None,
        timeout: float = 30.0,
        stream_timeout: float = 60.0,
        http: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
        batching: BatchSettings | None = BatchSettings(),  # noqa: B008 (frozen)
    ) -> None:
        self.session = Session(url, token, timeout=timeout, stream_timeout=stream_timeout)
        self.backoff = backoff or Backoff()
        self._own_http = http is None
        self._http = http if http is not None else httpx.Client(timeout=self.session.timeout)
        self._sleep = sleep
        self._readers: set[_Reader] = set()
        self._batcher = (
            None
            if batching is None
            else Batcher(self._run_now, batching, backoff=self.backoff, sleep=sleep)
        )

    def flush(self, timeout: float | None = None) -> bool:
        """Send every `publish` call held for its batch and wait for the answers; False if
        `timeout` (seconds) passed first."""
        return True if self._batcher is None else self._batcher.flush(timeout)

    def close(self) -> None:
        """Sends what `publish` holds and waits for its answers, ends the readers of
        `frames()` still running, then the HTTP client (if made here)."""
        if self._batcher is not None:
            self._batcher.close()
        for reader in list(self._readers):
            reader.stop()
        if self._own_http:
            self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    # Requests ------------------------------------------------------------------------------

    def publish(
        self,
        topic: str,
        events: Publishable | None = None,
        *,
        data: object = UNSET,
        type: str | None = None,  # the message's type, as Flask-SSE names it
        backoff: Backoff | None = None,
    ) -> PublishFuture:
        """Publish one event or a batch to `topic` (a topic's events of one call are logged
        whole or refused whole). An event is a mapping (`{"value": 12.5, "ts": …, "tags":
        {…}}`, or a message `{"type": "shipped", "data": {…}}`, with or without a value) or a
        bare number, its value; anything else is a TypeError. Or one message: `publish(topic,
        data={…}, type="shipped")` (any JSON `data`; `type` its SSE event name, `message` by
        default).

        Returns at once a `PublishFuture` of the call's `Published` (an int: the events
        accepted onto the topic; `.late`: those past its grace, on `<topic>.late`). The call
        waits with others for a few milliseconds (`batching`), then all go in one request;
        `result()` (or using the future as the number it will be) waits for the answer and
        raises this call's error (`ApiError`, `Unreachable`). With `batching=None` on the
        client, or a `backoff` for this call, it is sent alone, now, and an error raised
        here."""
        publishable = calls.publishable(events, data, type)
        if self._batcher is None or backoff is not None:
            future = PublishFuture()
            future.set_result(self._run(calls.publish(topic, publishable), backoff))
            return future
        return self._batcher.add(topic, publishable)

    def delete_topic(self, topic: str) -> bool:
        """Delete the topic: its windows, history, series, groups, alerts and clock, so that
        its next event starts it afresh (needs the publish scope on it). False when the server
        keeps no such topic — also when an attempt whose answer was lost deleted it and the
        retry found it gone: either way it is gone."""
        try:
            self._run(calls.delete_topic(topic))
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def history(
        self, topic: str, *, since: Time | None = None, limit: int | None = None
    ) -> pd.DataFrame:
        """The topic's updates as a DataFrame, one row per update, oldest first (columns in
        `pushsvc.core.history_table`; needs the tools extra).

        Without `since`: the newest `limit` (the server's default: 1000). With `since` — an
        update id (exclusive), or a time (inclusive, on the updates' `ts`) — every update from
        there that the history holds, page by page, or the first `limit`. `frame.attrs` holds
        `resume_id` (the Last-Event-ID that continues this frame live with no gap and no
        duplicate) and `gap` (updates after `since` were lost)."""
        return self._run(calls.history(topic, since=since, limit=limit))

    def history_page(
        self, topic: str, *, since: Time | None = None, limit: int | None = None
    ) -> dict[str, Any]:
        """One answer of `GET /topics/{topic}/history`, parsed."""
        return self._run(calls.history_page(topic, since=since, limit=limit))

    def series(
        self,
        topic: str,
        *,
        since: Time | None = None,
        until: Time | None = None,
        resolution: str = "auto",
        points: int | None = None,
        group: GroupChoice | None = None,
    ) -> pd.DataFrame:
        """The topic's (or one group's) closed buckets as a DataFrame indexed by bucket start
        (UTC), one column per statistic (needs the tools extra). `resolution`: a tier the topic
        keeps ("1s", "1m", …) or "auto", which loads the range across tiers in one frame: the
        coarsest tier giving about `points / 2` points, the recent part from finer ones
        (`frame.attrs["segments"]` says which). `until` is exclusive; without `since` and
        `until`, all the tier keeps. `group`: every tag the topic groups by, as `{"station":
        "grill"}` or as the HTTP API takes it, `"station:grill"`."""
        return self._run(
            calls.series(
                topic,
                since=since,
                until=until,
                resolution=resolution,
                points=points,
                group=group,
            )
        )

    def forecast(self, topic: str, *, group: GroupChoice | None = None) -> pd.DataFrame:
        """The topic's (or one group's) latest forecast (its rule's `forecast`) as a DataFrame
        indexed by each predicted bucket's start (UTC): `mean`, `lo80`, `hi80`, `lo95`,
        `hi95`; `frame.attrs` has `model`, `stat`, `resolution`, `from`, and `clock` and
        `pending`, how current it is (needs the tools extra). `ApiError` (404, `not_found`)
        where the rule forecasts nothing or none is kept yet."""
        return self._run(calls.forecast(topic, group=group))

    def stats(self, topic: str, *, group: GroupChoice | None = None) -> dict[str, Any]:
        """The topic's (or a group's) latest snapshot: `{"topic", "id", "ts", "windows", …}`."""
        path = calls.topic_path(topic, "stats")
        return self._run(calls.get_json(path, calls.group_params(group)))

    def topics(self) -> list[dict[str, Any]]:
        """The topics this client may read, with their last update time and subscribers (every
        page of them)."""
        return self._run(calls.topics())

    def rules(self) -> dict[str, Any]:
        """The server's effective analytics and alert rules, with their digest."""
        return self._run(calls.get_json("rules"))

    def alerts(self) -> list[dict[str, Any]]:
        """The alert instances pending or firing now (of the topics this client may read)."""
        return self._run(calls.alerts())

    def _run(self, plan: Plan[T], backoff: Backoff | None = None) -> T:
        """Run `plan` once what `publish` holds is sent: a client's requests reach the server
        in the order they were made (a read after a publish finds what it published)."""
        if self._batcher is not None:
            self._batcher.flush()
        return self._run_now(plan, backoff)

    def _run_now(self, plan: Plan[T], backoff: Backoff | None = None) -> T:
        send = retrying(backoff or self.backoff, self._sleep)
        try:
            call = next(plan)
            while True:
                call = plan.send(send(self._send, call))
        except StopIteration as done:
            result: T = done.value
            return result

    def _send(self, call: Call) -> httpx.Response:
        try:
            response = self._http.request(
                call.method,
                self.session.url(call.path),
                params=tuple(call.params),
                headers=self.session.headers(call.headers),
                content=call.content,
            )
        except httpx.TransportError as exc:
            raise Unreachable(self.session.base, exc) from None
        if not call.answered(response.status_code):
            raise ApiError.of(response)
        return response

    # Streams -------------------------------------------------------------------------------

    def subscribe(
        self,
        topics: str | Sequence[str],
        *,
        last_event_id: str | None = None,
        windows: Sequence[str] | None = None,
        stats: Sequence[str] | None = None,
        group: GroupChoice | None = None,
        series: Sequence[str] | None = None,
        max_hz: float | None = None,
        precision: int | None = None,
        max_retries: int | None = None,
    ) -> Iterator[StreamMessage]:
        """Snapshots, updates, points (`series=["1m"]`) and alert changes (of `_alerts`) of
        these topics (names, `prefix.*`, `*`), forever: a lost connection or a 503/429 is
        retried, resuming after the last id seen (a `Snapshot` with `gap` says when the server
        could not replay what was missed), each failure logged as a warning on the
        `pushsvc.client` logger ("cannot reach …; retrying in N s"). With `max_retries`, that
        many failed connections in a row are retried, then the last error is raised (None:
        for ever, as a browser's EventSource does). Other refusals raise ApiError."""
        options = StreamOptions(windows, stats, group, series, max_hz, precision)
        for raw in self.raw_stream(
            topics, last_event_id=last_event_id, options=options, max_retries=max_retries
        ):
            message = typed_message(raw.event, raw.id, raw.data)
            if message is not None:
                yield message

    def raw_stream(
        self,
        topics: str | Sequence[str],
        *,
        last_event_id: str | None = None,
        options: StreamOptions | None = None,
        max_retries: int | None = None,
    ) -> Iterator[RawMessage]:
        """The statistics stream's messages as the server sends them (event name, id, JSON
        data), with `subscribe`'s reconnection and `max_retries`: for tools that pass them on."""
        cursor = StreamCursor(
            topics, last_event_id=last_event_id, options=options or StreamOptions(),
            backoff=self.backoff, max_retries=max_retries,
        )  # fmt: skip
        for message in self._stream(cursor):
            if message is not None:
                yield message

    def messages(
        self,
        topics: str | Sequence[str],
        *,
        last_event_id: str | None = None,
        replay: int | None = None,
        max_retries: int | None = None,
    ) -> MessageStream:
        """The application's messages of these topics (names, `prefix.*`, `*`), each a
        `Message(id, type, data)` as published (`data` parsed from JSON), for ever: from
        now on, or after `last_event_id` (exactly what followed it), or from the last `replay`
        messages of its topics. Reconnects as `subscribe` does, resuming after the last id
        it saw; where the server cannot resume (its history no longer holds what followed the
        id), a `Gap(id, topics)` says so, then live. `stream.last_event_id` is the id to
        resume from, in this program or after a restart:

            stream = client.messages("orders", last_event_id=saved)
            for message in stream:
                handle(message)
                saved = stream.last_event_id   # keep it: resumes exactly after `message`
        """
        cursor = StreamCursor(
            topics, last_event_id=last_event_id, options=MessageOptions(replay),
            backoff=self.backoff, max_retries=max_retries,
        )  # fmt: skip
        return MessageStream(cursor, self._stream(cursor))

    def _stream(
        self, cursor: StreamCursor, reader: _Reader | None = None
    ) -> Generator[RawMessage | None, None, None]:
        """Every message, and None for each heartbeat (so that a reader can stop between).
        With `reader`: its responses, so that `reader.stop()` ends a read in progress; a
        stopped reader's connection error is its end, not a failure to retry."""
        self.flush()  # what this client published before is in what the stream replays
        while reader is None or not reader.stopped.is_set():
            error: ClientError | None = None
            try:
                with connect_sse(
                    self._http,
                    "GET",
                    self.session.url(cursor.path),
                    params=tuple(cursor.params),
                    headers=self.session.headers(cursor.headers()),
                    timeout=self.session.stream_timeout,
                ) as source:
                    if reader is not None:
                        reader.reading(source.response)
                    if source.response.status_code != 200:
                        source.response.read()
                        raise ApiError.of(source.response)
                    for sse in source.iter_sse():
                        yield cursor.receive(sse)
            except httpx.TransportError as exc:
                if reader is not None and reader.stopped.is_set():
                    return
                error = Unreachable(self.session.base, exc)
            except SSEError as exc:  # a 200 that is no event stream: a proxy's page
                error = Unreachable(self.session.base, httpx.RemoteProtocolError(str(exc)))
            except ApiError as exc:
                error = exc
            self._pause(cursor.delay_after(error), reader)

    def _pause(self, seconds: float, reader: _Reader | None) -> None:
        """Wait before connecting again. A frames reader's wait ends as it is stopped: the
        server's `retry:` may be long, and the frames' consumer has closed them meanwhile (a
        `sleep` of the caller's own is called as given)."""
        if reader is not None and self._sleep is time.sleep:
            reader.stopped.wait(seconds)
        else:
            self._sleep(seconds)

    def frames(
        self,
        topic: str,
        *,
        every: str | float = "1s",
        since: Time | None = None,
        max_rows: int = DEFAULT_MAX_ROWS,
        forecast: str | None = None,
    ) -> Iterator[pd.DataFrame]:
        """A growing DataFrame of the topic's updates (`history()`'s columns): first its
        history (from `since`, else the newest the server keeps), then, every `every` that
        brought updates, the frame with them appended — no gap and no duplicate between the
        two. At most `max_rows` rows (the oldest go). Needs the tools extra.

            for frame in client.frames("orders", every="1s"):
                frame.plot(x="time", y="1m_mean")   # in a notebook: redraw

        `forecast`: a tier the topic's rule forecasts ("1m"): each frame's
        `attrs["forecast"]` is then its latest forecast (`forecast()`'s DataFrame; None until
        one is made), the stream bringing each new one as its bucket closes.
        """
        interval = interval_seconds(every)
        updates, first, last = self._run(calls.history_updates(topic, since=since))
        latest = None
        if forecast is not None:
            try:
                latest = self.forecast(topic)
            except ApiError as exc:
                if exc.status != 404:
                    raise
        live = LiveFrame(
            topic, updates, first, last["resume_id"], max_rows=max_rows, forecast=latest,
            forecasts=forecast is not None,
        )  # fmt: skip
        options = StreamOptions(forecast=[forecast] if forecast is not None else None)
        yield live.frame
        inbox: queue.SimpleQueue[RawMessage | BaseException] = queue.SimpleQueue()
        reader = _Reader()
        self._readers.add(reader)
        thread = threading.Thread(
            target=self._pump,
            args=(topic, last["resume_id"], inbox, reader, options),
            name=f"pushsvc-frames-{topic}",
            daemon=True,
        )
        thread.start()
        try:
            due = time.monotonic() + interval
            while True:
                left = due - time.monotonic()
                if left > 0:  # until the frame is due, or sooner a message
                    try:
                        item = inbox.get(timeout=left)
                    except queue.Empty:
                        pass
                    else:
                        if isinstance(item, BaseException):
                            raise item
                        live.add(item)
                        continue
                due = time.monotonic() + interval
                frame = live.flush()
                if frame is not None:
                    yield frame
        finally:
            reader.stop()
            self._readers.discard(reader)

    def _pump(
        self,
        topic: str,
        resume_id: str,
        inbox: queue.SimpleQueue[RawMessage | BaseException],
        reader: _Reader,
        options: StreamOptions,
    ) -> None:
        cursor = StreamCursor(topic, last_event_id=resume_id, options=options, backoff=self.backoff)
        stream = self._stream(cursor, reader)
        try:
            for message in stream:
                if reader.stopped.is_set():
                    return
                if message is not None:
                    inbox.put(message)
        except BaseException as exc:  # handed to the reader of the frames, which raises it
            inbox.put(exc)
        finally:
            stream.close()


class _Reader:
    """The thread reading a `frames()` stream, as its consumer stops it: at once, not at the
    next message or heartbeat (which may be an idle tick away), and without the warnings and
    retries of a lost connection, which ending its read from here looks like to it."""

    def __init__(self) -> None:
        self.stopped = threading.Event()
        self._lock = threading.Lock()
        self._response: httpx.Response | None = None

    def reading(self, response: httpx.Response) -> None:
        with self._lock:
            self._response = response
        if self.stopped.is_set():  # stopped while it connected
            _shut(response)

    def stop(self) -> None:
        self.stopped.set()
        with self._lock:
            response = self._response
        if response is not None:
            _shut(response)


def _shut(response: httpx.Response) -> None:
    """End the reads of `response`'s connection, a blocked one too. Closing the response from
    another thread would not wake a `recv` already waiting; a shutdown of its socket does
    (the reader then sees the body end early, and closes the response itself)."""
    stream = response.extensions.get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):  # closed already
            sock.shutdown(socket.SHUT_RDWR)
