"""Schemathesis against the service's own `/openapi.json`, on real `pushsvc serve` processes.

Every operation is fuzzed with schema-valid and schema-invalid requests and every response
goes through all of schemathesis' checks: no 5xx, the status code, content type and headers
are documented, bodies (and each SSE event) match their schemas, invalid input is refused,
valid input accepted, documented auth enforced. Twice: with auth off, and with auth on
(an HS256 secret, anonymous `public.*`), sending a valid token on some requests.

Streams never end: schemathesis reads an event stream until `max-stream-events` events or
the request timeout, then closes it, so SSE operations are checked like the others.

The lazy `schemathesis.pytest.from_fixture` integration breaks on pytest 9
(`Function._nodeid`), so each operation is a pytest parameter and its strategy is run by
Hypothesis inside the test.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import positive_data_acceptance

from pushsvc.config import Settings
from pushsvc.http.api.openapi import describe
from pushsvc.security.tokens import HMAC_ALGORITHM, mint
from support.auth_tokens import remember
from support.live import PushsvcProcess

OPERATIONS = [
    (path, method.upper())
    for path, item in describe(Settings.load(environ={}))["paths"].items()
    for method in item
]
SECRET = remember(secrets.token_urlsafe(48))  # the session's log check looks for it
# Per operation and server; PUSHSVC_TEST_FUZZ_EXAMPLES=500 for a deeper run.
MAX_EXAMPLES = int(os.environ.get("PUSHSVC_TEST_FUZZ_EXAMPLES", "50"))

CONFIG = {
    # An event stream is read until this many events (its snapshot, sent at once), or for at
    # most the request timeout: a liveness bound, generous for two busy cores.
    "request-timeout": 20,
    "max-stream-events": 1,
    "checks": {
        # A batch over --max-batch (the schema's maxItems) is refused as too large, 413, and a
        # request line over the server's limit (long invalid query values) as 414, both as
        # documented; schemathesis' default list of rejections has neither.
        "negative_data_rejection": {
            "expected-statuses": [
                *("400", "401", "403", "404", "405", "406", "409", "415", "422", "428", "429"),
                *("5xx", "413", "414"),
            ]
        }
    },
}
# A positive example may still be refused for a reason no schema can state: an event older
# than its topic's clock minus the allowed lateness is a 400 (late_event), and earlier
# examples move that clock; a `?group=` naming a tag the topic's rule does not group by is a
# 400 on a one-topic resource (the rules, not the schema, say which tags). Every other check
# stays on for these operations.
STATEFUL_REFUSALS = {
    ("/topics/{topic}/events", "POST"): [positive_data_acceptance],
    ("/topics/{topic}/stream", "GET"): [positive_data_acceptance],
    ("/topics/{topic}/stats", "GET"): [positive_data_acceptance],
    ("/topics/{topic}/history", "GET"): [positive_data_acceptance],
    ("/topics/{topic}/series", "GET"): [positive_data_acceptance],
}


def _serve(env: dict[str, str] | None = None) -> PushsvcProcess:
    return PushsvcProcess("serve", "--tick", "0", "--heartbeat", "1s", env=env).start()


@pytest.fixture(scope="module")
def open_server() -> Iterator[PushsvcProcess]:
    proc = _serve()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def auth_server() -> Iterator[PushsvcProcess]:
    proc = _serve({"PUSHSVC_JWT_KEY": SECRET, "PUSHSVC_ANONYMOUS": "public.*"})
    yield proc
    proc.stop()


def _schema(server: PushsvcProcess) -> Any:
    config = SchemathesisConfig.from_dict(CONFIG)
    return schemathesis.openapi.from_url(f"{server.base}/openapi.json", config=config)


def _cases(operation: Any, **fixed: Any) -> st.SearchStrategy[Any]:
    return st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE, **fixed),
        operation.as_strategy(GenerationMode.NEGATIVE, **fixed),
    )


def _public(path: str) -> dict[str, Any]:
    """Strategy overrides aiming at the anonymous `public.*` topics."""
    if "{topic}" in path:
        return {"path_parameters": {"topic": "public.fuzz"}}
    if path == "/stream":
        return {"query": {"topic": ["public.*"]}}
    return {}


def _fuzz(operation: Any, cases: st.SearchStrategy[Any], headers: st.SearchStrategy[Any]) -> None:
    excluded = STATEFUL_REFUSALS.get((operation.path, operation.method.upper()), [])

    @settings(
        max_examples=MAX_EXAMPLES,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(case=cases, extra=headers)
    def run(case: Any, extra: dict[str, str] | None) -> None:
        case.call_and_validate(headers=extra, excluded_checks=excluded)

    run()


@pytest.mark.slow
@pytest.mark.parametrize(("path", "method"), OPERATIONS)
def test_open_server_conforms_to_its_openapi(
    open_server: PushsvcProcess, path: str, method: str
) -> None:
    operation = _schema(open_server)[path][method]
    _fuzz(operation, _cases(operation), st.none())


@pytest.mark.slow
@pytest.mark.parametrize(("path", "method"), OPERATIONS)
def test_auth_server_conforms_to_its_openapi(
    auth_server: PushsvcProcess, path: str, method: str
) -> None:
    operation = _schema(auth_server)[path][method]
    everything = remember(
        mint(SECRET.encode(), HMAC_ALGORITHM, publish=["*"], subscribe=["*"], ttl_s=600)
    )
    narrow = remember(
        mint(SECRET.encode(), HMAC_ALGORITHM, publish=["team.*"], subscribe=["team.*"], ttl_s=600)
    )
    tokens = st.sampled_from([None, everything, narrow]).map(
        lambda token: None if token is None else {"Authorization": f"Bearer {token}"}
    )
    cases = st.one_of(_cases(operation), _cases(operation, **_public(path)))
    _fuzz(operation, cases, tokens)
