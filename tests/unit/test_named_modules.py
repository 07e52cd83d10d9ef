"""Every `pushsvc.<module>[.<name>]` that a docstring, a comment or a doc page names exists:
names go stale when modules move, and a reader follows them."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NAMED = re.compile(r"`(pushsvc(?:\.[A-Za-z_][A-Za-z0-9_]*)+)")
PATH = re.compile(r"`((?:[a-z_]+/)+[a-z_]+\.(?:py|lua|js))`")
# The same names written bare, as comments (Python's and Lua's) write them, `pushsvc/` or not.
BARE_PATH = re.compile(r"(?<![\w/.`-])((?:[a-z_]+/)+[a-z_]+\.(?:py|lua))\b")
NOT_PYTHON = {
    "pushsvc.js",  # the browser client, a file
    "pushsvc.publish",  # scopes, not modules
    "pushsvc.subscribe",
}


def _resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            found: object = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attribute in parts[cut:]:
            if not hasattr(found, attribute):
                return False
            found = getattr(found, attribute)
        return True
    return False


def test_every_named_module_and_attribute_exists() -> None:
    pages = [p for p in (ROOT / "docs").rglob("*.md") if "journal" not in p.parts]
    files = [*(ROOT / "src" / "pushsvc").rglob("*.py"), *pages, ROOT / "README.md"]
    stale = sorted(
        f"{path.relative_to(ROOT)}: {name}"
        for path in files
        for name in set(NAMED.findall(path.read_text()))
        if name not in NOT_PYTHON and not _resolves(name)
    )
    assert not stale, "\n".join(stale)


def test_every_named_source_file_exists() -> None:
    """A path such as `broker/redis/log.py` is read from the package, `src/` or the repository
    (the journal keeps the names a change had when it was measured, and is left out)."""
    package = ROOT / "src" / "pushsvc"
    pages = [p for p in (ROOT / "docs").rglob("*.md") if "journal" not in p.parts]
    files = [*package.rglob("*.py"), *package.rglob("*.lua"), *pages, ROOT / "README.md"]
    wheres = (package, ROOT, ROOT / "src", package / "static", package / "broker")
    stale = sorted(
        f"{path.relative_to(ROOT)}: {name}"
        for path in files
        for name in set(PATH.findall(path.read_text()))
        if not any((where / name).exists() for where in wheres)
    )
    assert not stale, "\n".join(stale)


def test_every_source_file_a_comment_names_exists() -> None:
    """Comments and docstrings in Python and Lua name files bare (`pushsvc/core/lateness.py's
    rule`): those names go stale as quietly as quoted ones."""
    package = ROOT / "src" / "pushsvc"
    files = [*package.rglob("*.py"), *package.rglob("*.lua")]
    wheres = (package, ROOT, ROOT / "src", package / "broker")
    stale = sorted(
        f"{path.relative_to(ROOT)}: {name}"
        for path in files
        for name in set(BARE_PATH.findall(path.read_text()))
        if not any((where / name.removeprefix("pushsvc/")).exists() for where in wheres)
    )
    assert not stale, "\n".join(stale)
