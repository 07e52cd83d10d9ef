"""docs/security.md's runnable examples: the blocks marked `<!-- run: name -->`, by name, and the
output an `<!-- expect: ... -->` right after one promises (tests/system/test_security_docs.py,
and the operator path)."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "security.md"
_BLOCK = re.compile(r"<!-- run: (?P<name>[\w-]+) -->\n```(?P<lang>\w+)\n(?P<code>.*?)```", re.S)
_EXPECT = re.compile(r"\n<!-- expect: (?P<out>.*?) -->")


def blocks() -> dict[str, str]:
    """The code of each `run:` block, by its name."""
    return {m["name"]: m["code"] for m in _BLOCK.finditer(DOC.read_text())}


def expected(name: str) -> str:
    """What block `name` prints, as the `expect:` after it says."""
    text = DOC.read_text()
    for block in _BLOCK.finditer(text):
        after = _EXPECT.match(text, block.end())
        if block["name"] == name and after is not None:
            return after["out"]
    raise AssertionError(f"no expect: after {name}")
