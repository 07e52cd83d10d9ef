"""Log lines: plain text for people or one JSON object per line for collectors
(`--log-format json`), each with the request id of the request it was logged in, and never a
credential (`pushsvc.security.redact`). The HTTP client libraries' own loggers (httpx logs
every request it sends at INFO) are held at WARNING: a producer such as `pushsvc demo` would
otherwise write a line per POST.

The request id is the client's `X-Request-ID` when it sends a sane one (a proxy in front often
does), else a new one; it is echoed in the response, so a client can quote it. Each request
runs in its own greenlet, and gevent gives each greenlet its own context variables.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import orjson

from pushsvc.core.log_levels import LogLevels
from pushsvc.security.redact import RedactCredentials

if TYPE_CHECKING:
    from flask import Flask, Response

FORMATS = ("text", "json")
HEADER = "X-Request-ID"
_SANE_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_ENVIRON_KEY = "HTTP_X_REQUEST_ID"
"""Where a WSGI server puts the `X-Request-ID` header (`HEADER`)."""
_TEXT = "%(asctime)s %(levelname)s %(name)s%(request_tag)s: %(message)s"
QUIET_LOGGERS = ("httpx", "httpcore")
"""Libraries whose INFO lines are one per request: logged from WARNING up only."""

request_id: ContextVar[str | None] = ContextVar("pushsvc_request_id", default=None)


class _RequestId(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        rid = request_id.get()
        record.request_id = rid
        record.request_tag = f" [{rid}]" if rid else ""
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts (UTC, RFC 3339), level, logger, message, request_id
    when there is one, exc (the traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", None)
        if rid:
            line["request_id"] = rid
        if record.exc_info:
            line["exc"] = record.exc_text or self.formatException(record.exc_info)
        return orjson.dumps(line).decode()


def configure(log_format: str = "text", levels: LogLevels | None = None) -> None:
    """Log `levels` (INFO and above unless told otherwise: `--log-level`) to standard error,
    in `log_format`, credentials redacted; the QUIET_LOGGERS from WARNING up unless `levels`
    names them."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(_TEXT))
    handler.addFilter(_RequestId())
    handler.addFilter(RedactCredentials())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    (levels or LogLevels()).apply()


def ensure_configured(log_format: str = "text", levels: LogLevels | None = None) -> None:
    """What `create_app` does when run by a host other than `pushsvc` (gunicorn): configure as
    the CLI does where nothing configured logging; where the host did (gunicorn
    `--log-config`, an application's own setup), keep its handlers and add the request id and
    the credential filter to each; every other logger's handlers (gunicorn's access log) get
    the credential filter too, so no line any handler writes quotes a token."""
    root = logging.getLogger()
    if not root.handlers:
        configure(log_format, levels)
    for handler in root.handlers:
        if not any(isinstance(f, _RequestId) for f in handler.filters):
            handler.addFilter(_RequestId())
    # The host's own loggers too: gunicorn's access log (`gunicorn.access`, which does not
    # propagate) writes every request line, `?token=` included.
    for logger in [root, *logging.root.manager.loggerDict.values()]:
        for handler in getattr(logger, "handlers", ()):
            if not any(isinstance(f, RedactCredentials) for f in handler.filters):
                handler.addFilter(RedactCredentials())


def install(app: Flask) -> None:
    """Give every request an id (the client's sane `X-Request-ID`, else a new one)."""
    # Here, not at the top: `pushsvc demo` configures its logging with this module and
    # has no use for Flask.
    from flask import request

    @app.before_request
    def _assign() -> None:
        # From the environ, as `request.headers.get` reads it, without the KeyError (an
        # exception object werkzeug builds) that header's absence costs there: most
        # requests have none.
        given = request.environ.get(_ENVIRON_KEY, "")
        request_id.set(given if _SANE_ID.fullmatch(given) else os.urandom(16).hex())

    @app.after_request
    def _echo(response: Response) -> Response:
        rid = request_id.get()
        if rid:
            response.headers[HEADER] = rid
        return response
