"""A rules file's first problem as one line naming the table and the field (pure).

msgspec reports where the document fails its shape (`pushsvc.rules.file_shape`) as a path:
`Expected `int` >= 1 - at `$.rule[1].top[0].k``. This module says it as the rules file's
reader thinks of it: `rule 2 (shop.*): top: k for 'p' is 0; k is a whole number from 1 to
100`. The table is named by its place among its kind and what it is for (a rule's topics, an
alert's name, a derived or session topic); the field by its name down to the first list (an
entry of `top` is `top`, a key of the table `funnel` is `funnel.steps`). The words for a wrong
value are the field type's own (`pushsvc.rules.fields.wrong`), found by walking the Structs'
types along the path; an unknown field is told which the table has and the closest one.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from typing import Any

from msgspec import ValidationError, inspect

from pushsvc.rules.fields import describe
from pushsvc.rules.file_shape import RulesFile

__all__ = ["one_line"]

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
    _, words = _type_at(steps)
    wording = words.get("over") if _OVER.match(problem) else None
    try:
        said = (wording or words["wrong"]).format(
            value=_Shown(value), described=describe(value), parent=_at(document, steps[:-1])
        )
    except (KeyError, IndexError, TypeError):  # no words of its own, or not for this value
        said = _plain(problem, value)
    return f"{field}: {said}"


class _Shown:
    """A value as a wording shows it: cut to 80 characters, as `describe` does."""

    def __init__(self, value: object) -> None:
        self.value = value

    def __repr__(self) -> str:
        return repr(self.value)[:80]

    def __str__(self) -> str:
        return str(self.value)[:80]


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
    if naming == "topics" and isinstance(named, list) and named:
        return f" ({', '.join(map(str, named))})"
    return f" ({named})" if isinstance(named, str) and named else ""


def _fields_at(steps: Sequence[str | int]) -> tuple[str, ...]:
    """The fields of the table at `steps` (none where there is no table)."""
    info, _ = _type_at(steps)
    if isinstance(info, inspect.StructType):
        return tuple(field.encode_name for field in info.fields)
    return ()


def _type_at(steps: Sequence[str | int]) -> tuple[inspect.Type, dict[str, str]]:
    """The type of the value at `steps` and the words its annotations give (`wrong`)."""
    info: inspect.Type = inspect.type_info(RulesFile)
    for step in steps:
        info, _ = _held(info)
        if isinstance(info, inspect.ListType | inspect.DictType):
            info = info.item_type if isinstance(info, inspect.ListType) else info.value_type
        elif isinstance(info, inspect.StructType):
            info = next(f.type for f in info.fields if f.encode_name == step)
    return _held(info)


def _held(info: inspect.Type) -> tuple[inspect.Type, dict[str, str]]:
    """What an annotated or optional type holds (in a union: its table, list or dictionary,
    else its first kind), with the annotations' words."""
    words: dict[str, str] = {}
    while isinstance(info, inspect.Metadata | inspect.UnionType):
        if isinstance(info, inspect.Metadata):
            words = {**(info.extra or {}), **words}
            info = info.type
        else:
            info = next((t for t in info.types if _holds_fields(t)), info.types[0])
    return info, words


def _holds_fields(info: inspect.Type) -> bool:
    if isinstance(info, inspect.Metadata):
        info = info.type
    return isinstance(info, inspect.StructType | inspect.ListType | inspect.DictType)


def _near(given: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(given, known, n=1)
    return f" (did you mean {close[0]}?)" if close else ""
