"""The `pushsvc` command: serve, web, aggregate, the publish / subscribe / replay tools, and
the demo producer.

Run it through `pushsvc.__main__:main`, which patches gevent first for the commands that serve.
"""

from __future__ import annotations

import builtins
import logging
import math
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NoReturn, TypeVar

import click

from pushsvc import __version__
from pushsvc.config import GROUPS, RETIRED, Setting, Settings
from pushsvc.core.lists import comma_list
from pushsvc.demo.command import demo
from pushsvc.errors import CannotListen, ConfigError, DataDirInUse, RulesError, UnsafeRedis

if TYPE_CHECKING:
    from pushsvc.client import Published

F = Callable[..., Any]
T = TypeVar("T")


def settings_options(command: F) -> F:
    """One `--x` flag per setting; a flag wins over `PUSHSVC_X`. A retired setting's flag is
    kept, hidden, to say in one line what replaces it. Values stay text: Settings parses
    them, so a bad one is the same one line from a flag as from a variable; the metavar says
    what each takes. A true-or-false setting is a flag (`--token-query`, `--no-token-query`)."""
    for name in RETIRED:
        flag = "--" + name.replace("_", "-")
        command = click.option(flag, name, default=None, hidden=True)(command)
    for spec in reversed(Settings.specs()):
        default = spec.default or "unset"
        help_text = f"[env {spec.variable}; default {default}]"
        if _returns(spec, "bool"):
            flags = f"{spec.flag}/--no-{spec.flag[2:]}"
            option = click.option(
                flags, spec.name, default=None, callback=_flag_text, help=help_text
            )
        else:
            option = click.option(
                spec.flag, spec.name, default=None, metavar=_metavar(spec), help=help_text
            )
        command = option(command)
    return command


