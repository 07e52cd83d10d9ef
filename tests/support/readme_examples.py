"""The examples of README.md and of the reference pages in docs/: their fenced `sh` and `python`
blocks, the markers that say how to take them, and the ports and Redis URLs in their text.

A marker is an HTML comment (invisible on GitHub) on the last non-blank line before a block:

    <!-- example: not run (needs Docker) -->
    <!-- example: error expected (the id is from another server, so it answers a gap) -->

`not run` keeps the block out of tests/system/test_readme_examples.py; `error expected` runs it
but lets its output hold an error body. Either needs its reason in the parentheses. The same
markers hold in every file that test runs (its `PAGES`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

RUN_LANGUAGES = frozenset({"sh", "python"})
# Fences a reader would take for shell or Python that the runner would not see: spell them
# `sh` or `python` (or mark them), so that no example goes unrun by its spelling.
UNRUN_SPELLINGS = frozenset(
    {"bash", "shell", "console", "shell-session", "zsh", "py", "python3", "pycon", "ipython"}
)

_FENCE = re.compile(r"^```(?P<lang>[\w+-]*)\s*$")
_INDENTED_FENCE = re.compile(r"^\s+```")
_MARKER = re.compile(r"^<!-- example: (?P<kind>[^(]*?) \((?P<reason>[^)]*)\) -->$")
_MARKER_KINDS = ("not run", "error expected")
_ADDRESS = re.compile(r"(?P<lead>\b(?:localhost|127\.0\.0\.1):|--port[ =])(?P<port>\d{2,5})\b")


class ReadmeError(ValueError):
    """A marker or a fence that the example test cannot take as it stands."""


@dataclass(frozen=True)
class Block:
    file: str
    """The file it is in, as the repository names it (`README.md`, `docs/api.md`)."""
    line: int
    """Line of the opening fence in that file (1-based)."""
    lang: str
    text: str
    not_run: str | None = None
    """Why it is not run, from `<!-- example: not run (...) -->`."""
    error_expected: str | None = None
    """Why an error in its output is right, from `<!-- example: error expected (...) -->`."""

    @property
    def name(self) -> str:
        """Where it is, `file:line`: the test's id for it, and the start of its problems."""
        return f"{self.file}:{self.line}"


def read_blocks(path: Path, file: str | None = None) -> list[Block]:
    """Every fenced `sh` and `python` block of the file, in order, with its marker; `file` is
    how blocks and errors name it (default: the file's own name).

    Raises ReadmeError for a marker that is malformed, has no reason or is not right before an
    `sh` or `python` block, and for a fence spelt so that the runner would skip it unseen.
    """
    file = path.name if file is None else file
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    pending: tuple[int, str, str] | None = None  # line, kind, reason of the last marker
    index = 0
    while index < len(lines):
        line = lines[index]
        where = f"{file}:{index + 1}"
        if line.startswith("<!-- example:"):
            if pending is not None:
                raise ReadmeError(f"{file}:{pending[0]}: marker not followed by a block")
            found = _MARKER.match(line)
            if found is None or found["kind"] not in _MARKER_KINDS:
                raise ReadmeError(
                    f"{where}: write a marker as `<!-- example: not run (REASON) -->` or "
                    f"`<!-- example: error expected (REASON) -->`, not {line!r}"
                )
            if not found["reason"].strip():
                raise ReadmeError(f"{where}: the marker gives no reason")
            pending = (index + 1, found["kind"], found["reason"].strip())
            index += 1
            continue
        if _INDENTED_FENCE.match(line):
            raise ReadmeError(f"{where}: an indented fence, which the runner would not see")
        fence = _FENCE.match(line)
        if fence is None:
            if line.strip() and pending is not None:
                raise ReadmeError(f"{file}:{pending[0]}: marker not right before a block")
            index += 1
            continue
        lang = fence["lang"]
        end = index + 1
        while end < len(lines) and not lines[end].startswith("```"):
            end += 1
        if end == len(lines):
            raise ReadmeError(f"{where}: a fence that never closes")
        if lang in UNRUN_SPELLINGS:
            raise ReadmeError(f"{where}: spell the fence `sh` or `python`, not {lang!r}")
        if lang in RUN_LANGUAGES:
            kind, reason = (pending[1], pending[2]) if pending is not None else ("", "")
            blocks.append(
                Block(
                    file=file,
                    line=index + 1,
                    lang=lang,
                    text="\n".join(lines[index + 1 : end]) + "\n",
                    not_run=reason if kind == "not run" else None,
                    error_expected=reason if kind == "error expected" else None,
                )
            )
        elif pending is not None:
            raise ReadmeError(
                f"{file}:{pending[0]}: marker before a {lang or 'plain'} block, which is never run"
            )
        pending = None
        index = end + 1
    if pending is not None:
        raise ReadmeError(f"{file}:{pending[0]}: marker not followed by a block")
    return blocks


def ports_named(text: str) -> set[int]:
    """The ports a block names: `localhost:N`, `127.0.0.1:N` (URLs, Redis's too), `--port N`."""
    return {int(found["port"]) for found in _ADDRESS.finditer(text)}


def substitute_ports(text: str, ports: Mapping[int, int]) -> str:
    """The block's text with each port it names replaced by `ports[port]`: the examples'
    8000 and 6379 become free ports of the test's own (KeyError for one not mapped)."""
    return _ADDRESS.sub(lambda found: f"{found['lead']}{ports[int(found['port'])]}", text)
