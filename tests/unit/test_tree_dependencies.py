"""The trees around the package depend one way: tests/ may import bench/, harness/ and
research/ (to test them), bench/ may import harness/ and research/, and none of harness/,
bench/ or research/ imports the tests' own modules (`support`, `tests`), nor harness/ the
benchmarks or the research. Function-level imports count too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

FORBIDDEN = {
    "harness": {"support", "tests", "bench", "research"},
    "bench": {"support", "tests"},
    "research": {"support", "tests", "bench", "harness"},
}


def _top_level_imports(source: str) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.split(".")[0])
    return found


def _offenders(tree: str) -> list[str]:
    banned = FORBIDDEN[tree]
    return [
        f"{path.relative_to(ROOT)} imports {sorted(_top_level_imports(path.read_text()) & banned)}"
        for path in sorted((ROOT / tree).rglob("*.py"))
        if _top_level_imports(path.read_text()) & banned
    ]


@pytest.mark.parametrize("tree", sorted(FORBIDDEN))
def test_the_tree_imports_only_down(tree: str) -> None:
    assert not _offenders(tree)


def test_the_checker_sees_a_benchmark_that_imports_the_tests_support() -> None:
    imports = _top_level_imports("import os\nfrom support.live import PushsvcProcess\n")
    assert imports & FORBIDDEN["bench"] == {"support"}
    inside = _top_level_imports("def f():\n    import tests.conftest\n")
    assert inside & FORBIDDEN["bench"] == {"tests"}
