"""The settings the docs name, against the code (`pushsvc.config`): every `PUSHSVC_*` variable
of docs/*.md and README.md is a live setting or one the tools read, and a retired setting is
named as such in one place, docs/configuration.md's "Retired settings", whose table is the
code's list (`RETIRED`: what stops the process). A page that went on listing a retired setting
as live is a stale claim a reader would act on."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pushsvc.config import RETIRED, TOOL_PREFIXES, TOOL_VARIABLES, Settings
from pushsvc.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
PAGES = (*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md")
CONFIGURATION = ROOT / "docs" / "configuration.md"
VARIABLE = re.compile(r"\bPUSHSVC_[A-Z0-9_]*[A-Z0-9]\b")
# A table row whose second cell is a flag: a row of a settings table (variable | flag | ...).
SETTING_ROW = re.compile(r"^\|[^|]*\|\s*`(--[a-z0-9-]+)`", re.MULTILINE)
MISSPELT = "PUSHSVC_JWT_KYE"
"""security.md shows what a misspelt variable is answered with."""


def _retired_section() -> str:
    text = CONFIGURATION.read_text(encoding="utf-8")
    after = text.split("\n## Retired settings\n", 1)[1]
    return re.split(r"\n#{1,6} ", after, maxsplit=1)[0]


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def test_every_variable_the_docs_name_is_a_live_setting_or_the_tools() -> None:
    live = {spec.variable for spec in Settings.specs()} | TOOL_VARIABLES
    stale = [
        f"{page.relative_to(ROOT)}:{number}: {name}"
        for page in PAGES
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1)
        for name in VARIABLE.findall(line)
        if name not in live and not name.startswith(TOOL_PREFIXES) and name != MISSPELT
    ]
    assert stale == []


def test_the_misspelt_example_is_still_refused_as_the_page_says() -> None:
    with pytest.raises(ConfigError, match=f"unknown variable {MISSPELT} .*PUSHSVC_JWT_KEY"):
        Settings.load(environ={MISSPELT: "x"})


def test_the_retired_table_is_the_codes_list_of_retired_settings() -> None:
    rows = re.findall(r"^\| `(--[a-z0-9-]+)`", _retired_section(), re.MULTILINE)
    assert sorted(rows) == sorted(_flag(name) for name in RETIRED)


def test_no_settings_table_lists_a_retired_flag() -> None:
    retired = {_flag(name) for name in RETIRED}
    listed = [
        f"{page.relative_to(ROOT)}: {flag}"
        for page in PAGES
        for flag in SETTING_ROW.findall(page.read_text(encoding="utf-8"))
        if flag in retired
    ]
    assert listed == []


def test_every_retired_setting_stops_the_process_pointing_here() -> None:
    for name in RETIRED:
        with pytest.raises(ConfigError, match=r"docs/configuration\.md|PUSHSVC_PARTITIONS"):
            Settings.load(environ={f"PUSHSVC_{name.upper()}": "1"})