class SettingsCommand(click.Command):
    """A command taking the settings: `--help` lists them under their groups (`GROUPS`: the
    few a newcomer meets first, then the operators', then the attack bounds), the command's
    own options last."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        group_of = {spec.name: spec.group for spec in Settings.specs()}
        sections: dict[str, list[tuple[str, str]]] = {group: [] for group in (*GROUPS, "Options")}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is not None:
                sections[group_of.get(param.name or "", "Options")].append(record)
        for title, rows in sections.items():
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


# What a setting takes, where its name or its parser's type do not say it.
_METAVARS = {
    "host": "HOST",
    "port": "PORT",
    "redis_url": "URL",
    "alertmanager_url": "URL[,URL]",
    "prefix": "PREFIX",
    "windows": "DURATION[,...]",
    "rules": "PATH",
    "mercure": "off|on|anonymous",
    "series": "RES:KEEP[,...]",
    "data_dir": "PATH",
    "certfile": "PATH",
    "keyfile": "PATH",
    "jwt_key": "SECRET|@PATH",
    "jwt_previous_key": "SECRET|@PATH",
    "cors_origins": "ORIGIN[,...]",
    "anonymous": "SELECTOR[,...]",
    "publish_rate": "EVENTS/S",
    "metrics_port": "PORT",
    "jwt_audience": "AUDIENCE",
    "jwt_issuer": "ISSUER",
    "log_format": "[text|json]",
    "log_level": "LEVEL[,LOGGER=LEVEL...]",
    "outbox_dsn": "DSN",
    "outbox_table": "TABLE",
    "auth_url": "URL",
    "auth_cookies": "NAME[,...]",
}


def _metavar(spec: Setting) -> str:
    if spec.name in _METAVARS:
        return _METAVARS[spec.name]
    if spec.field.endswith("_us"):
        return "DURATION"
    if spec.is_size:
        return "BYTES"
    if _returns(spec, "int"):
        return "INTEGER"
    return "TEXT"


def _returns(spec: Setting, kind: str) -> bool:
    # The parsers' annotations are strings (`from __future__ import annotations`).
    returns = getattr(spec.parse, "__annotations__", {}).get("return")
    return returns in (kind, f"{kind} | None", getattr(builtins, kind))


def _flag_text(ctx: click.Context, param: click.Parameter, value: bool | None) -> str | None:
    """The flag as Settings reads it (and as `serve --workers` hands it to its children)."""
    return None if value is None else str(value).lower()


def _load(flags: dict[str, str | None], *, serving_http: bool = False) -> Settings:
    """The settings, or exit 2 with a one-line error. `serving_http`: also load the TLS pair
    now, before anything starts (with --workers, every web child would fail on it instead,
    and be restarted for ever)."""
    try:
        settings = Settings.load(flags)
        if serving_http:
            from pushsvc.http.tls import server_context

            server_context(settings)
        return settings
    except ConfigError as exc:
        click.echo(f"pushsvc: {exc}", err=True)
        sys.exit(1 if isinstance(exc, RulesError) else 2)


def _starting(run: Callable[[], T]) -> T:
    """Run a serving command; what stops it at start (an evicting Redis, a bad
    PROMETHEUS_MULTIPROC_DIR, an open-file limit with no room for streams) is one line and
    exit 1; an address or a data directory another server holds (or one it cannot listen
    on), one line and exit 2, as a bad flag."""
    try:
        return run()
    except (CannotListen, DataDirInUse) as exc:
        click.echo(f"pushsvc: {exc}", err=True)
        sys.exit(2)
    except (UnsafeRedis, ConfigError) as exc:
        click.echo(f"pushsvc: {exc}", err=True)
        sys.exit(1)


def _logging(settings: Settings) -> None:
    from pushsvc.ops.logs import configure

    configure(settings.log_format, settings.log_level)


@click.group()
@click.version_option(__version__, prog_name="pushsvc")
def main() -> None:
    """Rolling-window statistics per topic, streamed over Server-Sent Events."""


main.add_command(demo)  # pushsvc/demo/command.py: also `python -m pushsvc.demo`

# serve --workers' children: the listening socket it opened for each (pushsvc.ops.listeners).
_LISTEN_FD = click.option("--listen-fd", type=int, hidden=True)


@main.command(cls=SettingsCommand)
@settings_options
@_LISTEN_FD
def serve(listen_fd: int | None, **flags: str | None) -> None:
    """Everything in one process: HTTP API, streams and the aggregator (embedded broker
    unless --redis-url is given). With --workers N or --data-dir: N web processes on one
    port and an aggregator, on a private redis-server unless --redis-url is given."""
    settings = _load(flags, serving_http=True)
    _logging(settings)
    if settings.workers > 1 or settings.data_dir is not None:
        if settings.data_dir is not None and settings.redis_url is not None:
            raise click.UsageError("--data-dir is for the private Redis: not with --redis-url")
        from pushsvc.ops.supervisor import Supervisor

        given = {f"PUSHSVC_{k.upper()}": v for k, v in flags.items() if v is not None}
        sys.exit(_starting(Supervisor(settings, given).run))
    _serve_http(settings, "serve", listen_fd)


@main.command(cls=SettingsCommand)
@settings_options
@_LISTEN_FD
def web(listen_fd: int | None, **flags: str | None) -> None:
    """HTTP API and streams only; needs --redis-url and a `pushsvc aggregate` process."""
    settings = _load(flags, serving_http=True)
    if settings.redis_url is None:
        raise click.UsageError(
            "web needs --redis-url / PUSHSVC_REDIS_URL (use `serve` without Redis)"
        )
    _logging(settings)
    _serve_http(settings, "web", listen_fd)


def _serve_http(settings: Settings, role: Literal["serve", "web"], listen_fd: int | None) -> None:
    from pushsvc.server import serve_http

    _starting(lambda: serve_http(settings, role=role, listen_fd=listen_fd))


@main.command(cls=SettingsCommand)
@settings_options
def aggregate(**flags: str | None) -> None:
    """The aggregator alone, on Redis; run a second one as a hot standby."""
    settings = _load(flags)
    if settings.redis_url is None:
        raise click.UsageError("aggregate needs --redis-url / PUSHSVC_REDIS_URL")
    _logging(settings)
    from pushsvc.server import aggregate as run

    _starting(lambda: run(settings))


_URL = click.option(
    "--url",
    envvar="PUSHSVC_URL",
    default="http://127.0.0.1:8000",
    show_default=True,
    help="pushsvc web address [env PUSHSVC_URL]",
)


_TOKEN = click.option(
    "--token",
    envvar="PUSHSVC_TOKEN",
    help="a token from `pushsvc token`, sent as Authorization: Bearer [env PUSHSVC_TOKEN]",
)


_MAX_RETRIES = click.option(
    "--max-retries",
    type=click.IntRange(min=0),
    metavar="INTEGER",
    help="give up (exit 1) after this many failed connections in a row [default: retry for ever]",
)


class _Misuse(click.ClickException):
    """A usage error said in one line (`Error: …`), exit 2 as click's own: without the usage
    text and help hint above it, which bury what was wrong."""

    exit_code = 2


def _client_warnings(command: str, level: int = logging.WARNING) -> None:
    """The client library's warnings on standard error, one line each: a server it cannot
    reach is retried, and must not look like a topic where nothing happens. A request's
    retries are INFO to the library (no warning until they run out): a command that sends
    requests asks for `level=INFO`, so that each failed try is a line as a stream's is."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"pushsvc {command}: %(message)s"))
    client_log = logging.getLogger("pushsvc.client")
    client_log.handlers[:] = [handler]  # once, however often a command runs in one process
    client_log.setLevel(level)
    client_log.propagate = False


