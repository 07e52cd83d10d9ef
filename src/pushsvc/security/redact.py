"""Keep credentials out of log lines, whoever writes them (pure).

pushsvc itself never logs a token, but other code in the process may quote a request: gevent
logs a malformed request line as it came (`GET /stream?token=… HTTP/1.1`), a library may
repeat a header in an error. The filter rewrites every record on its way out.
"""

from __future__ import annotations

import logging
import re

_CREDENTIALS = re.compile(
    r"(?P<key>(?:[?&]token=|pushsvc_token=|[Bb]earer\s+))(?P<value>[^\s&;'\",]+)"
)


def redact(text: str) -> str:
    return _CREDENTIALS.sub(lambda m: m["key"] + "[redacted]", text)


class RedactCredentials(logging.Filter):
    """A handler filter: the formatted message with query tokens, cookies and bearer
    credentials replaced by `[redacted]`."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_text is None and record.exc_info[1] is not None:
            # Tracebacks quote exception messages; format once, cleaned.
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True
