"""Every relative link of README.md and of the pages under docs/ reaches something: a file or
folder of the repository, and for `#anchor` a heading of that page, slugged as GitHub slugs
headings (lowercase; spaces to `-`; punctuation dropped but `-` and `_`; a repeated heading
gets `-1`, `-2`, ...). A page moved or a heading renamed breaks the test, not the reader."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])

_FENCE = re.compile(r"^\s*(```|~~~)")
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
# [text](target) and ![alt](target); the text may hold one level of brackets (an image).
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s+<?(\S+?)>?(?:\s.*)?$")
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def _prose(text: str) -> Iterator[tuple[int, str]]:
    """The page's lines outside fenced code."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, line


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text (its markdown as written)."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = text.replace("`", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)  # \w: letters, digits and `_`, any script
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for _, line in _prose(page.read_text(encoding="utf-8")):
        found = _HEADING.match(line)
        if found is None:
            continue
        base = slug(found[2])
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return out


def links(page: Path) -> Iterator[tuple[int, str]]:
    """Every link's target (inline, image or reference definition), with its line: a link whose
    text is code (`[`x`](y)`) stays one once the code span is blanked."""
    for number, line in _prose(page.read_text(encoding="utf-8")):
        line = _CODE_SPAN.sub("", line)  # `[not](a link)` in code
        for found in _LINK.finditer(line):
            yield number, found[1]
        reference = _REFERENCE.match(line)
        if reference is not None:
            yield number, reference[1]


def _problem(page: Path, target: str) -> str | None:
    if _SCHEME.match(target) or target.startswith("//"):
        return None  # another site's: not this test's to reach
    path_part, _, anchor = target.partition("#")
    destination = (page.parent / unquote(path_part)).resolve() if path_part else page
    if not destination.exists():
        return f"no such file or folder: {destination}"
    if anchor and destination.suffix == ".md" and unquote(anchor) not in anchors(destination):
        return f"no heading #{anchor} in {destination.name}"
    return None


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_relative_link_reaches_a_file_and_a_heading(page: Path) -> None:
    problems = [
        f"{page.relative_to(ROOT)}:{number}: ({target}) {problem}"
        for number, target in sorted(set(links(page)))
        if (problem := _problem(page, target)) is not None
    ]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("heading", "expected"),
    [
        ("Every core of one machine", "every-core-of-one-machine"),
        ("`GET /rules`, and a bad file", "get-rules-and-a-bad-file"),
        ("Step 3: the POST path and the closing measurement (2026-11-23)",
         "step-3-the-post-path-and-the-closing-measurement-2026-11-23"),
        ("A client that leaves (`deliver/peer_watch.py`)",
         "a-client-that-leaves-deliverpeer_watchpy"),
        ("HTTP API (v1)", "http-api-v1"),
        ("Python: `Client` and `AsyncClient`", "python-client-and-asyncclient"),
        ("Browser: `/static/pushsvc.js`", "browser-staticpushsvcjs"),
        ("Topic limits (`--max-topics`, `--topic-ttl`)", "topic-limits---max-topics---topic-ttl"),
        ("See [the demo](demo.md)", "see-the-demo"),
    ],
)  # fmt: skip
def test_headings_slug_as_github_slugs_them(heading: str, expected: str) -> None:
    assert slug(heading) == expected


def test_a_repeated_heading_gets_a_number(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# A\n\n## Decisions\n\n```sh\n# not a heading\n```\n\n## Decisions\n")
    assert anchors(page) == {"a", "decisions", "decisions-1"}


def test_a_link_to_a_missing_page_or_heading_is_found(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# A\n\n## The part (`x.py`)\n", encoding="utf-8")
    page = tmp_path / "b.md"
    page.write_text(
        "[ok](a.md#the-part-xpy), [ok](a.md), [web](https://example.com/x#y), `[code](c.md)`\n"
        "[wrong heading](a.md#nope) and ![missing](c.png)\n"
        "```sh\n[in a fence](d.md)\n```\n"
        "[ref]: e.md\n",
        encoding="utf-8",
    )
    found = {target: _problem(page, target) for _, target in links(page)}
    assert set(found) == {"a.md#the-part-xpy", "a.md", "https://example.com/x#y",
                          "a.md#nope", "c.png", "e.md"}  # fmt: skip
    assert [target for target, problem in found.items() if problem] == ["a.md#nope", "c.png",
                                                                        "e.md"]  # fmt: skip


def test_the_pages_have_links_to_check() -> None:
    assert len(list(links(ROOT / "README.md"))) >= 20
