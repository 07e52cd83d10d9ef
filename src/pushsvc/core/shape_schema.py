"""The document's schemas generated from the msgspec classes that define the shapes
(`pushsvc.core.*_shape`, `answers`, `window_stats`): one component per class, by its name.

An object whose keys the rules choose (a window's statistics, a point) is a dict, not a class;
`keyed_schema` describes one from a table of its members' types, generated the same way, so
that the document and the client's typed reading (`stat_type`) come from one table.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

REF = "#/components/schemas/{name}"
"""Where the document keeps a class's schema (its `$ref`)."""


def _clean(schema: dict[str, Any]) -> dict[str, Any]:
    """A generated schema as the document shows it: no title, the docstring's lines joined."""
    schema.pop("title", None)
    description = " ".join(schema.get("description", "").split())
    if description:
        schema["description"] = description
    else:
        schema.pop("description", None)
    return schema


def components(classes: Iterable[Any]) -> dict[str, Any]:
    """The component schemas of `classes` and of the classes they hold, by class name."""
    _, found = msgspec.json.schema_components(tuple(classes), ref_template=REF)
    return {name: _clean(schema) for name, schema in found.items()}


def keyed_schema(
    named: Mapping[str, Any],
    prefixed: Mapping[str, Any] = {},
    rest: Any = None,
    required: Iterable[str] = (),
) -> dict[str, Any]:
    """What an object's members hold, for `Meta(extra_json_schema=…)`: a member `named`, one
    whose key starts with a prefix of `prefixed`, any other of type `rest` (None: no other)."""
    types = [*named.values(), *prefixed.values(), *([] if rest is None else [rest])]
    schemas, _ = msgspec.json.schema_components(types, ref_template=REF)
    found = iter(schemas)
    schema: dict[str, Any] = {"properties": {key: next(found) for key in named}}
    if prefixed:
        schema["patternProperties"] = {f"^{prefix}": next(found) for prefix in prefixed}
    schema["additionalProperties"] = False if rest is None else next(found)
    if required:
        schema["required"] = list(required)
    return schema


def stat_type(name: str, named: Mapping[str, Any], prefixed: Mapping[str, Any], rest: Any) -> Any:
    """The type of a keyed object's member `name`, as `keyed_schema` describes it."""
    if name in named:
        return named[name]
    for prefix, kind in prefixed.items():
        if name.startswith(prefix):
            return kind
    return rest
