"""Health, readiness and metrics."""

from __future__ import annotations

from flask import Blueprint, Response

from pushsvc.api.context import runtime
from pushsvc.errors import BrokerUnavailable

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@bp.get("/readyz")
def readyz() -> tuple[dict[str, object], int]:
    try:
        runtime().broker.ping()
    except BrokerUnavailable as exc:
        return {"status": "unavailable", "broker": exc.message}, 503
    return {"status": "ready"}, 200


@bp.get("/metrics")
def metrics() -> Response:
    return Response(runtime().metrics.render(), mimetype="text/plain; version=0.0.4")
