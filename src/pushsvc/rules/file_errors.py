"""A rules file's first problem as one line naming the table and the field (pure).

msgspec reports where the document fails its shape (`pushsvc.rules.file_shape`) as a path:
`Expected `int` >= 1 - at `$.rule[1].top[0].k``. This module says it as the rules file's
reader thinks of it: `rule 2 (shop.*): top: k for 'p' is 0; k is a whole number from 1 to
100`. The table is named by its place among its kind and what it is for (a rule's topics, an
alert's name, a derived or session topic); the field by its name down to the first list (an
entry of `top` is `top`, a key of the table `funnel` is `funnel.steps`). A field's own wording
for a wrong value is `PROBLEMS[shape]`, the shape being the path without indexes (`top[].k`);
an unknown field says which the table has and the closest one (did you mean).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from typing import Any

from msgspec import ValidationError, inspect

from pushsvc.rules.fields import describe
from pushsvc.rules.file_shape import MAX_GROUPS_CAP, MAX_TOP_K, RulesFile
from pushsvc.rules.names import ALL_STATS, MAX_COUNT_WINDOW
from pushsvc.rules.sessions import MAX_OPEN_CAP

__all__ = ["PROBLEMS", "one_line"]

PROBLEMS: dict[str, str] = {
    "rule[].topics[]": "selectors are strings: a name, prefix.* or *",
    "rule[].last[]": "{value!r} is not a positive number of events",
    "rule[].last[]>": f"{{value!r}} is over the cap of {MAX_COUNT_WINDOW} events",
    "rule[].stats": 'write "all" or a list of statistics; known: ' + ", ".join(ALL_STATS),
    "rule[].stats[]": "unknown statistic {value!r}; known: " + ", ".join(ALL_STATS),
    "rule[].group_by[]": "{value!r} is not a tag name (1 to 64 characters)",
    "rule[].max_groups": "{value!r} is not a positive whole number",
    "rule[].max_groups>": f"{{value!r}} is over the cap of {MAX_GROUPS_CAP}",
    "rule[].series[]": '{value!r} is not resolution:retention, e.g. "1m:24h"',
    "rule[].distinct[]": "{value!r} is not a tag this statistic can be named after (1 to 64 "
    "letters, digits or _)",
    "rule[].top[]": 'write each entry as {{ tag = "...", k = 10 }}, got {described}',
    "rule[].top[].tag": "{value!r} is not a tag this statistic can be named after (1 to 64 "
    "letters, digits or _)",
    "rule[].top[].k": f"k for {{parent[tag]!r}} is {{value!r}}; k is a whole number from 1 to "
    f"{MAX_TOP_K}",
    "rule[].anomaly": 'write it as {{ every = "1m", stat = "mean", learn = "6h" }}, got '
    "{described}",
    "rule[].forecast": 'write it as {{ tier = "1m", model = "holt_winters", season = "1d", '
    'horizon = "6h" }}, got {described}',
    "rule[].late": '{described} is neither "keep" (the late stream) nor "refuse" (a 400)',
    "alert[].name": "{value!r} is not ASCII letters, digits and _",
    "alert[].topics": "give a list of topic names or prefix.* selectors",
    "alert[].topics[]": "give a list of topic names or prefix.* selectors",
    "alert[].when": '{value!r} is not a condition in a string, e.g. "p99[1m] > 900"',
    "alert[].clear": '{value!r} is not a condition in a string, e.g. "p99[1m] < 800"',
    "alert[].labels": "give a table of names to strings",
    "alert[].annotations": "give a table of names to strings",
    "derive[].topic": "{value!r} is not a topic name (one topic, not a pattern)",
    "derive[].value": "an expression in a string, got {value!r}",
    "session[].topic": "{value!r} is not a topic name (one topic, not a pattern)",
    "session[].from": "a non-empty list of topics or patterns (name, prefix.*, *)",
    "session[].from[]": "selectors are strings: a name, prefix.* or *",
    "session[].key": "{value!r} is not a tag name (1 to 64 characters)",
    "session[].max_open": "{value!r} is not a positive whole number",
    "session[].max_open>": f"{{value!r}} is over the cap of {MAX_OPEN_CAP}",
    "session[].keep_key": "true or false, got {value!r}",
    "session[].funnel": 'write it as {{ tag = "step", steps = ["view", "paid"], within = "1h" }}, '
    "got {described}",
    "session[].funnel.tag": "{value!r} is not a tag name (1 to 64 characters)",
    "session[].funnel.steps": "a non-empty list of the tag's values, in order",
    "session[].funnel.steps[]": "{value!r} is not a tag value (1 to 256 characters)",
}
"""A field's wording for a wrong value, by shape: `{value}` is the value, `{described}` its
type and value, `{parent}` the table holding it. `shape>` is for a number over its cap."""

_KINDS = {
    "rule": ("rule", "a rule", "topics"),
    "alert": ("alert", "an alert", "name"),
    "derive": ("derived metric", "a derive table", "topic"),
    "session": ("session rule", "a session table", "topic"),
}
"""Each kind of table: what one is called, how an unknown field names it, and the field that
says what it is for."""
_MSGSPEC = re.compile(r"(?P<problem>.*?)(?: - at `\$(?P<path>.*)`)?", re.DOTALL)
_STEP = re.compile(r"\.([^.\[\]]+)|\[(\d+)\]")
_UNKNOWN = re.compile(r"Object contains unknown field `(.+)`")
_MISSING = re.compile(r"Object missing required field `(.+)`")
_OVER = re.compile(r"Expected `int` <= \d+")
_GOT = re.compile(r", got `[^`]*`$")
_OWN = re.compile(r"Expected |Object |Invalid ")


def one_line(error: ValidationError, document: Mapping[str, Any]) -> str:
    """What `error`, raised converting `document` to a `RulesFile`, says to its reader."""
    found = _MSGSPEC.fullmatch(str(error))
    assert found is not None  # the pattern matches any text
    problem = found["problem"]
    steps: list[str | int] = [
        key if index == "" else int(index) for key, index in _STEP.findall(found["path"] or "")
    ]
    if not steps:
        if unknown := _UNKNOWN.fullmatch(problem):
            return (
                f"unknown table {unknown[1]!r}; a rules file holds [[rule]], [[alert]], "
                f"[[derive]] and [[session]] tables{_near(unknown[1], _fields_at([]))}"
            )
        return problem
    kind = str(steps[0])
    noun, _, naming = _KINDS[kind]
    if len(steps) == 1 or (len(steps) == 2 and problem.startswith("Expected `object`")):
        return f"write each {noun} as a [[{kind}]] table"
    table = _at(document, steps[:2])
    head = f"{kind} {int(steps[1]) + 1}{_named(table, naming)}"
    return f"{head}: {_said(problem, steps, document)}"


def _said(problem: str, steps: Sequence[str | int], document: Mapping[str, Any]) -> str:
    """`field: problem` for a problem at `steps` (past the table's kind and index)."""
    inner = steps[2:]
    shape = "".join(f".{s}" if isinstance(s, str) else "[]" for s in steps)[1:]
    field = ".".join(_until_list(inner))
    if unknown := _UNKNOWN.fullmatch(problem):
        known = _fields_at(steps)
        near = _near(unknown[1], known)
        if not inner:
            table = _KINDS[str(steps[0])][1]
            return f"{unknown[1]}: unknown field; {table} has {', '.join(known)}{near}"
        return f"{field}: unknown key {unknown[1]!r}; {field} has {', '.join(known)}{near}"
    if missing := _MISSING.fullmatch(problem):
        return f"{missing[1]}: missing" if not inner else f"{field}: {missing[1]} is missing"
    if not _OWN.match(problem):  # ours: a duration's, or a table's `field: problem`
        if not inner:
            return problem
        return f"{field}.{problem}" if _fields_at(steps) else f"{field}: {problem}"
    value = _at(document, steps)
    parent = _at(document, steps[:-1])
    template = PROBLEMS.get(shape + ">") if _OVER.match(problem) else None
    template = template or PROBLEMS.get(shape)
    if template is not None:
        try:
            return f"{field}: " + template.format(
                value=value, described=describe(value), parent=parent
            )
        except (KeyError, IndexError, TypeError):
            pass
    return f"{field}: {_plain(problem, value)}"


def _plain(problem: str, value: object) -> str:
    """msgspec's own wording, for a field with none of its own."""
    if problem.startswith("Expected `array` of length >= 1"):
        return "empty"
    if problem.startswith("Expected `array`, got"):
        return f"expected a list, got {describe(value)}"
    if problem.startswith("Expected `object`, got"):
        return f"expected a table, got {describe(value)}"
    expected = _GOT.sub("", problem).replace("`", "")
    return f"{expected[0].lower()}{expected[1:]}, got {describe(value)}"


def _until_list(steps: Sequence[str | int]) -> list[str]:
    names = []
    for step in steps:
        if isinstance(step, int):
            break
        names.append(step)
    return names


def _at(document: Mapping[str, Any], steps: Sequence[str | int]) -> Any:
    """The value at `steps` in the document, None where there is none."""
    value: Any = document
    for step in steps:
        try:
            value = value[step]
        except (KeyError, IndexError, TypeError):
            return None
    return value


def _named(table: object, naming: str) -> str:
    """` (what the table is for)`: a rule's topics, an alert's name, a derived or session
    topic; empty where the table does not say it."""
    named = table.get(naming) if isinstance(table, dict) else None
    if isinstance(named, list) and named:
        return f" ({', '.join(map(str, named))})"
    if isinstance(named, str) and named:
        return f" ({named})"
    return ""


def _fields_at(steps: Sequence[str | int]) -> tuple[str, ...]:
    """The fields of the table at `steps` (none where there is no table)."""
    info = _table_or_list(inspect.type_info(RulesFile))
    for step in steps:
        if isinstance(info, inspect.ListType):
            info = _table_or_list(info.item_type)
        elif isinstance(info, inspect.StructType):
            info = _table_or_list(next(f.type for f in info.fields if f.encode_name == step))
    if isinstance(info, inspect.StructType):
        return tuple(field.encode_name for field in info.fields)
    return ()


def _table_or_list(info: inspect.Type) -> inspect.Type:
    """The table or list an optional, constrained or described field holds."""
    while isinstance(info, inspect.UnionType | inspect.Metadata):
        if isinstance(info, inspect.Metadata):
            info = info.type
        else:
            kinds = (inspect.StructType, inspect.ListType)
            info = next((t for t in info.types if isinstance(t, kinds)), info.types[0])
    return info


def _near(given: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(given, known, n=1)
    return f" (did you mean {close[0]}?)" if close else ""
