"""Every benchmark the docs tell a reader to run exists: each `python -m bench.NAME` and each
`bench/NAME.py` in README.md, docs/*.md and bench/README.md names a module of bench/. A bench
removed on purpose may still be named (its figures stand, with the command that made them)
where the page says so: in a paragraph that says "removed" and names it, which covers the
page's other mentions of it. On docs/performance.md no such exception is made for a command
(`python -m bench.NAME`): a figure stays there only with a command that still runs, and a
withdrawn benchmark's figures are history, in docs/journal/withdrawn-benchmarks.md. The journal
(docs/journal/) is history and is not checked.

And bench/ stays in proportion: at most 15 % of src/ in lines of Python, counted as
`find DIR -name '*.py' | xargs cat | wc -l` counts them. A benchmark earns its place with a
figure a reader uses or a comparison with a peer; the rest are withdrawn to the git history
(docs/performance.md, "Withdrawn benchmarks")."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CITED = re.compile(r"python -m bench\.([\w.]+)|\bbench/([\w/]+)\.py\b")
COMMAND = re.compile(r"python -m bench\.([\w.]*\w)")
BENCH_SHARE_OF_SRC = 0.15


def _exists(name: str) -> bool:
    path = ROOT / "bench" / Path(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__main__.py").is_file()


def _cited(paragraph: str) -> list[str]:
    return [run.rstrip(".") or path.replace("/", ".") for run, path in CITED.findall(paragraph)]


def missing_benches(text: str) -> list[str]:
    """The bench modules `text` cites that do not exist, but those a paragraph of it that says
    "removed" names."""
    paragraphs = re.split(r"\n\s*\n", text)
    removed = {name for p in paragraphs if "removed" in p for name in _cited(p)}
    return [
        name
        for paragraph in paragraphs
        for name in _cited(paragraph)
        if name not in removed and not _exists(name)
    ]


def _pages() -> list[Path]:
    return [ROOT / "README.md", ROOT / "bench" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_every_bench_the_docs_cite_exists() -> None:
    missing = {
        str(page.relative_to(ROOT)): found
        for page in _pages()
        if (found := missing_benches(page.read_text(encoding="utf-8")))
    }
    assert missing == {}


def test_a_bench_that_is_gone_fails_the_check() -> None:
    assert missing_benches("Run `python -m bench.fanout` and `bench/aggregator.py`.") == []
    text = "Measured with `python -m bench.nowhere --rounds 3` and `bench/gone/away.py`."
    assert missing_benches(text) == ["nowhere", "gone.away"]
    assert missing_benches(text + " The bench was removed since.") == []
    # A note elsewhere on the page covers the bench it names, and no other.
    note = "\n\n`bench/nowhere.py` was removed on 2026-11-28."
    assert missing_benches(text + note) == ["gone.away"]


def commands_that_do_not_run(text: str) -> list[str]:
    """The `python -m bench.NAME` of `text` whose NAME is no module of bench/, in order."""
    return [name for name in COMMAND.findall(text) if not _exists(name)]


def test_every_benchmark_command_of_the_performance_page_runs() -> None:
    page = ROOT / "docs" / "performance.md"
    assert commands_that_do_not_run(page.read_text(encoding="utf-8")) == []


def test_a_command_of_a_benchmark_that_is_gone_is_found() -> None:
    text = (
        "`python -m bench.fanout --rounds 3` and `python -m bench.peers.flask_sse`, then "
        "`python -m bench.hostile_streams --attack live` (removed on 2026-11-28)."
    )
    assert commands_that_do_not_run(text) == ["peers.flask_sse", "hostile_streams"]


def python_lines(tree: Path) -> int:
    """Lines of every `.py` file under `tree`, as `cat | wc -l` counts them (newlines)."""
    return sum(path.read_bytes().count(b"\n") for path in tree.rglob("*.py"))


def test_bench_stays_in_proportion_to_src() -> None:
    bench, src = python_lines(ROOT / "bench"), python_lines(ROOT / "src")
    assert src > 0
    assert bench <= BENCH_SHARE_OF_SRC * src, (
        f"bench/ is {bench} lines, {bench / src:.1%} of src/'s {src}: fold or withdraw a "
        f"benchmark (docs/performance.md, 'Withdrawn benchmarks')"
    )
