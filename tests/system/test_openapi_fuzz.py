"""Schemathesis against the service's own `/openapi.json`, on real pushsvc processes: `serve`
on the embedded broker, and `web` + `aggregate` on a real Redis; with auth off and on.

`schemathesis run` (`support.schemathesis_run`) tests every operation the document lists,
whatever it lists, in its coverage phase (each parameter's boundaries, a missing required one,
methods the document does not declare) and its fuzzing phase (schema-valid and schema-invalid
requests), and puts every answer through all of its checks: no 5xx, the status code, content
type, headers and body (each SSE stream's first event) as documented, invalid input refused,
valid input accepted (but for the refusals that depend on state: `support.schemathesis_hooks`),
documented auth enforced, a 405 with its `Allow`. Generation is deterministic, so a run is
repeatable; the failure message says how to repeat it.
"""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness.live import PushsvcProcess, request
from harness.redis_server import RedisServer

from pushsvc.security.tokens import HMAC_ALGORITHM, mint
from support import schemathesis_run
from support.auth_tokens import remember

pytestmark = pytest.mark.slow

SECRET = remember(secrets.token_urlsafe(48))  # the session's log check looks for it
AUTH = {"PUSHSVC_JWT_KEY": SECRET, "PUSHSVC_ANONYMOUS": "public.*"}
# A body's bound is 64 KiB here (1 MiB by default): the coverage phase sends a batch and a
# broadcast at the batch's bound (10,000), and a broadcast to 10,000 new topics costs the
# aggregator seconds (a topic's first event builds its state); past 64 KiB they are a 413
# before any topic is made, as a batch past its bound would be.
MAX_BODY = "64KiB"
SERVE = ("serve", "--tick", "0", "--heartbeat", "1s", "--max-body", MAX_BODY)


def _bearer(publish: list[str], subscribe: list[str]) -> dict[str, str]:
    # Minted at collection: an hour, as support.auth_tokens' own, so that a loaded machine that
    # runs this module late in the suite still sends a live token (15 minutes did not).
    token = remember(
        mint(SECRET.encode(), HMAC_ALGORITHM, publish=publish, subscribe=subscribe, ttl_s=3600)
    )
    return {"Authorization": f"Bearer {token}"}


