"""OpenAPI description and CORS."""

from __future__ import annotations

import re

from flask.testing import FlaskClient
from openapi_spec_validator import validate

from conftest import MakeApp


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
        if method in {"GET", "POST"}
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
