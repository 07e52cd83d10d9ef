"""The JSDoc typedefs of `static/pushsvc.js` against `/openapi.json`: each typedef that
describes an answer of the server names the properties of its schema, no more and no fewer,
and marks optional (`[name]`) exactly those the schema does not require. The typedefs are
written by hand for the browser's editor; without this a field added to an answer (or one
dropped) stayed undocumented in the client. Every typedef is either such an answer or named
below as the client's own (options, states, parsed ids), so a new one must be placed."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

SCRIPT = Path(__file__).resolve().parents[2] / "src" / "pushsvc" / "static" / "pushsvc.js"

ANSWERS = {
    # typedef: the schema it describes, as a path into components/schemas.
    "TopValue": ("TopValue",),
    "FunnelStep": ("FunnelStep",),
    "GroupWindows": ("GroupStats",),
    "PublishedEvent": ("EventEcho",),
    "MessageCount": ("MessageRate",),
    "Update": ("StreamUpdate",),
    "SnapshotEntry": ("SnapshotEntry",),
    "Snapshot": ("SnapshotMessage",),
    "Point": ("PointMessage",),
    "Bucket": ("PointMessage", "point"),
    "AlertChange": ("AlertChangeMessage",),
    "HistoryPage": ("History",),
}
CLIENT_ONLY = {
    # Maps of windows and groups (no fixed properties), a window's statistics (a map by
    # statistic name) and the session statistics among them.
    "WindowStats", "Windows", "GroupKey", "SessionStats",
    # What the client makes of the stream: its states, options and hooks, parsed ids, the
    # messages it holds while loading, the gaps it reports, a group's update as it keeps it.
    "Gap", "State", "StatusDetail", "HistoryOptions", "SubscribeOptions", "HistoryQuery",
    "ParsedId", "GroupUpdate", "StreamHooks", "Message", "Loading", "PushedMessage",
    "MessageGap", "MessagesOptions",
}  # fmt: skip
_TYPEDEF = re.compile(r"@typedef \{[^\n]*\} (\w+)\n((?:\s*\*[^\n]*\n)*?)\s*\*/", re.MULTILINE)
_PROPERTY = re.compile(r"@property \{.*?\} (\[?)(\w+)")


def _typedefs() -> dict[str, dict[str, bool]]:
    """Each typedef's properties, True for an optional one (`[name]`)."""
    found: dict[str, dict[str, bool]] = {}
    for name, body in _TYPEDEF.findall(SCRIPT.read_text(encoding="utf-8")):
        found[name] = {prop: bool(optional) for optional, prop in _PROPERTY.findall(body)}
    return found


def _schema(spec: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    schema: dict[str, Any] = spec["components"]["schemas"][path[0]]
    for field in path[1:]:
        schema = schema["properties"][field]
        if "$ref" in schema:
            schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def test_every_typedef_is_an_answer_or_the_clients_own() -> None:
    typedefs = _typedefs()
    assert len(typedefs) >= len(ANSWERS) + len(CLIENT_ONLY)  # the parse found them all
    assert set(typedefs) == set(ANSWERS) | CLIENT_ONLY


@pytest.mark.parametrize("typedef", sorted(ANSWERS))
def test_an_answers_typedef_names_its_schemas_properties(client: FlaskClient, typedef: str) -> None:
    spec = client.get("/openapi.json").get_json()
    schema = _schema(spec, ANSWERS[typedef])
    required = set(schema.get("required", ()))
    wanted = {name: name not in required for name in schema["properties"]}
    assert _typedefs()[typedef] == wanted