def _tags(pairs: tuple[str, ...]) -> dict[str, str]:
    tags = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--tag")
        tags[key] = value
    return tags


def _finite(
    ctx: click.Context, param: click.Parameter, values: tuple[float, ...]
) -> tuple[float, ...]:
    """NaN and infinities have no JSON form (they would be sent as null): refused here."""
    for value in values:
        if not math.isfinite(value):
            raise click.BadParameter(
                f"{value!r} is not a finite number; pushsvc takes finite numbers only"
            )
    return values


@main.command()
@_URL
@_TOKEN
@click.argument("topic", required=False)
@click.argument("values", nargs=-1, type=float, callback=_finite)
@click.option("--ts", help="event time: epoch seconds or RFC 3339 (default: when received)")
@click.option("--tag", "tags", multiple=True, help="KEY=VALUE, repeatable")
@click.option(
    "--type",
    "message_type",
    help="publish one message of this type (its SSE event name) instead of VALUES",
)
@click.option(
    "--data",
    "message_data",
    metavar="JSON",
    help="publish one message with this JSON data (type `message` unless --type)",
)
@click.option(
    "--batch", default=1000, show_default=True,
    help="events per request (stdin; without TOPIC, at most 100 a request by default)",
)  # fmt: skip
@click.option(
    "--redis-url",
    envvar="PUSHSVC_REDIS_URL",
    help="publish into Redis (PUBLISH {prefix}ingest:TOPIC) instead of over HTTP; no "
    "acknowledgement [env PUSHSVC_REDIS_URL]",
)
@click.option(
    "--prefix", envvar="PUSHSVC_PREFIX", default="pushsvc:", show_default=True,
    help="with --redis-url: the deployment's key prefix [env PUSHSVC_PREFIX]",
)  # fmt: skip
def publish(
    url: str,
    token: str | None,
    topic: str | None,
    values: tuple[float, ...],
    ts: str | None,
    tags: tuple[str, ...],
    message_type: str | None,
    message_data: str | None,
    batch: int,
    redis_url: str | None,
    prefix: str,
) -> None:
    """Publish VALUES to TOPIC; or one message (--type, --data); with neither, read NDJSON
    events from standard input. Without TOPIC, each line of standard input names its own
    topic (`{"topic": "u1", "type": "shipped", "data": {...}}`) and the lines go in batches
    over many topics (`POST /events`). Prints what the server accepted, and the events past
    their topic's grace, kept on its late stream; exits 1 if any were refused."""
    from pushsvc.client import Client, ClientError, batches
    from pushsvc.client.calls import check_sendable
    from pushsvc.client.published import summary

    if topic is None:
        if values or message_type is not None or message_data is not None or redis_url:
            raise _Misuse(
                "VALUES, --type, --data and --redis-url need a TOPIC; without one, standard "
                "input's NDJSON lines name their topics"
            )
        _publish_lines(url, token, _ndjson(sys.stdin.buffer), batch)
        return

    events = _events_to_publish(values, ts, tags, message_type, message_data)
    try:
        check_sendable(events)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    if redis_url is not None:
        _publish_to_redis(redis_url, prefix, topic, list(batches(events, batch)))
        return
    _client_warnings("publish", logging.INFO)
    try:
        # Each batch with its own Idempotency-Key, retried with it after a 503 or a lost
        # connection: logged once however often it is sent.
        with Client(url, token=token, batching=None) as client:
            answers = [client.publish(topic, chunk).result() for chunk in batches(events, batch)]
    except ClientError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(summary(answers))


