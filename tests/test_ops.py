"""OpenAPI description and CORS."""

from __future__ import annotations

import json
import re

from openapi_spec_validator import validate

from pushsvc.app import create_app
from pushsvc.testing.live import PushsvcProcess, request


def test_openapi_is_valid_and_documents_every_route(server: PushsvcProcess) -> None:
    status, headers, body = request(server.port, "GET", "/openapi.json")
    assert status == 200 and headers["content-type"] == "application/json"
    spec = json.loads(body)
    validate(spec)
    app = create_app({"tick": 0})
    routes = {
        (re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule), method.lower())
        for rule in app.url_map.iter_rules()
        if rule.endpoint.rpartition(".")[2] != "static"
        for method in rule.methods or ()
        if method in {"GET", "POST"}
    }
    documented = {(path, method) for path, ops in spec["paths"].items() for method in ops}
    assert routes == documented


def test_cors_is_off_by_default(server: PushsvcProcess) -> None:
    _, headers, _ = request(server.port, "GET", "/healthz", headers={"Origin": "https://a.test"})
    assert "access-control-allow-origin" not in headers


def test_cors_allows_only_listed_origins() -> None:
    proc = PushsvcProcess("serve", "--tick", "0", "--cors-origins", "https://a.test").start()
    try:
        preflight = {
            "Origin": "https://a.test",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        }
        status, headers, _ = request(proc.port, "OPTIONS", "/topics/x/events", headers=preflight)
        assert status == 200
        assert headers["access-control-allow-origin"] == "https://a.test"
        assert headers["access-control-allow-credentials"] == "true"
        _, other, _ = request(
            proc.port, "GET", "/topics/x/stream?max_hz=0", headers={"Origin": "https://b.test"}
        )
        assert "access-control-allow-origin" not in other
    finally:
        proc.stop()
