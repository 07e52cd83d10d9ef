"""The request-head reader against the parser pywsgi uses by itself: for any head, the same
headers (names, values, order), the same status, and the same bytes left for the body."""

from __future__ import annotations

import io

import pytest
from gevent.pywsgi import headers_factory
from hypothesis import given
from hypothesis import strategies as st

from pushsvc.http.request_headers import MAX_HEADERS, read_headers

BODY = b"body that must stay unread"

# Lines as clients send them, and every shape the email parser treats specially.
names = st.sampled_from(["Host", "Content-Type", "X-Request-ID", "content-length", "a", "X_Y"])
values = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=255), max_size=12)
plain = st.builds(lambda n, v: f"{n}: {v}\r\n", names, values)
ODD_LINES = [
    " folded continuation\r\n",
    "\tfolded with a tab\r\n",
    "No colon here\r\n",
    ": empty name\r\n",
    "Name : space before the colon\r\n",
    "From someone\r\n",
    "Bare-LF: yes\n",
    "Stray: CR\rinside\r\n",
    "Next-Line: \x85\r\n",
    "Form-Feed: a\x0cb\r\n",
    "Spaces:    padded   \r\n",
    "Tabbed:\t\tvalue\t\r\n",
    "Empty:\r\n",
    "Colons:in:the:value\r\n",
    "No-Space:after-colon\r\n",
    "Latin-1: caf\xe9\r\n",
]
odd = st.sampled_from(ODD_LINES)
heads = st.lists(st.one_of(plain, odd), max_size=8)
ends = st.sampled_from(["\r\n", "\n", ""])


def both(raw: bytes) -> tuple[object, object]:
    ours, theirs = io.BytesIO(raw), io.BytesIO(raw)
    mine, reference = read_headers(ours), headers_factory(theirs)
    assert ours.tell() == theirs.tell()
    return mine, reference


def assert_same(raw: bytes) -> None:
    mine, reference = both(raw)
    assert mine.items() == reference.items()  # type: ignore[attr-defined]
    assert mine.status == reference.status  # type: ignore[attr-defined]
    assert list(mine.headers) == list(reference.headers)  # type: ignore[attr-defined]
    assert mine.get("content-type") == reference.get("content-type")  # type: ignore[attr-defined]


@given(heads, ends)
def test_any_head_parses_as_pywsgi_parses_it(lines: list[str], end: str) -> None:
    raw = "".join(lines).encode("latin-1") + end.encode() + (BODY if end else b"")
    assert_same(raw)


@pytest.mark.parametrize("line", ODD_LINES)
def test_each_unusual_line_parses_as_pywsgi_parses_it(line: str) -> None:
    assert_same(f"Host: a\r\n{line}Accept: */*\r\n\r\n".encode("latin-1") + BODY)


def test_a_typical_request_head() -> None:
    raw = (
        b"Host: 127.0.0.1:8080\r\nContent-Type: application/json\r\n"
        b"Content-Length: 14\r\nX-Request-ID: abc\r\n\r\n" + BODY
    )
    mine, _ = both(raw)
    assert mine.get("content-length") == "14"  # type: ignore[attr-defined]
    assert_same(raw)


def test_an_over_long_line_is_refused_as_pywsgi_refuses_it() -> None:
    raw = b"X-Big: " + b"a" * 70_000 + b"\r\n\r\n"
    mine, reference = both(raw)
    assert mine.status == reference.status == "Line too long"  # type: ignore[attr-defined]


def test_too_many_headers_raise_as_pywsgi_raises() -> None:
    raw = b"".join(b"X-%d: v\r\n" % i for i in range(MAX_HEADERS + 1)) + b"\r\n"
    errors = []
    for parse in (read_headers, headers_factory):
        try:
            parse(io.BytesIO(raw))
        except Exception as exc:
            errors.append((type(exc), str(exc)))
    assert len(errors) == 2 and errors[0] == errors[1]
