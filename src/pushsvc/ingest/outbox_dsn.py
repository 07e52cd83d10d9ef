"""The `--outbox-dsn` setting: a PostgreSQL connection string whose password never prints.

libpq takes a URI (`postgresql://user:secret@host/db`) or key=value pairs
(`host=db user=app password=secret`); either is kept as given and passed to psycopg as it is.
Parsed by libpq (psycopg is imported only when a DSN is given), so that a string it refuses,
or a DSN given to a pushsvc installed without `pushsvc[postgres]`, stops the process at start
with one line, not at the first row.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass

_SCHEMES = ("postgresql://", "postgres://")
_URI_PASSWORD = re.compile(r"^(?P<head>[\w+.-]+://[^:/@?#]*:)(?P<secret>[^@/?#]*)(?=@)")
_KV_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)(?P<secret>'(?:[^'\\]|\\.)*'|\S+)")
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&]password=)(?P<secret>[^&#]*)")


def redact_dsn(text: str) -> str:
    """The DSN with any password replaced by `***` (URI userinfo, `?password=`, key=value)."""
    uri = "://" in text.split(None, 1)[0] if text.strip() else False
    for pattern in (_URI_PASSWORD, _QUERY_PASSWORD) if uri else (_KV_PASSWORD,):
        text = pattern.sub(lambda m: m["head"] + "***", text)
    return text


@dataclass(frozen=True)
class PostgresDsn:
    """A connection string; `repr` and `str` show it redacted, `value` is the real one."""

    value: str

    def __repr__(self) -> str:  # whatever prints a Settings shows no password
        return f"PostgresDsn({redact_dsn(self.value)!r})"

    def __str__(self) -> str:
        return redact_dsn(self.value)


def parse_dsn(text: str) -> PostgresDsn | None:
    """`--outbox-dsn`: empty for none, else a libpq URI or key=value string, as libpq parses
    it (ValueError, never echoing it, when it is not one or psycopg is not installed)."""
    text = text.strip()
    if not text:
        return None
    if "://" in text.split(None, 1)[0] and not text.startswith(_SCHEMES):
        raise ValueError(f"not a PostgreSQL URI: give {_SCHEMES[0]}user:password@host/dbname")
    if importlib.util.find_spec("psycopg") is None:
        raise ValueError("reading an outbox needs psycopg: pip install 'pushsvc[postgres]'")
    # Imported here, where an outbox is configured: libpq's own parser, so that a string it
    # would refuse at the first connection stops the process now instead.
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        conninfo_to_dict(text)
    except psycopg.Error:
        # libpq's message quotes the string, a password included: not repeated.
        raise ValueError(
            "not a PostgreSQL connection string: give "
            "postgresql://user:password@host:port/dbname or key=value pairs (host=... dbname=...)"
        ) from None
    return PostgresDsn(text)
