"""Health, readiness and metrics."""

from __future__ import annotations

from typing import cast

from flask import Blueprint, Response

from pushsvc.errors import BrokerUnavailable
from pushsvc.http.api.context import runtime
from pushsvc.http.api.readiness_shape import Readiness, ShardReadiness, Status, readiness_json

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@bp.get("/readyz")
def readyz() -> Response:
    """Ready when the broker answers, Redis neither evicts nor is full and has the replicas
    `--redis-min-replicas` asks for (looked at for this request), every shard has an
    aggregator, and each computes with the rules this process reads (else its statistics are
    not the ones this process describes); the lag either way. Every status but `ready` comes
    with a `reason`: what is wrong and what to do."""
    try:
        lags = runtime().broker.lag()
    except BrokerUnavailable as exc:
        reason = (
            f"{exc.message}: POSTs answer 503 and streams wait; check that Redis runs and that "
            "this process reaches it at PUSHSVC_REDIS_URL"
        )
        return _answer(Readiness("unavailable", broker=exc.message, reason=reason), 503)
    shards = {
        f"{lag.shard[0]}/{lag.shard[1]}": ShardReadiness(
            lag.aggregator, lag.entries, lag.oldest_age_s, lag.rules_digest
        )
        for lag in lags
    }
    guard = runtime().redis_guard
    problem = None
    if guard is not None:
        guard.check()  # now, not as the last periodic look saw it
        problem = guard.problem()
    if problem is not None:
        status, reason = problem
        behind = sum(lag.entries for lag in lags)
        if status == "redis_full":
            reason += f"; aggregator {behind} entries behind"
        return _answer(Readiness(cast(Status, status), reason=reason, shards=shards), 503)
    orphans = [f"{lag.shard[0]}/{lag.shard[1]}" for lag in lags if not lag.aggregator]
    if orphans:
        behind = sum(lag.entries for lag in lags if not lag.aggregator)
        listed = ", ".join(orphans[:8]) + (", …" if len(orphans) > 8 else "")
        reason = (
            f"no aggregator holds partition(s) {listed}: their events are logged ({behind} "
            "waiting) but no update is made; start `pushsvc aggregate` with the same "
            "PUSHSVC_REDIS_URL, PUSHSVC_PREFIX and PUSHSVC_PARTITIONS (a running one takes "
            "them over within --lease)"
        )
        return _answer(Readiness("no_aggregator", reason=reason, shards=shards), 503)
    own = runtime().settings.rules.digest
    differ = [lag for lag in lags if lag.rules_digest not in (None, own)]
    if differ:
        lag = differ[0]
        reason = (
            f"this process reads rules {own}; the aggregator of shard "
            f"{lag.shard[0]}/{lag.shard[1]} computes with rules {lag.rules_digest}; give "
            "every process the same rules file (PUSHSVC_RULES) and restart the ones that differ"
        )
        return _answer(Readiness("rules_differ", reason=reason, shards=shards), 503)
    return _answer(Readiness("ready", shards=shards), 200)


def _answer(readiness: Readiness, status: int) -> Response:
    return Response(readiness_json(readiness), status, mimetype="application/json")


@bp.get("/metrics")
def metrics() -> Response:
    return Response(runtime().metrics.render(), mimetype="text/plain; version=0.0.4")
