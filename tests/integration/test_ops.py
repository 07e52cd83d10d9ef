"""OpenAPI description and CORS."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from openapi_spec_validator import validate

from conftest import MakeApp
from pushsvc.core.topics import MAX_SELECTORS

SECRET = "s" * 40


def test_openapi_is_valid_and_documents_every_route(client: FlaskClient) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    spec = response.get_json()
    validate(spec)
    assert client.application is not None
    routes = {
        (re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule), method.lower())
        for rule in client.application.url_map.iter_rules()
        if rule.endpoint.rpartition(".")[2] != "static"
        for method in rule.methods or ()
        if method in {"GET", "POST", "DELETE"}
    }
    documented = {(path, method) for path, ops in spec["paths"].items() for method in ops}
    assert routes == documented


def test_cors_is_off_by_default(client: FlaskClient) -> None:
    response = client.get("/healthz", headers={"Origin": "https://a.test"})
    assert "Access-Control-Allow-Origin" not in response.headers


def test_cors_allows_only_listed_origins(make_app: MakeApp) -> None:
    client = make_app(cors_origins="https://a.test").test_client()
    preflight = {
        "Origin": "https://a.test",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    response = client.options("/topics/x/events", headers=preflight)
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "https://a.test"
    assert response.headers["Access-Control-Allow-Credentials"] == "true"
    listed = client.get("/healthz", headers={"Origin": "https://a.test"})
    assert listed.headers["Access-Control-Allow-Origin"] == "https://a.test"
    other = client.get("/healthz", headers={"Origin": "https://b.test"})
    assert "Access-Control-Allow-Origin" not in other.headers


@pytest.mark.parametrize("origins", ["", "https://a.test"])
def test_static_files_may_be_imported_from_any_origin_without_credentials(
    make_app: MakeApp, origins: str
) -> None:
    client = make_app(cors_origins=origins).test_client()
    module = client.get("/static/pushsvc.js", headers={"Origin": "https://elsewhere.test"})
    module.close()  # the file it streams
    assert module.status_code == 200
    assert module.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in module.headers


def test_the_cors_preflight_lists_the_apis_methods_and_exposes_retry_after_and_request_id(
    make_app: MakeApp,
) -> None:
    client = make_app(cors_origins="https://a.test").test_client()
    preflight = client.options(
        "/topics/x/events",
        headers={"Origin": "https://a.test", "Access-Control-Request-Method": "POST"},
    )
    methods = set(preflight.headers["Access-Control-Allow-Methods"].split(", "))
    assert methods == {"GET", "HEAD", "POST", "DELETE", "OPTIONS"}
    answer = client.get("/topics/x/history", headers={"Origin": "https://a.test"})
    exposed = set(answer.headers["Access-Control-Expose-Headers"].split(", "))
    assert {"Retry-After", "X-Request-ID", "Idempotent-Replayed"} <= exposed


# Regression tests for what schemathesis found the served description got wrong.


def _served(make_app: MakeApp, **settings: object) -> dict[str, Any]:
    spec: dict[str, Any] = make_app(**settings).test_client().get("/openapi.json").get_json()
    validate(spec)
    return spec


def _security_of(spec: dict[str, Any]) -> dict[tuple[str, str], Any]:
    return {
        (path, method): operation.get("security")
        for path, item in spec["paths"].items()
        for method, operation in item.items()
    }


def test_openapi_with_auth_off_requires_no_token(make_app: MakeApp) -> None:
    # It required a bearer token or cookie to publish even with auth off, where the server
    # accepts any POST (schemathesis: "API accepts requests without authentication").
    spec = _served(make_app)
    assert set(_security_of(spec).values()) == {None}
    assert "securitySchemes" not in spec["components"]
    assert all(
        "401" not in op["responses"] for item in spec["paths"].values() for op in item.values()
    )


def test_openapi_with_auth_on_states_who_may_go_without_a_token(make_app: MakeApp) -> None:
    closed = _security_of(_served(make_app, jwt_key=SECRET))
    assert closed[("/topics/{topic}/events", "post")] == [{"bearer": []}, {"cookie": []}]
    assert closed[("/stream", "get")] == [{"bearer": []}, {"cookie": []}]
    opened = _served(make_app, jwt_key=SECRET, anonymous="public.*", token_query="true")
    reading = _security_of(opened)[("/topics/{topic}/stream", "get")]
    assert reading == [{"bearer": []}, {"cookie": []}, {"query": []}, {}]
    assert (
        _security_of(opened)[("/topics/{topic}/events", "post")]
        == closed[("/topics/{topic}/events", "post")]
    )
    challenge = opened["paths"]["/stream"]["get"]["responses"]["401"]["headers"]
    assert challenge["WWW-Authenticate"]["required"] is True


def _ecma(pattern: str) -> re.Pattern[str]:
    """A JSON Schema pattern for Python: there `$` matches only at the end, never before a
    final newline."""
    assert pattern.endswith("$")
    return re.compile(pattern[:-1] + r"\Z")


def test_openapi_stream_parameters_are_those_the_server_accepts(
    make_app: MakeApp, tmp_path: Path
) -> None:
    # `?topic=` (an empty selector), `?windows=x` and `?max_hz=5000` were schema-valid and
    # answered 400 (schemathesis: "Schema-valid request rejected").
    rules = tmp_path / "rules.toml"
    rules.write_text('[[rule]]\ntopics = ["*"]\nwindows = ["10s", "1m"]\nstats = ["mean", "p99"]\n')
    spec = _served(make_app, windows="10s,1m", rules=str(rules))
    params = {p["name"]: p["schema"] for p in spec["paths"]["/stream"]["get"]["parameters"]}
    selectors = params["topic"]
    assert (selectors["minItems"], selectors["maxItems"]) == (1, MAX_SELECTORS)
    pattern = _ecma(selectors["items"]["pattern"])
    for good in ("*", "orders", "sensors.*", "a.b.*", "x:y-z"):
        assert pattern.search(good), good
    for bad in ("", "*.*", "a*.*", ".*", "sensors.*.*", " orders", "orders\n"):
        assert not pattern.search(bad), bad
    windows = _ecma(params["windows"]["pattern"])
    assert windows.search("10s,1m") and windows.search("1m")
    assert not windows.search("5m") and not windows.search("1m,") and not windows.search("")
    stats = _ecma(params["stats"]["pattern"])
    assert stats.search("p99,mean") and not stats.search("p50")
    assert params["max_hz"]["maximum"] == 1000


def test_openapi_error_and_event_stream_bodies_are_described(make_app: MakeApp) -> None:
    # Each SSE event was described as a string (schemathesis validates each event as an
    # object: "SSE event violates schema"); an Error without `error` was schema-valid; and
    # /readyz's 503, which is no Error, was described as one.
    spec = _served(make_app)
    schemas = spec["components"]["schemas"]
    assert schemas["Error"]["required"] == ["error"]
    assert schemas["SSE"]["properties"]["event"] == {"enum": ["snapshot", "stats", "presence"]}
    stream = spec["paths"]["/topics/{topic}/stream"]["get"]["responses"]["200"]["content"]
    assert stream["text/event-stream"]["schema"] == {"$ref": "#/components/schemas/SSE"}
    readyz = spec["paths"]["/readyz"]["get"]["responses"]["503"]["content"]
    assert readyz["application/json"]["schema"] == {"$ref": "#/components/schemas/Readiness"}
    assert set(schemas["Readiness"]["properties"]["status"]["enum"]) == {
        "ready",
        "unavailable",
        "redis_evicts",
        "redis_full",
        "replicas_unconfirmed",
        "no_aggregator",
        "rules_differ",
    }


@pytest.mark.parametrize("path", ["/healthz", "/topics/x/events", "/static%2Fpushsvc.js"])
def test_without_origins_only_static_paths_answer_cors(client: FlaskClient, path: str) -> None:
    # flask-cors runs only where its one resource matches (`cors._only_where_it_matches`),
    # which sees the path as flask-cors does: percent-decoded once more.
    answer = client.get(path, headers={"Origin": "https://a.test"})
    answer.close()
    static = path.startswith("/static")
    assert ("Access-Control-Allow-Origin" in answer.headers) is static
