"""The generated fast paths for the server's default configuration match the reviewed golden file.

``pushsvc/stats/fastpath_default.py.txt`` is what ``fastpath.py`` generates for the default
windows and statistics; a change to the generator shows up here as a diff to review. After a
deliberate change:
``PUSHSVC_UPDATE_GOLDEN=1 .venv-test/bin/pytest tests/unit/test_fastpath_golden.py``.
"""

from __future__ import annotations

import difflib
import os
import traceback

import pytest

from pushsvc.config import Settings
from pushsvc.stats import STAT_KEYS, WindowSpec
from pushsvc.stats.fastpath import DEFAULT_CONFIGURATION, GOLDEN_PATH, generate

REGENERATE = "PUSHSVC_UPDATE_GOLDEN=1 .venv-test/bin/pytest tests/unit/test_fastpath_golden.py"


def test_default_configuration_is_the_servers() -> None:
    defaults = {spec.field: spec.parse(spec.default) for spec in Settings.specs()}
    widths, labels, stats = DEFAULT_CONFIGURATION
    assert widths == defaults["windows_us"]
    assert labels == Settings(windows_us=widths).window_labels
    # A topic no rule matches has every statistic but rate.
    assert stats == Settings.load({}, {}).rules.default.stats == STAT_KEYS


def test_generated_source_matches_golden_file() -> None:
    source = generate(*DEFAULT_CONFIGURATION)
    if os.environ.get("PUSHSVC_UPDATE_GOLDEN") == "1":
        GOLDEN_PATH.write_text(source, encoding="utf-8")
    golden = GOLDEN_PATH.read_text(encoding="utf-8")
    if source != golden:
        diff = "".join(
            difflib.unified_diff(
                golden.splitlines(keepends=True),
                source.splitlines(keepends=True),
                fromfile=f"{GOLDEN_PATH.name} (committed)",
                tofile=f"{GOLDEN_PATH.name} (generated now)",
            )
        )
        pytest.fail(
            f"the generated fast paths differ from {GOLDEN_PATH}:\n{diff}\n"
            f"If the change is intended, regenerate and review the diff: {REGENERATE}",
            pytrace=False,
        )


def test_default_spec_runs_the_golden_source() -> None:
    widths, labels, stats = DEFAULT_CONFIGURATION
    fast = type(WindowSpec(widths, labels, stats).new())
    assert fast._fast_source == GOLDEN_PATH.read_text(encoding="utf-8")


def test_a_traceback_through_the_generated_source_shows_its_lines() -> None:
    """Tracebacks, pdb and profilers read source lines through linecache: the generated
    methods' lines are there, not blank."""
    windows = WindowSpec(*DEFAULT_CONFIGURATION).new()
    with pytest.raises(ValueError) as raised:
        windows.insert(0, "not a number")  # type: ignore[arg-type]
    generated = raised.traceback[-1]
    assert str(generated.path).startswith("<pushsvc.stats.fastpath")
    assert "float(value)" in str(generated.statement)
    assert "float(value)" in traceback.format_exception(raised.value)[-2]
