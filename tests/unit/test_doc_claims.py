"""Claims the docs make of the code and of the measurements, checked where they can go stale:
every error code docs/api.md lists is one the server answers, with the status its row gives;
every figure README.md quotes is the one docs/performance.md measured."""

from __future__ import annotations

import re
from pathlib import Path

from pushsvc import errors
from pushsvc.http.api.error_replies import status_of

ROOT = Path(__file__).resolve().parents[2]
CODE = re.compile(r"`([a-z]+(?:_[a-z]+)+)`")


def _section(page: str, heading: str) -> str:
    """The text under `heading` (a whole line), up to the next heading of any level."""
    after = page.split(f"\n{heading}\n", 1)[1]
    return re.split(r"\n#{1,6} ", after, maxsplit=1)[0]


def _request_errors() -> dict[str, type[errors.RequestError]]:
    """Every code a request can be answered with, and its error."""
    found: dict[str, type[errors.RequestError]] = {}
    pending: list[type[errors.RequestError]] = [errors.RequestError]
    while pending:
        kind = pending.pop()
        found[kind.code] = kind
        pending.extend(kind.__subclasses__())
    return found


def _api_errors() -> str:
    return _section((ROOT / "docs" / "api.md").read_text(encoding="utf-8"), "### Errors")


def test_every_error_code_in_the_api_page_is_one_the_server_answers() -> None:
    known = _request_errors()
    unknown = sorted(set(CODE.findall(_api_errors())) - known.keys())
    assert not unknown, f"docs/api.md's errors name codes no RequestError has: {unknown}"


def test_each_error_code_in_the_api_pages_table_has_its_rows_status() -> None:
    known = _request_errors()
    rows = re.findall(r"^\| (\d{3}) \|(.*)$", _api_errors(), re.M)
    assert len(rows) >= 5, rows  # the table is found
    wrong = [
        f"{code}: {status_of(known[code]('x'))}, listed under {status}"
        for status, text in rows
        for code in CODE.findall(text)
        if code in known and status_of(known[code]("x")) != int(status)
    ]
    assert not wrong, wrong


def test_a_code_that_is_no_error_fails_the_check() -> None:
    assert "no_aggregator" not in _request_errors()  # a readiness status, not an error
    assert "late_event" in _request_errors()


# Each figure README.md's "How fast" quotes, and the text of docs/performance.md's summary it
# is taken from. A README figure may round its source: each number of the quote is within
# 5 % of one number of the source. The multiplication sign and the en dash are written by
# name, as ruff asks.
QUOTED = {
    "~60k events/s per core": "**59.8k events/s** (engine)",
    "313k/s without percentiles": "**313k events/s** per core",
    "about 1,200\N{MULTIPLICATION SIGN} River's": "**1,242\N{MULTIPLICATION SIGN}** River's",
    "111k deliveries/s to 1,000 subscribers": "N = 1,000, as fast as answered | **111,668**",
    "10\N{EN DASH}15 µs of\nserver CPU per delivery": "**10.4\N{EN DASH}15.6 µs**",
    "(Flask-SSE: 100\N{EN DASH}145 µs)": "Flask-SSE 98\N{EN DASH}145 µs",
    "10,000 idle streams at 4.7 kB of\nmemory each (5.8 kB on Redis)": (
        "**4.7 kB** (embedded), **5.8 kB** (web on Redis), at 10,000 streams"
    ),
}
# Numbers in the section that are not measurements.
NOT_FIGURES = ("2-core machine", "10s/1m/5m windows")
NUMBER = re.compile(r"(?<![\w.])(\d[\d,]*(?:\.\d+)?)(k?)")


def _numbers(text: str) -> list[float]:
    return [float(n.replace(",", "")) * (1000 if k else 1) for n, k in NUMBER.findall(text)]


def _unquoted_numbers(section: str) -> list[str]:
    for text in (*QUOTED, *NOT_FIGURES):
        section = section.replace(text, "")
    return [n + k for n, k in NUMBER.findall(section)]


def _mismatches(quote: str, source: str) -> list[float]:
    """The numbers of `quote` that are not within 5 % of any number of `source`."""
    measured = _numbers(source)
    return [n for n in _numbers(quote) if not any(abs(n - m) <= 0.05 * m for m in measured)]


def test_every_figure_readme_quotes_is_the_one_measured() -> None:
    section = _section((ROOT / "README.md").read_text(encoding="utf-8"), "## How fast")
    summary = _section((ROOT / "docs" / "performance.md").read_text(encoding="utf-8"), "## Summary")
    assert not _unquoted_numbers(section), (
        "README.md's How fast quotes figures this test does not know: add each to QUOTED with "
        f"its source in docs/performance.md: {_unquoted_numbers(section)}"
    )
    gone = [quote for quote in QUOTED if quote not in section]
    assert not gone, f"no longer in README.md (update QUOTED): {gone}"
    moved = [source for source in QUOTED.values() if source not in summary]
    assert not moved, f"no longer in docs/performance.md's summary (update README.md): {moved}"
    wrong = {q: _mismatches(q, s) for q, s in QUOTED.items() if _mismatches(q, s)}
    assert not wrong, f"README.md quotes figures docs/performance.md does not give: {wrong}"


def test_a_stale_figure_fails_the_check() -> None:
    source = QUOTED["10,000 idle streams at 4.7 kB of\nmemory each (5.8 kB on Redis)"]
    assert _mismatches("10,000 subscribers at 24 KB each", source) == [24.0]
    assert _mismatches("~60k events/s per core", "**59.8k events/s**") == []
    assert _unquoted_numbers("holds 10,000 subscribers at 24 KB each") == ["10,000", "24"]
