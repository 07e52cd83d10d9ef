"""What `/openapi.json` says against what the server does, in-process, for what the fuzz suite
(tests/system/test_openapi_fuzz.py) found: the answer to an undeclared method, and which
`?group=` filters, ranges and projections a topic refuses, with the codes that tell them apart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pytest
from flask.testing import FlaskClient

from conftest import MakeApp
from pushsvc.core.answers import Accepted, Error, ErrorDetail
from pushsvc.ingest.event_shape import EventBody

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "TRACE")

GROUPING_RULES = """
[[rule]]
topics = ["kitchen.*"]
windows = ["10s", "1m"]
stats = ["count", "mean"]
group_by = ["station"]
"""


def _paths(client: FlaskClient) -> dict[str, dict[str, Any]]:
    paths: dict[str, dict[str, Any]] = client.get("/openapi.json").json["paths"]
    return paths


def test_an_undeclared_method_is_a_405_whose_allow_names_the_declared_ones(
    client: FlaskClient,
) -> None:
    # RFC 9110 §15.5.6: a 405 MUST carry Allow. Every path the document lists, whatever it
    # lists, with every method it does not declare there.
    for path, item in _paths(client).items():
        declared = {method.upper() for method in item}
        url = path.replace("{topic}", "orders")
        for method in sorted(set(METHODS) - declared):
            answer = client.open(url, method=method)
            assert answer.status_code == 405, (method, url)
            allowed = {m.strip() for m in answer.headers.get("Allow", "").split(",") if m}
            assert allowed - {"HEAD", "OPTIONS"} == declared, (method, url, allowed)
            assert answer.get_json()["error"]["code"] == "method_not_allowed"


def _one_topic_group_schemas(client: FlaskClient) -> dict[str, dict[str, Any]]:
    """Each one-topic operation's `?group=` schema."""
    found = {}
    for path, item in _paths(client).items():
        for method, operation in item.items():
            for parameter in operation.get("parameters", []):
                if "{topic}" in path and parameter["name"] == "group":
                    found[f"{method.upper()} {path}"] = parameter["schema"]
    return found


def test_without_grouping_rules_the_document_allows_no_group_filter_on_a_topic(
    client: FlaskClient,
) -> None:
    schemas = _one_topic_group_schemas(client)
    assert len(schemas) == 5  # stream, stats, history, series, forecast
    for schema in schemas.values():
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(["station:grill"], schema)
    assert client.post("/topics/orders/events", json={"value": 1}).status_code == 202
    for path in ("stats", "history", "series", "stream", "forecast"):
        answer = client.get(f"/topics/orders/{path}?group=station:grill")
        assert answer.status_code == 400, path
        assert answer.get_json()["error"]["code"] == "ungrouped_tag", path


