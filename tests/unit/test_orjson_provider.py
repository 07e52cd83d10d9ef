"""The app's JSON answers as Flask's own encoder shaped them: compact, newline-terminated,
non-string keys and Decimals as strings; what neither can encode still fails loudly."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any, cast

import pytest
from flask import Flask, Response

from pushsvc.http.api.orjson_provider import OrjsonProvider


@pytest.fixture
def app() -> Flask:
    app = Flask(__name__)
    app.json = OrjsonProvider(app)
    return app


@pytest.mark.parametrize(
    "value",
    [
        {"accepted": 3, "decimal": Decimal("1.5"), "none": None, "list": [1.25, "x"]},
        {7: "int keys", 8: [1]},
    ],
)
def test_answers_read_as_flasks_own_encoder_wrote_them(app: Flask, value: Any) -> None:
    with app.app_context():
        answer = cast(Response, app.json.response(value)).get_data()
    reference = Flask("reference")  # Flask's stdlib encoder, for comparison
    with reference.app_context():
        expected = cast(Response, reference.json.response(value)).get_data()
    compact = json.dumps(json.loads(answer), separators=(",", ":")) + "\n"
    assert answer == compact.encode()  # no blanks, keys in the order given, a final newline
    assert json.loads(answer) == json.loads(expected)


def test_what_cannot_be_encoded_is_an_error(app: Flask) -> None:
    with app.app_context(), pytest.raises(TypeError, match="not JSON serializable"):
        app.json.dumps({"x": object()})
