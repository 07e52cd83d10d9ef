"""How tests/system/test_readme_examples.py reads README.md and the reference pages: their blocks
and markers, the ports it moves, and how it takes each shell command
(tests/support/readme_examples.py, newcomer.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.newcomer import Kind, shell_commands
from support.readme_examples import Block, ReadmeError, read_blocks, substitute_ports


def _blocks(tmp_path: Path, text: str) -> list[Block]:
    path = tmp_path / "README.md"
    path.write_text(text, encoding="utf-8")
    return read_blocks(path)


def test_sh_and_python_blocks_in_order_with_their_lines_and_markers(tmp_path: Path) -> None:
    text = (
        "# title\n"
        "```sh\nfirst\n```\n"
        "text\n"
        "```toml\nnot = 'run'\n```\n"
        "<!-- example: not run (needs Docker) -->\n"
        "```sh\ndocker compose up\n```\n"
        "\n"
        "<!-- example: error expected (a bad topic name is a 400) -->\n"
        "\n"
        "```python\nprint(1)\n```\n"
    )
    blocks = _blocks(tmp_path, text)
    assert [(b.line, b.lang, b.text) for b in blocks] == [
        (2, "sh", "first\n"),
        (10, "sh", "docker compose up\n"),
        (16, "python", "print(1)\n"),
    ]
    assert [(b.not_run, b.error_expected) for b in blocks] == [
        (None, None),
        ("needs Docker", None),
        (None, "a bad topic name is a 400"),
    ]
    assert blocks[1].name == "README.md:10"


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("<!-- example: not run () -->\n```sh\nx\n```\n", "gives no reason"),
        ("<!-- example: not run -->\n```sh\nx\n```\n", "write a marker as"),
        ("<!-- example: skip (why) -->\n```sh\nx\n```\n", "write a marker as"),
        ("<!-- example: not run (why) -->\nprose\n```sh\nx\n```\n", "not right before a block"),
        ("<!-- example: not run (why) -->\n```toml\nx\n```\n", "before a toml block"),
        ("```sh\nx\n```\n<!-- example: not run (why) -->\n", "not followed by a block"),
        ("```bash\nx\n```\n", "spell the fence `sh` or `python`"),
        ("```py\nx\n```\n", "spell the fence `sh` or `python`"),
        ("```sh\nx\n", "never closes"),
        ("* a list item:\n\n  ```sh\n  x\n  ```\n", "an indented fence"),
    ],
)
def test_a_marker_or_fence_the_runner_cannot_take_is_refused(
    tmp_path: Path, text: str, complaint: str
) -> None:
    with pytest.raises(ReadmeError, match=complaint):
        _blocks(tmp_path, text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("curl localhost:8000/topics", "curl localhost:18000/topics"),
        ("Client('http://127.0.0.1:8000')", "Client('http://127.0.0.1:18000')"),
        ("pushsvc web --port 8001 &", "pushsvc web --port 18001 &"),
        ("redis://localhost:6379/0", "redis://localhost:16379/0"),
        ('"ts": 1763700000.5', '"ts": 1763700000.5'),
        ("gunicorn -b 0.0.0.0:8000", "gunicorn -b 0.0.0.0:8000"),
    ],
)
def test_ports_move_to_the_tests_own(text: str, expected: str) -> None:
    ports = {8000: 18000, 8001: 18001, 6379: 16379}
    assert substitute_ports(text, ports) == expected


def _commands(text: str) -> list[tuple[int, Kind, bool, tuple[str, ...]]]:
    block = Block(file="README.md", line=10, lang="sh", text=text)
    return [(c.line, c.kind, c.background, c.words) for c in shell_commands(block, text)]


def test_blocks_commands_and_errors_name_the_page_they_are_on(tmp_path: Path) -> None:
    path = tmp_path / "api.md"
    path.write_text("# API\n\n```sh\ncurl localhost:8000/topics\n```\n", encoding="utf-8")
    (block,) = read_blocks(path, "docs/api.md")
    assert block.name == "docs/api.md:3"
    (command,) = shell_commands(block, block.text)
    assert command.where == "docs/api.md:4"
    path.write_text("# API\n```bash\nx\n```\n", encoding="utf-8")
    with pytest.raises(ReadmeError, match=r"^docs/api\.md:2: spell the fence"):
        read_blocks(path, "docs/api.md")


def test_commands_are_logical_lines_taken_by_what_they_run() -> None:
    text = (
        "pushsvc serve &                  # a server, kept\n"
        "curl -N localhost:1/stream &     # a stream, looked at later\n"
        "# a comment line\n"
        "curl -d '{\"value\": 1}' \\\n"
        "     localhost:1/topics/a/events\n"
        "printf 'x' | pushsvc publish orders\n"
        "PUSHSVC_X=1 pushsvc subscribe orders 'sensors.*'\n"
        "pushsvc subscribe orders --count 1\n"
        "pushsvc alerts\n"
        "pushsvc demo --speed 60\n"
        "pushsvc demo --duration 3s\n"
        ".venv/bin/pushsvc aggregate\n"
    )
    assert _commands(text) == [
        (11, Kind.SERVER, True, ("pushsvc", "serve")),
        (12, Kind.FOLLOW, True, ("curl", "-N", "localhost:1/stream")),
        (14, Kind.PLAIN, False, ("curl", "-d", '{"value": 1}', "localhost:1/topics/a/events")),
        (16, Kind.PLAIN, False, ("pushsvc", "publish", "orders")),
        (17, Kind.FOLLOW, False, ("pushsvc", "subscribe", "orders", "sensors.*")),
        (18, Kind.PLAIN, False, ("pushsvc", "subscribe", "orders", "--count", "1")),
        (19, Kind.FOLLOW, False, ("pushsvc", "alerts")),
        (20, Kind.FOLLOW, False, ("pushsvc", "demo", "--speed", "60")),
        (21, Kind.PLAIN, False, ("pushsvc", "demo", "--duration", "3s")),
        (22, Kind.SERVER, False, (".venv/bin/pushsvc", "aggregate")),
    ]


def test_a_continued_line_goes_to_bash_as_written() -> None:
    text = "curl -H 'A: b' \\\n     localhost:1/x   # one command\n"
    (command,) = shell_commands(Block(file="README.md", line=1, lang="sh", text=text), text)
    assert command.text == text.rstrip("\n")
    assert command.program == "curl"
