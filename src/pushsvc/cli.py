"""The `pushsvc` command: serve, web, aggregate."""

from __future__ import annotations

# gevent must patch the standard library before anything else imports it.
from gevent import monkey

monkey.patch_all()

import logging
import sys
from collections.abc import Callable
from dataclasses import fields
from typing import Any

import click

from pushsvc import __version__
from pushsvc.config import Settings
from pushsvc.errors import ConfigError

F = Callable[..., Any]


def settings_options(command: F) -> F:
    """One `--x` flag per Settings field; a flag wins over `PUSHSVC_X`."""
    for spec in reversed(fields(Settings)):
        flag = "--" + spec.name.replace("_", "-")
        variable = f"PUSHSVC_{spec.name.upper()}"
        default = spec.metadata["default"] or "unset"
        command = click.option(
            flag, spec.name, default=None, help=f"[env {variable}; default {default}]"
        )(command)
    return command


def _load(flags: dict[str, str | None]) -> Settings:
    try:
        return Settings.load(flags)
    except ConfigError as exc:
        click.echo(f"pushsvc: {exc.message}", err=True)
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


@main.command()
@settings_options
def serve(**flags: str | None) -> None:
    """Everything in one process: HTTP API, streams and the aggregator (embedded broker
    unless --redis-url is given)."""
    settings = _load(flags)
    _logging()
    from pushsvc.server import serve_http

    serve_http(settings, role="serve")


@main.command()
@settings_options
def web(**flags: str | None) -> None:
    """HTTP API and streams only; needs --redis-url and a `pushsvc aggregate` process."""
    settings = _load(flags)
    if settings.redis_url is None:
        raise click.UsageError(
            "web needs --redis-url / PUSHSVC_REDIS_URL (use `serve` without Redis)"
        )
    _logging()
    from pushsvc.server import serve_http

    serve_http(settings, role="web")


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
