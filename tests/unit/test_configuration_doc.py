"""docs/configuration.md against the settings themselves (`pushsvc.config`): every setting has
its row, with its variable, its flag and its default, and no row names a setting that does not
exist; every variable the server leaves to the tools is in the page too."""

from __future__ import annotations

import re
from pathlib import Path

from pushsvc.config import TOOL_PREFIXES, TOOL_VARIABLES, Settings

PAGE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
_ROW = re.compile(r"^\| (`PUSHSVC_[^|]+) \| (`--[^|]+) \| ([^|]+) \| [^|]+ \|$", re.MULTILINE)


def _rows() -> list[tuple[list[str], list[str], list[str]]]:
    """(variables, flags, defaults) of each row of the settings table, in code spans."""
    text = PAGE.read_text(encoding="utf-8")
    return [
        (re.findall(r"`(PUSHSVC_\w+)`", variables), re.findall(r"`(--[\w-]+)`", flags),
         re.findall(r"`([^`]*)`", defaults))
        for variables, flags, defaults in _ROW.findall(text)
    ]  # fmt: skip


def test_every_setting_has_its_row_with_its_flag_and_default() -> None:
    documented: dict[str, tuple[str, list[str]]] = {}
    for variables, flags, defaults in _rows():
        assert len(variables) == len(flags), (variables, flags)
        for index, (variable, flag) in enumerate(zip(variables, flags, strict=True)):
            # `a`, `b` defaults pair with `A`, `B` variables; one default serves them all.
            default = defaults[index] if len(defaults) == len(variables) else None
            documented[variable] = (flag, [default] if default is not None else defaults)
    specs = {spec.variable: spec for spec in Settings.specs()}
    assert set(documented) == set(specs)
    for variable, (flag, defaults) in documented.items():
        spec = specs[variable]
        assert flag == spec.flag, variable
        if spec.default:  # an unset default is said in words ("unset: auth off")
            assert spec.default in defaults, (variable, spec.default, defaults)


def test_the_variables_left_to_the_tools_are_named() -> None:
    text = PAGE.read_text(encoding="utf-8")
    for variable in sorted(TOOL_VARIABLES):
        assert f"`{variable}`" in text, variable
    for prefix in TOOL_PREFIXES:
        assert f"`{prefix}*`" in text, prefix
