"""The application factory: settings → runtime (broker, hub, aggregator) → blueprints."""

from __future__ import annotations

import logging
import mimetypes
from collections.abc import Callable, Mapping
from types import FunctionType
from typing import Any, Literal

from flask import Flask, Response
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from pushsvc.config import Settings
from pushsvc.core.answers import answer_json, error_json, error_of
from pushsvc.errors import RequestError
from pushsvc.http import cors
from pushsvc.http.api import (
    anomalies,
    dashboard,
    deletion,
    forecast,
    health,
    history,
    many_topics,
    mercure,
    mercure_subscriptions,
    openapi,
    presence,
    producer,
    series,
    streams,
    topics,
)
from pushsvc.http.api.context import AnyText
from pushsvc.http.api.error_replies import headers_of, status_of
from pushsvc.http.api.orjson_provider import OrjsonProvider
from pushsvc.ops import logs
from pushsvc.runtime import Runtime

log = logging.getLogger(__name__)

Role = Literal["serve", "web"]


class PushsvcFlask(Flask):
    """Flask, remembering which functions it has found to be plain `def`s: it asks again of
    every view and hook on every request (`ensure_sync`, a code-flags inspection each), and
    the answer for a function object never changes."""

    def __init__(self, import_name: str) -> None:
        super().__init__(import_name)
        self._plain: set[FunctionType] = set()

    def ensure_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        if func in self._plain:
            return func
        sync = super().ensure_sync(func)
        # Only functions: a bound method is a new object each time it is looked up.
        if sync is func and type(func) is FunctionType:
            self._plain.add(func)
        return sync


def create_app(
    test_config: Mapping[str, object] | Settings | None = None,
    *,
    role: Role | None = None,
) -> Flask:
    """Build the WSGI app.

    `test_config` overrides settings by field name (flags do this in the CLI);
    `PUSHSVC_*` variables fill the rest. Role `serve` also runs the aggregator in
    this process; `web` only serves HTTP. By default a process aggregates when it
    runs on the embedded memory broker (nothing else could) and not on Redis.
    """
    settings = test_config if isinstance(test_config, Settings) else Settings.load(test_config)
    logs.ensure_configured(settings.log_format, settings.log_level)
    # Not started by `pushsvc` (gunicorn's app factory): the host binds the socket, so
    # --host and --port mean nothing here and are left out of the settings line.
    hosted = role is None
    if role is None:
        role = "serve" if settings.redis_url is None else "web"
    # Scripts, ES modules among them (/static/pushsvc.js), as RFC 9239 names their type.
    # Python 3.11's own table says application/javascript where the system has no
    # mime.types to say otherwise.
    mimetypes.add_type("text/javascript", ".js")
    app = PushsvcFlask(__name__)
    app.json = OrjsonProvider(app)
    app.url_map.converters["anytext"] = AnyText
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    runtime = Runtime.build(settings, web=True, aggregate=role == "serve")
    app.extensions["pushsvc"] = runtime
    shown = settings.redacted()
    if hosted:
        del shown["host"], shown["port"]
    log.info("pushsvc %s settings: %s", role, shown)

    blueprints = (
        dashboard.bp,
        producer.bp,
        many_topics.bp,
        streams.bp,
        topics.bp,
        deletion.bp,
        history.bp,
        presence.bp,
        series.bp,
        anomalies.bp,
        forecast.bp,
        health.bp,
        openapi.bp,
    )
    for blueprint in blueprints:
        app.register_blueprint(blueprint)
    if settings.mercure != "off":
        app.register_blueprint(mercure.bp)
        if settings.mercure_subscriptions:
            app.register_blueprint(mercure_subscriptions.bp)
    _register_error_handlers(app, runtime)
    logs.install(app)
    if settings.trusted_proxies:
        # The client address (per-IP limits) and the origin (cookie POSTs) as the proxies
        # in front saw them; only that many hops are believed, so a client cannot forge them.
        hops = settings.trusted_proxies
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_port=hops, x_prefix=hops
        )
    cors.install(app, settings)
    return app


def _register_error_handlers(app: Flask, runtime: Runtime) -> None:
    def reply(
        status: int, body: bytes, code: str, headers: dict[str, str] | None = None
    ) -> Response:
        runtime.metrics.requests_rejected.labels(code).inc()
        return Response(body, status=status, mimetype="application/json", headers=headers)

    @app.errorhandler(RequestError)
    def pushsvc_error(exc: RequestError) -> Response:
        return reply(status_of(exc), answer_json(error_of(exc)), exc.code, headers_of(exc))

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        code = (exc.name or "error").lower().replace(" ", "_")
        status = exc.code or 500
        # The exception's own headers but its HTML Content-Type: a 405's `Allow`, which RFC
        # 9110 requires, and whatever else werkzeug adds to a status it raises.
        headers = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}
        return reply(status, error_json(code, exc.description or ""), code, headers)