# Who calls a server with auth on, at which topics their schema-valid requests aim, and which
# operations must answer some of them with a 2xx (None: none need). The coverage phase's cases
# (each parameter's boundaries) are the same for every caller: only the first runs it. An
# anonymous caller may only read, so none of its POSTs or DELETEs succeeds and its topics have
# no stats (404). The last two are mostly refused (401, 403): a few fuzzed cases check
# those answers.
FUZZING_ONLY = (schemathesis_run.MAX_EXAMPLES, ("fuzzing",))
FEW = (schemathesis_run.MAX_EXAMPLES // 3, ("fuzzing",))
NO_EXCEPTIONS = frozenset[str]()
# A forecast is answered once a forecasting rule's tier has closed enough buckets for its model
# (two seasons, or its range): never within a fuzzing run. tests/system/test_forecast_api.py
# checks its 2xx against the model; here it is fuzzed for its refusals and its schema only.
NEEDS_CLOSED_BUCKETS = frozenset({"GET /topics/{topic}/forecast"})
CALLERS = {
    "every topic": (_bearer(["*"], ["*"]), "", None, NO_EXCEPTIONS),
    "no token, anonymous topics": (
        {},
        "public.",
        FUZZING_ONLY,
        frozenset(
            {
                "POST /topics/{topic}/events",
                "POST /events",
                "POST /broadcast",
                "GET /topics/{topic}/stats",
                "DELETE /topics/{topic}",
            }
        ),
    ),
    "no token": ({}, "", FEW, None),
    "a narrow token": (_bearer(["team.*"], ["team.*"]), "", FEW, None),
}
# Rules that differ by topic: a grouping rule (so `?group=` has tags to name), and windows and
# statistics that only some topics keep.
RULES = """
[[rule]]
topics = ["kitchen.latency.*"]
windows = ["10s", "1m"]
stats = ["count", "mean", "max", "rate"]
group_by = ["station"]
max_groups = 2

[[rule]]
topics = ["kitchen.long"]
windows = ["1h", "10s"]
last = [5]
stats = "all"
"""


def _operations(server: PushsvcProcess) -> set[str]:
    status, _, body = request(server.port, "GET", "/openapi.json")
    assert status == 200
    paths = json.loads(body)["paths"]
    return {f"{method.upper()} {path}" for path, item in paths.items() for method in item}


def _fuzz(
    server: PushsvcProcess,
    report_dir: Path,
    *,
    headers: dict[str, str] | None = None,
    topic_prefix: str = "",
    few: tuple[int, tuple[str, ...]] | None = None,
) -> schemathesis_run.FuzzRun:
    """`few`: fewer examples, in these phases only."""
    max_examples, phases = few or (schemathesis_run.MAX_EXAMPLES, schemathesis_run.PHASES)
    found = schemathesis_run.run(
        server.base,
        report_dir,
        headers=headers,
        topic_prefix=topic_prefix,
        max_examples=max_examples,
        phases=phases,
    )
    assert found.returncode == 0, found.failure(server.base)
    untested = _operations(server) - found.statuses.keys()
    assert not untested, f"schemathesis sent nothing to {sorted(untested)}"
    return found


def _answered_each_with_success(
    found: schemathesis_run.FuzzRun, but: frozenset[str] = NO_EXCEPTIONS
) -> None:
    """Every operation (`but` those) answered some request with a 2xx: not a run of refusals
    only."""
    refused_only = [
        op
        for op, statuses in found.statuses.items()
        if op not in but | NEEDS_CLOSED_BUCKETS
        and not any(200 <= status < 300 for status in statuses)
    ]
    assert not refused_only, f"no 2xx from {refused_only}: {found.statuses}"


@pytest.fixture(scope="module")
def embedded() -> Iterator[PushsvcProcess]:
    proc = PushsvcProcess(*SERVE).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def embedded_with_rules(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PushsvcProcess]:
    path = tmp_path_factory.mktemp("rules") / "rules.toml"
    path.write_text(RULES)
    proc = PushsvcProcess(*SERVE, "--rules", str(path)).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def embedded_with_auth() -> Iterator[PushsvcProcess]:
    proc = PushsvcProcess(*SERVE, env=AUTH).start()
    yield proc
    proc.stop()


def _on_redis(redis_server: RedisServer, env: dict[str, str]) -> Iterator[PushsvcProcess]:
    base = {
        "PUSHSVC_REDIS_URL": redis_server.url,
        "PUSHSVC_PREFIX": f"t{uuid.uuid4().hex[:10]}:",
        "PUSHSVC_TICK": "0",
        "PUSHSVC_MAX_BODY": MAX_BODY,
        **env,
    }
    aggregator = PushsvcProcess("aggregate", env=base, http=False).start()
    web = PushsvcProcess("web", env=base).start()
    try:
        aggregator.wait_for_log("took the lease")
        yield web
    finally:
        web.stop()
        aggregator.stop()


@pytest.fixture(scope="module")
def on_redis(redis_server: RedisServer) -> Iterator[PushsvcProcess]:
    yield from _on_redis(redis_server, {})


@pytest.fixture(scope="module")
def on_redis_with_auth(redis_server: RedisServer) -> Iterator[PushsvcProcess]:
    yield from _on_redis(redis_server, AUTH)


def test_embedded_server_conforms_to_its_openapi(embedded: PushsvcProcess, tmp_path: Path) -> None:
    _answered_each_with_success(_fuzz(embedded, tmp_path))


def test_embedded_server_with_rules_conforms_to_its_openapi(
    embedded_with_rules: PushsvcProcess, tmp_path: Path
) -> None:
    _answered_each_with_success(_fuzz(embedded_with_rules, tmp_path))


@pytest.mark.parametrize("caller", CALLERS)
def test_embedded_server_with_auth_conforms_to_its_openapi(
    embedded_with_auth: PushsvcProcess, tmp_path: Path, caller: str
) -> None:
    headers, topic_prefix, few, but = CALLERS[caller]
    found = _fuzz(
        embedded_with_auth,
        tmp_path,
        headers=headers,
        topic_prefix=topic_prefix,
        few=few,
    )
    if but is not None:
        _answered_each_with_success(found, but)


@pytest.mark.redis
def test_redis_deployment_conforms_to_its_openapi(on_redis: PushsvcProcess, tmp_path: Path) -> None:
    _answered_each_with_success(_fuzz(on_redis, tmp_path))


@pytest.mark.redis
def test_redis_deployment_with_auth_conforms_to_its_openapi(
    on_redis_with_auth: PushsvcProcess, tmp_path: Path
) -> None:
    headers = CALLERS["every topic"][0]
    found = _fuzz(on_redis_with_auth, tmp_path, headers=headers, few=FUZZING_ONLY)
    _answered_each_with_success(found)