def test_a_group_filter_the_document_allows_is_refused_only_by_a_topic_that_does_not_group(
    make_app: MakeApp, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(GROUPING_RULES)
    client = make_app(rules=str(rules)).test_client()
    for schema in _one_topic_group_schemas(client).values():
        jsonschema.validate(["station:grill"], schema)
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(["dish:noodles"], schema)
    tags = {"station": "grill"}
    for topic in ("kitchen.orders", "orders"):
        assert client.post(f"/topics/{topic}/events", json={"value": 1, "tags": tags}).status_code
    for path in ("stats", "history", "series"):
        assert client.get(f"/topics/kitchen.orders/{path}?group=station:grill").status_code == 200
        answer = client.get(f"/topics/orders/{path}?group=station:grill")
        assert answer.status_code == 400, path
        assert answer.get_json()["error"]["code"] == "ungrouped_tag", path


def test_a_stream_asking_what_its_topic_does_not_keep_is_refused_as_not_kept(
    make_app: MakeApp, tmp_path: Path
) -> None:
    # `1m` is some rule's window (so the document lists it), but not `orders`' (the default's).
    rules = tmp_path / "rules.toml"
    rules.write_text(GROUPING_RULES.replace('"10s", "1m"', '"10s", "2m"'))
    client = make_app(rules=str(rules)).test_client()
    answer = client.get("/topics/orders/stream?windows=2m")
    assert answer.status_code == 400
    assert answer.get_json()["error"]["code"] == "not_kept"


@pytest.mark.parametrize(
    "query", ["since=100&until=100", "since=200&until=100", "since=1763700001"]
)
def test_an_empty_series_range_is_refused_as_empty_range(client: FlaskClient, query: str) -> None:
    # The last: `until` left out is the topic's clock, here the event's time.
    event = {"value": 1, "ts": 1763700000}
    assert client.post("/topics/orders/events", json=event).status_code == 202
    answer = client.get(f"/topics/orders/series?resolution=auto&{query}")
    assert answer.status_code == 400, query
    assert answer.get_json()["error"]["code"] == "empty_range"


def _documented(document: dict[str, Any], path: str, method: str, status: int) -> dict[str, Any]:
    responses: dict[str, Any] = document["paths"][path][method.lower()]["responses"]
    assert str(status) in responses, f"{method} {path} answered an undocumented {status}"
    response: dict[str, Any] = responses[str(status)]
    return response


def _assert_conforms(client: FlaskClient, path: str, method: str, answer: Any) -> None:
    """The answer's status, headers and JSON body are what the document says for them."""
    document = client.get("/openapi.json").json
    response = _documented(document, path, method, answer.status_code)
    for name, header in response.get("headers", {}).items():
        value = answer.headers.get(name)
        if header.get("required"):
            assert value is not None, f"{answer.status_code} without {name}"
        if value is not None and header["schema"].get("type") == "integer":
            jsonschema.validate(int(value), header["schema"])
    assert answer.mimetype in response["content"], answer.mimetype
    # The schema inside its document, so that its `$ref`s resolve.
    schema = {**response["content"][answer.mimetype]["schema"], **document}
    jsonschema.validate(answer.get_json(), schema)


def test_refusals_have_the_documented_shape(make_app: MakeApp) -> None:
    # 404, 413, 415, 429 (a stream past the per-client limit), each as /openapi.json says.
    client = make_app(max_body="64", max_streams_per_ip="1").test_client()
    events = "/topics/{topic}/events"
    checks = [
        ("/topics/{topic}/stats", "GET", client.get("/topics/nothing.yet/stats"), 404),
        (events, "POST", client.post("/topics/t/events", json=[{"value": 1}] * 20), 413),
        (events, "POST", client.post("/topics/t/events", data="v=1"), 415),
    ]
    first = client.get("/topics/t/stream")
    try:
        second = client.get("/topics/t/stream")
        checks.append(("/topics/{topic}/stream", "GET", second, 429))
    finally:
        first.close()
    for path, method, answer, status in checks:
        assert answer.status_code == status, (path, answer.data)
        _assert_conforms(client, path, method, answer)


def test_an_unreachable_broker_is_the_documented_503(make_app: MakeApp) -> None:
    # Port 1: nothing listens there, so every Redis call fails at once.
    client = make_app(redis_url="redis://127.0.0.1:1/0").test_client()
    answer = client.post("/topics/t/events", json={"value": 1})
    assert answer.status_code == 503
    assert answer.get_json()["error"]["code"] == "broker_unavailable"
    assert answer.headers.get("Retry-After") is not None
    _assert_conforms(client, "/topics/{topic}/events", "POST", answer)


def _generated(shape: type[msgspec.Struct]) -> dict[str, Any]:
    """The JSON Schema msgspec generates from a class, but for its words (title, description)."""
    _, components = msgspec.json.schema_components(
        [shape], ref_template="#/components/schemas/{name}"
    )
    schema: dict[str, Any] = components[shape.__name__]
    return {k: v for k, v in schema.items() if k not in ("title", "description", "required")} | (
        {"required": schema["required"]} if schema.get("required") else {}
    )


@pytest.mark.parametrize(
    ("name", "shape"),
    [("Event", EventBody), ("Accepted", Accepted), ("Error", Error), ("ErrorDetail", ErrorDetail)],
)
def test_the_documents_shapes_are_generated_from_the_classes_that_define_them(
    client: FlaskClient, name: str, shape: type[msgspec.Struct]
) -> None:
    # What the server decodes a POST into, and encodes its answers from, is what the document
    # says, field for field; only what the class cannot say is added (`Event`'s anyOf).
    schema = client.get("/openapi.json").json["components"]["schemas"][name]
    generated = _generated(shape)
    assert {k: v for k, v in schema.items() if k in generated} == generated
    assert set(schema) - set(generated) <= {"description", "anyOf"}


def test_a_posts_answers_are_the_defined_shapes(client: FlaskClient) -> None:
    # Decoded by the classes the Python client decodes them with.
    answer = client.post("/topics/orders/events", json=[{"value": 1}, {"value": 2}])
    assert answer.status_code == 202
    assert msgspec.json.decode(answer.data, type=Accepted) == Accepted(2)
    _assert_conforms(client, "/topics/{topic}/events", "POST", answer)
    refused = client.post("/topics/orders/events", json=[{"value": 1}, {"value": "x"}])
    assert refused.status_code == 400
    error = msgspec.json.decode(refused.data, type=Error).error
    assert (error.code, error.message, error.index) == (
        "invalid_event",
        "value must be a finite number, not a string",
        1,
    )
    _assert_conforms(client, "/topics/{topic}/events", "POST", refused)