def _events_to_publish(
    values: tuple[float, ...],
    ts: str | None,
    tags: tuple[str, ...],
    message_type: str | None,
    message_data: str | None,
) -> list[Any]:
    """`publish`'s events to one topic: one message (--type, --data), VALUES, or else the NDJSON
    lines of standard input; --ts and --tag on each built from the options."""
    common: dict[str, object] = {}
    if ts is not None:
        common["ts"] = float(ts) if _is_number(ts) else ts
    if tags:
        common["tags"] = _tags(tags)
    if message_type is not None or message_data is not None:
        if values:
            raise _Misuse("--type and --data publish one message: give no VALUES too")
        message = dict(common)
        if message_type is not None:
            message["type"] = message_type
        if message_data is not None:
            message["data"] = _data_option(message_data)
        return [message]
    if values:
        return [{"value": v, **common} for v in values]
    return _ndjson(sys.stdin.buffer)


def _publish_to_redis(redis_url: str, prefix: str, topic: str, chunks: list[list[Any]]) -> None:
    """`publish --redis-url`: the batches straight to the bridge's Redis pub/sub, and whether a
    bridge heard them (pub/sub keeps nothing for absent subscribers)."""
    import redis

    from pushsvc.broker.redis.publisher import publish_to_redis
    from pushsvc.broker.redis.url import check_redis_url

    try:
        check_redis_url(redis_url)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--redis-url") from None
    try:
        sent, unheard = publish_to_redis(redis_url, prefix, topic, chunks)
    except redis.RedisError as exc:
        raise click.ClickException(f"Redis: {exc}") from None
    click.echo(f"published {sent} to Redis")
    if unheard is None:
        # A Redis Cluster counts only the subscribers of the node it published on, and a
        # node that refused CLIENT LIST may hold the bridge: its answer proves nothing.
        click.echo(
            "whether a bridge heard them is not known: a node of this Redis Cluster "
            "refused CLIENT LIST, by which the bridge's node is found",
            err=True,
        )
    elif unheard:
        # Redis pub/sub keeps nothing for absent subscribers.
        raise click.ClickException(
            f"no bridge was subscribed for {unheard} of them: those events were lost "
            "(is a `pushsvc aggregate` running with this --prefix?)"
        )


def _publish_lines(url: str, token: str | None, lines: list[Any], batch: int) -> None:
    """Publish NDJSON items that name their topics, in cross-topic batches: the summary, one
    line per refused item on standard error, and exit 1 if any was refused."""
    from pushsvc.client import BatchSettings, Client, ClientError, PublishFuture
    from pushsvc.client.published import summary

    calls: list[tuple[int, str, PublishFuture]] = []
    for number, item in enumerate(lines, start=1):
        if not isinstance(item, dict) or not isinstance(item.get("topic"), str):
            raise click.ClickException(
                f"standard input item {number} names no topic: without a TOPIC argument, each "
                'line is an event with its "topic" ({"topic": "u1", "data": ...})'
            )
    settings = BatchSettings(max_events=max(1, min(batch, 100)), max_bytes=512 * 1024)
    refused = 0
    answers: list[Published] = []
    try:
        with Client(url, token=token, batching=settings) as client:
            for number, item in enumerate(lines, start=1):
                topic = item.pop("topic")
                try:
                    calls.append((number, topic, client.publish(topic, item)))
                except (TypeError, ValueError) as exc:
                    raise click.ClickException(f"standard input item {number}: {exc}") from None
            client.flush()
            for number, topic, future in calls:
                try:
                    answers.append(future.result())
                except ClientError as exc:
                    refused += 1
                    click.echo(f"item {number} (topic {topic}): {exc}", err=True)
    except ClientError as exc:
        raise click.ClickException(str(exc)) from None
    said = summary(answers)
    if refused:
        said += f", refused {refused}"
    click.echo(said)
    if refused:
        sys.exit(1)


