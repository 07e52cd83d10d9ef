"""docs/configuration.md against the settings themselves (`pushsvc.config`): every setting has
its row, with its variable, its flag and its default, under its group's heading, and no row
names a setting that does not exist; every variable the server leaves to the tools is in the
page too. `serve --help` shows the same groups in the same order."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from pushsvc.cli import main
from pushsvc.config import GROUPS, TOOL_PREFIXES, TOOL_VARIABLES, Settings

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


def _headings_of_rows() -> dict[str, str]:
    """The heading (## or ###) each setting's row stands under."""
    heading, found = "", {}
    for line in PAGE.read_text(encoding="utf-8").splitlines():
        if line.startswith(("## ", "### ")):
            heading = line.lstrip("#").strip()
        row = _ROW.match(line)
        if row is not None:
            for variable in re.findall(r"`(PUSHSVC_\w+)`", row[1]):
                found[variable] = heading
    return found


def test_every_setting_stands_under_its_group_in_the_page_and_the_groups_in_order() -> None:
    headings = _headings_of_rows()
    specs = Settings.specs()
    assert {spec.variable: headings[spec.variable] for spec in specs} == {
        spec.variable: spec.group for spec in specs
    }
    page = PAGE.read_text(encoding="utf-8")
    at = [page.index(f"# {group}\n") for group in GROUPS]
    assert at == sorted(at)


def test_serve_help_lists_the_settings_under_their_groups_newcomers_first() -> None:
    help_text = CliRunner().invoke(main, ["serve", "--help"], terminal_width=200).output
    titles = [line[:-1] for line in help_text.splitlines() if line.endswith(":") and line[0] != " "]
    assert titles == [*GROUPS, "Options"]
    sections = re.split(r"^\S.*:$", help_text, flags=re.MULTILINE)[1:]
    for group, section in zip(GROUPS, sections, strict=False):
        flags = re.findall(r"^  (--[\w-]+)", section, flags=re.MULTILINE)
        assert flags == [spec.flag for spec in Settings.specs() if spec.group == group], group
