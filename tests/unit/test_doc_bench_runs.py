"""docs/performance.md keeps a figure only with a command that still runs: every
`python -m bench.NAME` it cites names a module of bench/ (`bench/NAME.py`, or a package with a
`__main__`). Unlike tests/unit/test_doc_bench_commands.py, which lets a paragraph that says
"removed" name a withdrawn benchmark, here no exception is made: the figures of a withdrawn
benchmark are history, and live in docs/journal/withdrawn-benchmarks.md with their commands."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "performance.md"
RUN = re.compile(r"python -m bench\.([\w.]*\w)")


def _runs(name: str) -> bool:
    path = ROOT / "bench" / Path(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__main__.py").is_file()


def commands_that_do_not_run(text: str) -> list[str]:
    """The `python -m bench.NAME` of `text` whose NAME is no module of bench/, in order."""
    return [name for name in RUN.findall(text) if not _runs(name)]


def test_every_benchmark_command_of_the_performance_page_runs() -> None:
    assert commands_that_do_not_run(PAGE.read_text(encoding="utf-8")) == []


def test_a_command_of_a_benchmark_that_is_gone_is_found() -> None:
    text = (
        "`python -m bench.fanout --rounds 3` and `python -m bench.peers.flask_sse`, then "
        "`python -m bench.hostile_streams --attack live` (removed on 2026-11-28)."
    )
    assert commands_that_do_not_run(text) == ["peers.flask_sse", "hostile_streams"]