def _data_option(text: str) -> Any:
    """`--data`'s JSON, or a one-line usage error saying where it is not JSON."""
    import orjson

    raw = text.encode()
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _Misuse(
            f"--data takes JSON ({exc.msg} at column {exc.colno}): {text[:80]!r}; quote a "
            """string as JSON: --data '"hello"'"""
        ) from None
    return _exactly(raw) if _LONG_DIGITS.search(raw) else document


# orjson reads an integer beyond 64 bits as the nearest double, silently; only a run of 19
# digits or more can be one. A message's data is read again exactly where it may hold one, so
# that such an integer is refused (`check_sendable`) rather than sent rounded, as the server
# refuses it; an event's value is read as before (a number, rounded as the server rounds it).
_LONG_DIGITS = re.compile(rb"[0-9]{19}")


def _exactly(text: bytes) -> Any:
    """JSON that orjson read, read again by the standard library: integers as written."""
    import json

    try:
        return json.loads(text)
    except RecursionError:  # deeper than data may nest: the server says so
        import orjson

        return orjson.loads(text)


def _ndjson(lines: Iterable[bytes]) -> list[Any]:
    """One event per line, blank lines skipped; a line that is no JSON is named by its number
    in the input (orjson's own "line 1" counts within the one line it was given)."""
    import orjson

    events = []
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text:
            continue
        try:
            event = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise click.ClickException(
                f"standard input line {number} is not JSON ({exc.msg} at column "
                f"{exc.colno}): {text.decode(errors='replace')[:80]!r}"
            ) from None
        if isinstance(event, dict) and "data" in event and _LONG_DIGITS.search(text):
            event["data"] = _exactly(text)["data"]
        events.append(event)
    return events


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@main.command()
@_URL
@_TOKEN
@click.argument("selectors", nargs=-1, required=True)
@click.option("--last-event-id", help="resume after this update id")
@click.option("--windows", help="only these windows, e.g. 1m,5m")
@click.option("--stats", help="only these statistics, e.g. mean,p99")
@click.option("--max-hz", type=float, help="at most this many updates per second per topic")
@click.option("--series", multiple=True, help="also print each closed bucket of this tier, e.g. 1m")
@click.option("--count", type=int, help="stop after this many updates (or messages)")
@click.option(
    "--messages",
    "messages_only",
    is_flag=True,
    help='print the messages published to SELECTORS, one JSON line each: {"id", "type", "data"}',
)
@click.option(
    "--replay",
    type=click.IntRange(1, 1000),
    metavar="N",
    help="with --messages: start with the last N messages of the topics",
)
@_MAX_RETRIES
def subscribe(
    url: str,
    token: str | None,
    selectors: tuple[str, ...],
    last_event_id: str | None,
    windows: str | None,
    stats: str | None,
    max_hz: float | None,
    series: tuple[str, ...],
    count: int | None,
    messages_only: bool,
    replay: int | None,
    max_retries: int | None,
) -> None:
    """Print the updates of SELECTORS (topics or prefix.* patterns), one JSON line each:
    {"event", "id", "data"}. With --messages, the messages published to them instead, as
    published: {"id", "type", "data"}, and where the server could not resume, a line of type
    "gap" whose data names the topics that may have lost messages.

    Reconnects like a browser's EventSource, resuming with the last id it saw; each failed
    connection is one line on standard error.
    """
    import orjson

    from pushsvc.client import Client, ClientError, StreamOptions
    from pushsvc.core.sse import escape_line_ends

    _client_warnings("subscribe")

    if messages_only:
        for given, flag in (
            (windows, "--windows"),
            (stats, "--stats"),
            (max_hz, "--max-hz"),
            (series or None, "--series"),
        ):
            if given is not None:
                raise _Misuse(f"{flag} is for updates: not with --messages")
        _print_messages(url, token, list(selectors), last_event_id, replay, count, max_retries)
        return
    if replay is not None:
        raise _Misuse("--replay is for --messages")
    options = StreamOptions(
        windows=comma_list(windows) if windows else None,
        stats=comma_list(stats) if stats else None,
        series=[s for item in series for s in comma_list(item)] or None,
        max_hz=max_hz,
    )
    seen = 0
    try:
        with Client(url, token=token) as client:
            for message in client.raw_stream(
                list(selectors),
                last_event_id=last_event_id,
                options=options,
                max_retries=max_retries,
            ):
                line = {"event": message.event, "id": message.id, "data": message.json()}
                # JSON lines a reader may split with str.splitlines: escaped as the stream is.
                sys.stdout.buffer.write(escape_line_ends(orjson.dumps(line)) + b"\n")
                sys.stdout.flush()
                if message.event == "stats":
                    seen += 1
                    if count is not None and seen >= count:
                        return
    except ClientError as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        pass


