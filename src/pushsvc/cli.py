"""The `pushsvc` command: serve, web, aggregate, and the publish / subscribe / replay tools.

Run it through `pushsvc.__main__:main`, which patches gevent first for the commands that serve.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from pushsvc import __version__
from pushsvc.config import Settings
from pushsvc.errors import ConfigError
from pushsvc.lists import comma_list

F = Callable[..., Any]


def settings_options(command: F) -> F:
    """One `--x` flag per setting; a flag wins over `PUSHSVC_X`."""
    for spec in reversed(Settings.specs()):
        default = spec.default or "unset"
        command = click.option(
            spec.flag, spec.name, default=None, help=f"[env {spec.variable}; default {default}]"
        )(command)
    return command


def _load(flags: dict[str, str | None]) -> Settings:
    try:
        return Settings.load(flags)
    except ConfigError as exc:
        click.echo(f"pushsvc: {exc}", err=True)
        sys.exit(2)


def _logging() -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@click.group()
@click.version_option(__version__, prog_name="pushsvc")
def main() -> None:
    """Rolling-window statistics per topic, streamed over Server-Sent Events."""


_REUSE_PORT = click.option("--reuse-port", is_flag=True, hidden=True)  # serve --workers' children


@main.command()
@settings_options
@_REUSE_PORT
def serve(reuse_port: bool, **flags: str | None) -> None:
    """Everything in one process: HTTP API, streams and the aggregator (embedded broker
    unless --redis-url is given). With --workers N or --data-dir: N web processes on one
    port and an aggregator, on a private redis-server unless --redis-url is given."""
    settings = _load(flags)
    _logging()
    if settings.workers > 1 or settings.data_dir is not None:
        if settings.data_dir is not None and settings.redis_url is not None:
            raise click.UsageError("--data-dir is for the private Redis: not with --redis-url")
        from pushsvc.supervisor import Supervisor

        given = {f"PUSHSVC_{k.upper()}": v for k, v in flags.items() if v is not None}
        sys.exit(Supervisor(settings, given).run())
    from pushsvc.server import serve_http

    serve_http(settings, role="serve", reuse_port=reuse_port)


@main.command()
@settings_options
@_REUSE_PORT
def web(reuse_port: bool, **flags: str | None) -> None:
    """HTTP API and streams only; needs --redis-url and a `pushsvc aggregate` process."""
    settings = _load(flags)
    if settings.redis_url is None:
        raise click.UsageError(
            "web needs --redis-url / PUSHSVC_REDIS_URL (use `serve` without Redis)"
        )
    _logging()
    from pushsvc.server import serve_http

    serve_http(settings, role="web", reuse_port=reuse_port)


@main.command()
@settings_options
def aggregate(**flags: str | None) -> None:
    """The aggregator alone, on Redis; run a second one as a hot standby."""
    settings = _load(flags)
    if settings.redis_url is None:
        raise click.UsageError("aggregate needs --redis-url / PUSHSVC_REDIS_URL")
    _logging()
    from pushsvc.server import aggregate as run

    run(settings)


_URL = click.option(
    "--url",
    envvar="PUSHSVC_URL",
    default="http://127.0.0.1:8000",
    show_default=True,
    help="pushsvc web address [env PUSHSVC_URL]",
)


def _tags(pairs: tuple[str, ...]) -> dict[str, str]:
    tags = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--tag")
        tags[key] = value
    return tags


@main.command()
@_URL
@click.argument("topic")
@click.argument("values", nargs=-1, type=float)
@click.option("--ts", help="event time: epoch seconds or RFC 3339 (default: when received)")
@click.option("--tag", "tags", multiple=True, help="KEY=VALUE, repeatable")
@click.option("--batch", default=1000, show_default=True, help="events per request (stdin)")
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
    topic: str,
    values: tuple[float, ...],
    ts: str | None,
    tags: tuple[str, ...],
    batch: int,
    redis_url: str | None,
    prefix: str,
) -> None:
    """Publish VALUES to TOPIC; with no VALUES, read NDJSON events from standard input."""
    import orjson

    from pushsvc.client import ClientError, Server
    from pushsvc.replay import batches

    if values:
        common: dict[str, object] = {}
        if ts is not None:
            common["ts"] = float(ts) if _is_number(ts) else ts
        if tags:
            common["tags"] = _tags(tags)
        events = [{"value": v, **common} for v in values]
    else:
        events = [orjson.loads(line) for line in sys.stdin.buffer if line.strip()]
    if redis_url is not None:
        import redis

        from pushsvc.redis_publisher import publish_to_redis
        from pushsvc.redis_url import check_redis_url

        try:
            check_redis_url(redis_url)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--redis-url") from None
        try:
            sent, unheard = publish_to_redis(redis_url, prefix, topic, list(batches(events, batch)))
        except redis.RedisError as exc:
            raise click.ClickException(f"Redis: {exc}") from None
        click.echo(f"published {sent} to Redis")
        if unheard:
            # Redis pub/sub keeps nothing for absent subscribers.
            raise click.ClickException(
                f"no bridge was subscribed for {unheard} of them: those events were lost "
                "(is a `pushsvc aggregate` running with this --prefix?)"
            )
        return
    try:
        accepted = sum(Server(url).post_events(topic, chunk) for chunk in batches(events, batch))
    except ClientError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"accepted {accepted}")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@main.command()
@_URL
@click.argument("selectors", nargs=-1, required=True)
@click.option("--last-event-id", help="resume after this update id")
@click.option("--windows", help="only these windows, e.g. 1m,5m")
@click.option("--stats", help="only these statistics, e.g. mean,p99")
@click.option("--max-hz", help="at most this many updates per second per topic")
@click.option("--count", type=int, help="stop after this many updates")
def subscribe(
    url: str,
    selectors: tuple[str, ...],
    last_event_id: str | None,
    windows: str | None,
    stats: str | None,
    max_hz: str | None,
    count: int | None,
) -> None:
    """Print the updates of SELECTORS (topics or prefix.* patterns), one JSON line each.

    Reconnects like a browser's EventSource, resuming with the last id it saw.
    """
    import orjson

    from pushsvc.client import ClientError, Server

    options = {k: v for k, v in (("windows", windows), ("stats", stats), ("max_hz", max_hz)) if v}
    seen = 0
    try:
        for message in Server(url).stream(
            list(selectors), last_event_id=last_event_id, options=options
        ):
            line = {"event": message.event, "id": message.id, "data": orjson.loads(message.data)}
            sys.stdout.buffer.write(orjson.dumps(line) + b"\n")
            sys.stdout.flush()
            if message.event == "stats":
                seen += 1
                if count is not None and seen >= count:
                    return
    except ClientError as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        pass


@main.command()
@_URL
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--topic", required=True, help="topic to publish to")
@click.option("--value-column", default="value", show_default=True)
@click.option("--ts-column", default="ts", show_default=True, help="used when present")
@click.option("--tag-columns", default="", help="comma-separated columns sent as tags")
@click.option("--batch", default=1000, show_default=True, help="events per request")
@click.option("--rate", default=0.0, help="events per second (0: as fast as accepted)")
def replay(
    url: str,
    path: Path,
    topic: str,
    value_column: str,
    ts_column: str,
    tag_columns: str,
    batch: int,
    rate: float,
) -> None:
    """Replay a CSV file as events on TOPIC, with a progress bar."""
    from pushsvc.client import ClientError, Server
    from pushsvc.replay import CsvError, read_events
    from pushsvc.replay import replay as run

    columns = list(comma_list(tag_columns))
    try:
        events = read_events(
            path, value_column=value_column, ts_column=ts_column, tag_columns=columns
        )
        sent = run(Server(url), topic, events, batch_size=batch, rate=rate)
    except (CsvError, ClientError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"replayed {sent} events to {topic}")
