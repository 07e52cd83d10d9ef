"""Flask's JSON, by orjson: every JSON answer (the 202 of each POST among them) is encoded
without the stdlib encoder's Python-level work, a measurable share of a POST's CPU (measured:
docs/journal/fanout.md, 'Where a POST's CPU went, and what it costs now')."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
from flask import Response
from flask.json.provider import JSONProvider


def _default(value: Any) -> Any:
    """What orjson cannot encode itself and Flask's encoder could (orjson does dataclasses,
    UUIDs and dates on its own)."""
    if isinstance(value, Decimal):
        return str(value)
    if hasattr(value, "__html__"):
        return str(value.__html__())
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


class OrjsonProvider(JSONProvider):
    """Compact, in the order the dict was built (not sorted), ending with a newline as Flask's
    own answers do; keys that are not strings become strings as the stdlib makes them; dates
    in ISO 8601 (orjson's own form); Decimal and `__html__` as Flask's encoder wrote them."""

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        return orjson.dumps(obj, default=_default, option=orjson.OPT_NON_STR_KEYS).decode()

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return orjson.loads(s)

    def response(self, *args: Any, **kwargs: Any) -> Response:
        body = orjson.dumps(
            self._prepare_response_obj(args, kwargs),
            default=_default,
            option=orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS,
        )
        return Response(body, mimetype="application/json")