def _print_messages(
    url: str,
    token: str | None,
    selectors: list[str],
    last_event_id: str | None,
    replay: int | None,
    count: int | None,
    max_retries: int | None,
) -> None:
    """`subscribe --messages`: each message as a JSON line {"id", "type", "data"}, a gap as
    one of type "gap" (a type no message may have); stops after `count` messages."""
    import orjson

    from pushsvc.client import Client, ClientError, Gap
    from pushsvc.core.sse import escape_line_ends

    seen = 0
    try:
        with (
            Client(url, token=token) as client,
            client.messages(
                selectors, last_event_id=last_event_id, replay=replay, max_retries=max_retries
            ) as stream,
        ):
            for item in stream:
                if isinstance(item, Gap):
                    line = {"id": item.id, "type": "gap", "data": {"topics": list(item.topics)}}
                else:
                    line = {"id": item.id, "type": item.type, "data": item.data}
                # JSON lines a reader may split with str.splitlines: escaped as the stream is.
                sys.stdout.buffer.write(escape_line_ends(orjson.dumps(line)) + b"\n")
                sys.stdout.flush()
                if not isinstance(item, Gap):
                    seen += 1
                    if count is not None and seen >= count:
                        return
    except ClientError as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        pass


@main.command()
@_URL
@_TOKEN
@click.argument("topic")
def delete(url: str, token: str | None, topic: str) -> None:
    """Delete TOPIC: its windows, history, series, groups, alerts and clock, so that its next
    event starts it afresh (with auth on, the token needs the publish scope on it). Exits 1
    when the server keeps no such topic."""
    from pushsvc.client import Client, ClientError

    _client_warnings("delete", logging.INFO)
    try:
        with Client(url, token=token) as client:
            deleted = client.delete_topic(topic)
    except ClientError as exc:
        raise click.ClickException(str(exc)) from None
    if not deleted:
        raise click.ClickException(f"no topic {topic!r} (never posted to, or deleted already)")
    click.echo(f"deleted {topic}")


@main.command()
@_URL
@_TOKEN
@click.option("--once", is_flag=True, help="print the active instances and exit")
@_MAX_RETRIES
def alerts(url: str, token: str | None, once: bool, max_retries: int | None) -> None:
    """Print the alert instances pending or firing now, then follow every change, one JSON
    line each: {"event": "active" | "alert", "id", "data"}.

    The stream of `_alerts` is opened first, so no change falls between the two; it
    reconnects like a browser's EventSource, resuming with the last id it saw.
    """
    import orjson

    from pushsvc.client import Client, ClientError
    from pushsvc.core.sse import escape_line_ends

    _client_warnings("alerts")

    def emit(event: str, message_id: str | None, data: object) -> None:
        line = {"event": event, "id": message_id, "data": data}
        sys.stdout.buffer.write(escape_line_ends(orjson.dumps(line)) + b"\n")
        sys.stdout.flush()

    try:
        with Client(url, token=token) as client:
            for message in client.raw_stream("_alerts", max_retries=max_retries):
                if message.event == "snapshot":
                    # Subscribed: what is active now, then every change from here on.
                    for active in client.alerts():
                        emit("active", None, active)
                    if once:
                        return
                elif message.event == "alert":
                    emit("alert", message.id, message.json())
    except ClientError as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        pass


