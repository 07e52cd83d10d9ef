"""A request's headers for pywsgi, read without the email package in the common case.

pywsgi parses every request's headers with `http.client.parse_headers`, which hands them to
`email.parser`: a feed parser, a policy and a line splitter per request, the largest part of
a POST's CPU outside Flask and pushsvc (measured: docs/journal/fanout.md, 'Where a POST's CPU
went, and what it costs now'). A head whose every line is a plain `Name: value` (what clients
send) becomes exactly the message that parser would build, from one regular-expression match
per line; any other head — folded lines, stray CRs, lines that are not headers, an
unterminated last line — goes to the email parser, so what pywsgi sees never
differs (tests/unit/test_request_headers.py checks both against each other).
"""

from __future__ import annotations

import email.parser
import re
from http import client
from typing import IO

from pushsvc.gevent_private import RequestHead

# http.client's limits, and its errors when they are passed.
MAX_LINE = 65536
MAX_HEADERS = 100

# A header the email parser takes as one `name: value` line: a name of printable ASCII
# without ':' (its header pattern), then the value, left-stripped of blanks as compat32 stores
# it, with no CR or LF inside (the parser would break the line there).
_PLAIN = re.compile(r"([!-9;-~]+):[ \t]*([^\r\n]*?)\r?\n")


def read_headers(fp: IO[bytes], *_args: object) -> RequestHead:
    """pywsgi's `MessageClass`: the head that follows the request line, read from `fp` up to
    and including the blank line."""
    try:
        lines = _read_lines(fp)
    except client.LineTooLong:
        message = RequestHead()
        message.status = "Line too long"  # pywsgi answers 400 (as its own factory does)
        return message
    message = RequestHead()
    match = _PLAIN.fullmatch
    for line in lines[:-1]:  # the last one is the blank line (or the end of the input)
        plain = match(line.decode("iso-8859-1"))
        if plain is None:
            head = b"".join(lines).decode("iso-8859-1")
            parsed: RequestHead = email.parser.Parser(_class=RequestHead).parsestr(head)
            return parsed
        message.set_raw(plain[1], plain[2])
    return message


def _read_lines(fp: IO[bytes]) -> list[bytes]:
    lines = []
    while True:
        line = fp.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise client.LineTooLong("header line")
        lines.append(line)
        if len(lines) > MAX_HEADERS:
            raise client.HTTPException(f"got more than {MAX_HEADERS} headers")
        if line in (b"\r\n", b"\n", b""):
            return lines
