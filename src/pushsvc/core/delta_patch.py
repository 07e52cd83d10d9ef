"""The positional delta format (`?delta=positional`): an update as the changes from the
previous update of its topic on the same stream (pure; the one owner of the format, for the
server and the Python client alike; pushsvc.js has the same twenty lines).

An update's *leaves* are its values in the order of its JSON text, depth first: every object
is descended into, except the value of a member named `event` (the producer's event, whose
shape is the producer's) or `key` (a group's key, whose members are tag names) and an empty
object; arrays, strings, numbers, booleans, null, and those objects are leaves. Its *layout*
is the list of their paths. A patch is one line of JSON,

    ["<topic>", i, value, i, value, …]

the topic, then each leaf that changed: its index in the base's leaves and its new value.
Applied to the base (the topic's previous update on the stream), it gives the update exactly,
member order included. A patch exists only when the update's layout is the base's (same
members, same order); otherwise the update goes whole. Values are carried as the full update
carries them (the JSON of the same double: floats are exact), and null is a value like any
other (RFC 7396 merge patches cannot set one: measured on the demo's topics, 19-26 % of their
updates could not be patched, and their patches were 22-28 % larger than these; see
docs/performance.md).

The descent never enters a member named `event` or `key`, so the paths' keys are window
labels and statistic names, which are never integer-like: a browser's `JSON.parse` keeps them
in the text's order (it puts integer-like keys first), and both ends count leaves alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import orjson

Path = tuple[str, ...]
Layout = tuple[Path, ...]

_OPAQUE = frozenset({"event", "key"})
"""Members whose value is one leaf whatever its shape."""

_layouts: dict[Layout, Layout] = {}
"""Layouts seen, interned: equal layouts are one object, compared by identity."""
_MAX_LAYOUTS = 4096


class PatchError(ValueError):
    """A patch that does not apply to the base at hand (an index past its leaves)."""


def _walk(value: dict[str, Any], prefix: Path, paths: list[Path], values: list[Any]) -> None:
    for name, member in value.items():
        path = (*prefix, name)
        if type(member) is dict and member and name not in _OPAQUE:
            _walk(member, path, paths, values)
        else:
            paths.append(path)
            values.append(member)


def leaves(fields: dict[str, Any]) -> tuple[Layout, list[Any]]:
    """The layout (interned) and leaf values of an update's parsed JSON."""
    paths: list[Path] = []
    values: list[Any] = []
    _walk(fields, (), paths, values)
    layout = tuple(paths)
    interned = _layouts.get(layout)
    if interned is None:
        if len(_layouts) >= _MAX_LAYOUTS:
            _layouts.clear()  # a layout is only compared: a fresh copy is as good
        interned = _layouts[layout] = layout
    return interned, values


def _same(a: Any, b: Any) -> bool:
    """Whether two leaves are the same JSON (4 is not 4.0, -0.0 is not 0.0)."""
    if a is b:
        return True
    kind = type(a)
    if kind is not type(b):
        return False
    if kind is float:
        return bool(a == b and (a != 0.0 or math.copysign(1.0, a) == math.copysign(1.0, b)))
    if kind is dict or kind is list:
        return orjson.dumps(a) == orjson.dumps(b)
    return bool(a == b)


def diff(topic: str, base: tuple[Layout, list[Any]], new: tuple[Layout, list[Any]]) -> bytes | None:
    """The patch from `base` to `new` (leaves of two updates of `topic`), or None when their
    layouts differ."""
    if base[0] is not new[0]:
        return None
    changes: list[Any] = [topic]
    for index, (old, value) in enumerate(zip(base[1], new[1], strict=True)):
        if not _same(old, value):
            changes.append(index)
            changes.append(value)
    return orjson.dumps(changes)


def topic_of(patch: Sequence[Any]) -> str:
    """The topic a parsed patch is of."""
    topic = patch[0] if patch else None
    if not isinstance(topic, str):
        raise PatchError("a patch starts with its topic")
    return topic


def apply(base: dict[str, Any], patch: Sequence[Any]) -> dict[str, Any]:
    """The update that `patch` (parsed) makes of `base` (parsed, left unchanged): `base`'s
    structure copied, the changed leaves replaced. PatchError when it does not apply."""
    paths: list[Path] = []
    values: list[Any] = []
    _walk(base, (), paths, values)
    count = len(paths)
    if len(patch) % 2 != 1:
        raise PatchError("a patch is its topic, then index and value pairs")
    for at in range(1, len(patch), 2):
        index = patch[at]
        if type(index) is not int or not 0 <= index < count:
            raise PatchError(f"leaf {index!r} is not one of the base's {count}")
        values[index] = patch[at + 1]
    return _rebuild(paths, values)


def _rebuild(paths: list[Path], values: list[Any]) -> dict[str, Any]:
    root: dict[str, Any] = {}
    for path, value in zip(paths, values, strict=True):
        node = root
        for name in path[:-1]:
            child = node.get(name)
            if child is None:
                child = node[name] = {}
            node = child
        node[path[-1]] = value
    return root
