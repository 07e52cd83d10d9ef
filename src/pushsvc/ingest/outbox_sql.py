"""The PostgreSQL outbox's tables and statements: the one owner of their SQL (pure, no driver).

The application writes `<table>` in its own transactions; pushsvc reads it
(`pushsvc.ingest.outbox`) and moves a row that fails validation to `<table>_dead` with its
reason. `ddl(table)` is what docs/deploy.md shows and what the tests create. A table name is
one plain identifier (lower case, digits, `_`), so it can be written into statements as it is;
a schema other than the connection's `search_path` is chosen in the DSN
(`options=-csearch_path=app`), not in the name.
"""

from __future__ import annotations

import hashlib
import re

DEFAULT_TABLE = "pushsvc_outbox"
DEAD_SUFFIX = "_dead"
_MAX_IDENTIFIER = 63  # PostgreSQL's NAMEDATALEN - 1
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*")

BATCH_ROWS = 500
"""Rows read, appended and deleted per round: enough to amortise the round trips, few enough
that a round's delete stays a short transaction."""
BATCH_BYTES = 8 << 20
"""Event bytes read per round at most (8 MiB), whatever the rows' sizes: 500 rows just under
`--max-body` would otherwise be 500 MiB held at once. The first row is always read, so a
`--max-body` above it still passes one row a round."""
LAG_COUNT_CAP = 100_000
"""Rows waiting are counted up to this many: a count of a huge backlog would scan it all."""


def check_table(name: str) -> str:
    """The outbox table's name, or ValueError: one lower-case identifier, short enough that
    its dead-letter table's name (`<name>_dead`) is one too."""
    if not _IDENTIFIER.fullmatch(name):
        raise ValueError(
            f"{name!r} is not a plain table name (lower-case ASCII letters, digits and _, not "
            "starting with a digit; choose a schema with search_path in the DSN)"
        )
    if len(name) + len(DEAD_SUFFIX) > _MAX_IDENTIFIER:
        raise ValueError(f"{name!r} is too long: at most {_MAX_IDENTIFIER - len(DEAD_SUFFIX)}")
    return name


def dead_table(table: str) -> str:
    return table + DEAD_SUFFIX


def channel(table: str) -> str:
    """The LISTEN/NOTIFY channel an insert into `table` wakes pushsvc on: the table's name."""
    return table


def lease_key(table: str) -> int:
    """The advisory lock the reader of `table` holds (a signed 64-bit key, stable across
    processes and versions: derived from the name, never from Python's `hash`)."""
    digest = hashlib.sha256(f"pushsvc outbox {table}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def derived_key(table: str, row_id: int) -> str:
    """The idempotency key of a row that gives none: its table and id, so that appending
    it again (after a crash between the append and the delete) is a repeat, not a new
    batch. Always a valid key (`core.idempotency`): visible ASCII, at most 83 characters."""
    return f"outbox:{table}:{row_id}"


def ddl(table: str = DEFAULT_TABLE) -> str:
    """The tables, and the trigger that wakes pushsvc when a transaction that inserted rows
    commits (NOTIFY is delivered at commit, and never for a rolled-back transaction)."""
    check_table(table)
    dead = dead_table(table)
    return f"""\
CREATE TABLE {table} (
    id              bigserial PRIMARY KEY,
    topic           text        NOT NULL,
    event           jsonb       NOT NULL,  -- a POST's body: one event, or an array of them
    idempotency_key text        NULL,      -- NULL: pushsvc derives one from the id
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE {dead} (
    id              bigint      PRIMARY KEY,  -- the row's id in {table}
    topic           text        NOT NULL,
    event           jsonb       NOT NULL,
    idempotency_key text        NULL,
    created_at      timestamptz NOT NULL,
    failed_at       timestamptz NOT NULL DEFAULT now(),
    reason          text        NOT NULL,  -- the error code a POST would answer
    detail          text        NOT NULL   -- and its message
);
CREATE FUNCTION {table}_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{channel(table)}', '');
    RETURN NULL;
END $$;
CREATE TRIGGER {table}_notify AFTER INSERT ON {table}
    FOR EACH STATEMENT EXECUTE FUNCTION {table}_notify();
"""


def insert_example(table: str = DEFAULT_TABLE) -> str:
    """The one-line insert an application runs in its own transaction (docs/api.md)."""
    return (
        f"INSERT INTO {table} (topic, event) "
        """VALUES ('orders', '{"value": 42.5, "tags": {"region": "eu"}}');"""
    )


class Statements:
    """The reader's statements for one table. `event::text` is read, not the parsed jsonb:
    the same bytes every time the row is read, which the idempotency digest compares.

    The read judges each row's size in the database (`octet_length(event::text)`, the bytes
    pushsvc would read; `pg_column_size` is the stored, compressed size, which says nothing
    of it) and sends the event only of a row within `--max-body`: a row over it comes with
    its size and no event, and is set aside by `move_dead`, which copies it in the database.
    Of the oldest BATCH_ROWS rows, it takes those whose events before them come to less than
    BATCH_BYTES (an oversize row counts nothing: nothing of it is sent)."""

    def __init__(self, table: str) -> None:
        check_table(table)
        dead = dead_table(table)
        self.table = table
        self.try_lease = "SELECT pg_try_advisory_lock(%s)"
        self.listen = f"LISTEN {channel(table)}"
        # Parameters: max_body (three times), rows, bytes.
        sent = "CASE WHEN size <= %(max_body)s THEN size ELSE 0 END"
        self.read = (
            "SELECT id, topic, CASE WHEN size <= %(max_body)s THEN event::text END, "
            "idempotency_key, size FROM ("
            f"SELECT id, topic, event, idempotency_key, size, sum({sent}) OVER (ORDER BY id) "
            "AS through FROM ("
            "SELECT id, topic, event, idempotency_key, octet_length(event::text) AS size "
            f"FROM {table} ORDER BY id LIMIT %(rows)s) AS oldest) AS sized "
            f"WHERE through - {sent} < %(bytes)s ORDER BY id"
        )
        self.delete = f"DELETE FROM {table} WHERE id = ANY(%s)"
        # In the delete's transaction: the row moves, or stays, as a whole.
        self.move_dead = (
            f"INSERT INTO {dead} (id, topic, event, idempotency_key, created_at, reason, detail) "
            f"SELECT id, topic, event, idempotency_key, created_at, %s, %s FROM {table} "
            "WHERE id = %s ON CONFLICT (id) DO NOTHING"
        )
        self.lag = (
            "SELECT count(*), extract(epoch FROM clock_timestamp() - min(created_at)) "
            f"FROM (SELECT created_at FROM {table} ORDER BY id LIMIT {LAG_COUNT_CAP}) AS waiting"
        )
        self.check = f"SELECT 1 FROM {table}, {dead} LIMIT 0"