@main.command()
@_URL
@_TOKEN
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--topic", required=True, help="topic to publish to")
@click.option("--value-column", default="value", show_default=True)
@click.option("--ts-column", default="ts", show_default=True, help="used when present")
@click.option("--tag-columns", default="", help="comma-separated columns sent as tags")
@click.option("--batch", default=1000, show_default=True, help="events per request")
@click.option("--rate", default=0.0, help="events per second (0: as fast as accepted)")
def replay(
    url: str,
    token: str | None,
    path: Path,
    topic: str,
    value_column: str,
    ts_column: str,
    tag_columns: str,
    batch: int,
    rate: float,
) -> None:
    """Replay a CSV file as events on TOPIC, with a progress bar (needs the tools extra)."""
    from pushsvc.client import Client, ClientError
    from pushsvc.extras import MissingExtra, require

    try:
        require("pushsvc replay", "pandas", "numpy", "tqdm")
    except MissingExtra as exc:
        raise click.ClickException(str(exc)) from None
    from pushsvc.client.csv_replay import CsvError, read_events
    from pushsvc.client.csv_replay import replay as run

    columns = list(comma_list(tag_columns))
    _client_warnings("replay", logging.INFO)
    try:
        events = read_events(
            path, value_column=value_column, ts_column=ts_column, tag_columns=columns
        )
        with Client(url, token=token) as client:
            sent = run(client, topic, events, batch_size=batch, rate=rate)
    except (CsvError, ClientError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"replayed {sent} events to {topic}")


@main.command()
@click.option("--publish", "publish_", multiple=True, help="selectors it may publish to (a, b.*)")
@click.option("--subscribe", "subscribe_", multiple=True, help="selectors it may read")
@click.option(
    "--presence",
    "presence_",
    multiple=True,
    help="selectors whose watchers' subjects it may be told (with --presence-subs on)",
)
@click.option("--ttl", default="1h", show_default=True, help="how long it is valid (30m, 1h, 7d)")
@click.option("--sub", "subject", help="its subject: who holds it (publish rates are per subject)")
@click.option("--jwt-key", envvar="PUSHSVC_JWT_KEY", help="the HS256 secret [env PUSHSVC_JWT_KEY]")
@click.option(
    "--private-key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="sign with this PEM private key instead (RS256/ES256, by its type)",
)
@click.option("--audience", envvar="PUSHSVC_JWT_AUDIENCE", help="[env PUSHSVC_JWT_AUDIENCE]")
@click.option("--issuer", envvar="PUSHSVC_JWT_ISSUER", help="[env PUSHSVC_JWT_ISSUER]")
def token(
    publish_: tuple[str, ...],
    subscribe_: tuple[str, ...],
    presence_: tuple[str, ...],
    ttl: str,
    subject: str | None,
    jwt_key: str | None,
    private_key: Path | None,
    audience: str | None,
    issuer: str | None,
) -> None:
    """Print a token granting --publish and --subscribe selectors for --ttl."""
    from pushsvc.core.durations import parse_duration_us
    from pushsvc.errors import InvalidTopic
    from pushsvc.security.tokens import load_key, load_signing_key, mint

    try:
        if private_key is not None:
            key, algorithm = load_signing_key(private_key)
        elif jwt_key:
            loaded = load_key(jwt_key)
            if not loaded.can_mint:
                raise ValueError(
                    "PUSHSVC_JWT_KEY is a public key, which verifies but cannot sign: "
                    "give --private-key with its private half"
                )
            key, algorithm = loaded.verify_key, loaded.algorithm
        else:
            raise ValueError("give --jwt-key (or PUSHSVC_JWT_KEY) or --private-key")
        ttl_us = parse_duration_us(ttl)
        if ttl_us < 1_000_000 or ttl_us % 1_000_000:
            # `exp` is whole seconds; under one a token may expire before it is used.
            raise ValueError(f"--ttl takes whole seconds, at least 1s (30m, 1h, 7d); got {ttl!r}")
        ttl_s = ttl_us // 1_000_000
        minted = mint(
            key,
            algorithm,
            publish=[s for item in publish_ for s in comma_list(item)],
            subscribe=[s for item in subscribe_ for s in comma_list(item)],
            presence=[s for item in presence_ for s in comma_list(item)],
            ttl_s=ttl_s,
            subject=subject,
            audience=audience,
            issuer=issuer,
        )
    except ValueError as exc:
        _refuse_token(str(exc))
    except InvalidTopic as exc:
        _refuse_token(exc.message)
    if not publish_ and not subscribe_:
        # Not refused: a token that only names its subject has uses (--anonymous grants
        # the rest); but a forgotten --subscribe would otherwise show only as a 403 later.
        click.echo(
            "pushsvc token: warning: no --publish and no --subscribe: this token grants no topic",
            err=True,
        )
    click.echo(minted)


def _refuse_token(message: str) -> NoReturn:
    click.echo(f"pushsvc token: {message}", err=True)
    sys.exit(2)
