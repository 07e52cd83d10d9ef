"""Events from the application's database: a PostgreSQL outbox table read into the event log.

The application inserts a row (topic, event JSON, optional idempotency key) into the outbox
table in the same transaction as its own write (`outbox_sql.ddl`). One reader at a time takes
the committed rows, appends each to the log through the POST's path (`ingest.accept`: the same
validation, limits and lateness rule), then deletes them.

Exactly once. A row is appended under an idempotency key: its own, else one derived from its
table and id (`outbox_sql.derived_key`), with the digest of the bytes of its event. So a row
appended and not deleted (the reader died between the two, PostgreSQL went away before the
delete committed, or a paused reader woke after losing its lease) is a repeat when it is
appended again: nothing is logged twice. That holds while the log remembers the key: within
`IDEMPOTENCY_WINDOW_US` (10 minutes), and where the log outlives the reader
(Redis, `--data-dir`; the embedded in-memory log dies with the process, and the key with it).

Order. The reader reads the visible rows in id order and appends them one by one, in that
order, and starts its next read only after the delete of the last. A row becomes visible when
its transaction commits, so per topic, rows are appended in commit order: a row committed
after a read (even one whose id is lower, taken by a transaction that committed later) is
appended after every row of that read; rows whose transactions both committed before the same
read are appended in id order. A row is never appended after a row behind it in that order:
a failed append (the broker unreachable or refusing writes) ends the round there, the rows
appended so far are deleted, and the next round starts again from the first row left.

Poison. A row that fails validation (what a POST would answer 4xx) is moved to the dead-letter
table `<table>_dead` with the error's code and message, in the transaction that deletes the
rows appended before it; the rows behind it flow on. A row over `--max-body` is judged so in
the database and never loaded (`outbox_sql.Statements`): it is moved aside as
`payload_too_large`, by a statement that copies it there.

Bounded. A round reads at most `BATCH_ROWS` rows and `BATCH_BYTES` of their events (at least
one row), each within `--max-body`: the most the reader holds at once.

Lease. The reader holds a PostgreSQL session advisory lock (`outbox_sql.lease_key`) on the
connection it reads with; every process that would read stands by, trying it every third of
`--lease`. It lives exactly as long as the reader's session: kill -9 closes the socket and
PostgreSQL frees the lock at once; a PostgreSQL restart ends the session, and the lock with
it, so no two sessions hold it. It is the same in every mode (embedded, `--workers`, Redis),
where a Redis lease would not exist in the first and would fence nothing here: the rows, the
reads and the deletes are PostgreSQL's. A reader that lost its session mid-round may still
append the rows it holds; they are repeats of what its successor appends first.

Waking. An insert's trigger NOTIFYs the table's channel at commit; the reader LISTENs on its
connection and polls every `POLL_S` besides (a notification is lost with a connection).
A lost connection, or PostgreSQL restarting, is retried with a backoff, keeping nothing.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import gevent.event
import psycopg
import psycopg.errors
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pushsvc.core.idempotency import (
    IDEMPOTENCY_WINDOW_US,
    Idempotency,
    check_key,
    request_digest,
    window_ms,
)
from pushsvc.core.lateness import keeps_late
from pushsvc.errors import BrokerUnavailable, PayloadTooLarge, ReplicasUnconfirmed, RequestError
from pushsvc.ingest import InputLimits
from pushsvc.ingest.accept import validated
from pushsvc.ingest.outbox_sql import (
    BATCH_BYTES,
    BATCH_ROWS,
    Statements,
    derived_key,
    lease_key,
)
from pushsvc.ingest.parse import JSON
from pushsvc.rules.analytics import Rules

if TYPE_CHECKING:
    from pushsvc.broker.base import Broker

log = logging.getLogger(__name__)

POLL_S = 1.0
"""How often the outbox is read besides the NOTIFY each commit sends. Fixed, not a setting:
it only bounds how late a row whose NOTIFY was lost (a connection lost with it, a PgBouncer
in transaction mode, which passes no LISTEN) is read, and one indexed query a second costs
PostgreSQL nothing it would notice."""
_MIN_BACKOFF_S = 0.1
_MAX_BACKOFF_S = 5.0
_LAG_EVERY_S = 1.0
_WAKE_CHECK_S = 1.0  # how long an idle reader waits on NOTIFY before looking at the stop
_MAX_DETAIL = 1000  # characters of an error's message kept with a dead row
_LOGGED_AT_MOST = 10_000  # (reason, topic) pairs remembered for "log once"
_CONNECTION_DEFAULTS: dict[str, str | int] = {
    "connect_timeout": 5,
    "application_name": "pushsvc outbox",
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}


@dataclass
class OutboxStats:
    """What /metrics shows of this process's reader (no topic in it)."""

    active: bool = False
    appended: int = 0
    replayed: int = 0
    dead: dict[str, int] = field(default_factory=dict)
    waiting: int = 0
    oldest_age_s: float = 0.0


class _Row:
    """A row as read: `body` None when it is over --max-body and was left in the database
    (`size`, its event's bytes, says how far over)."""

    __slots__ = ("body", "id", "key", "size", "topic")

    def __init__(self, row_id: int, topic: str, body: str | None, key: str | None, size: int):
        self.id, self.topic, self.body, self.key, self.size = row_id, topic, body, key, size

    @classmethod
    def of(cls, found: tuple[object, ...]) -> _Row:
        row_id, topic, body, key, size = found
        return cls(
            int(row_id),  # type: ignore[call-overload]
            str(topic),
            None if body is None else str(body),
            None if key is None else str(key),
            int(size),  # type: ignore[call-overload]
        )


class _Stalled(Exception):
    """The broker would not take an append: the round ends before that row."""


class OutboxReader:
    """`run(stop)` until `stop` is set: hold the lease and read, or stand by."""

    def __init__(
        self,
        broker: Broker,
        dsn: str,
        *,
        table: str,
        limits: InputLimits,
        lateness_us: int,
        standby_s: float,
        rules: Rules | None = None,
    ) -> None:
        self._broker = broker
        # What the DSN leaves out: a timeout to connect, and TCP keepalives, so that a
        # PostgreSQL gone without a word (a host lost, a network cut) is noticed in about
        # 25 s, not when the kernel gives up on the socket hours later.
        given = conninfo_to_dict(dsn)
        missing = {k: v for k, v in _CONNECTION_DEFAULTS.items() if k not in given}
        self._conninfo = make_conninfo(dsn, **missing)
        self._sql = Statements(table)
        self._table = table
        self._lease = lease_key(table)
        self._limits = limits
        self._lateness_us = lateness_us
        self._rules = rules
        self._window_ms = window_ms(IDEMPOTENCY_WINDOW_US)
        self._poll_s = POLL_S
        self._standby_s = standby_s
        self.stats = OutboxStats()
        self._stop = gevent.event.Event()
        self._lag_at = 0.0
        self._said = ""  # the last state logged, to log each change once
        self._logged: set[tuple[str, str]] = set()

    def run(self, stop: gevent.event.Event) -> None:
        backoff = _MIN_BACKOFF_S
        while not stop.is_set() and not self._stop.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True) as conn:
                    if self._take_lease(conn):
                        backoff = _MIN_BACKOFF_S
                        self._hold(conn, stop)
                        continue
                backoff = _MIN_BACKOFF_S
                self._say("standby", "outbox: another process reads %s; standing by", self._table)
                stop.wait(self._standby_s)
            except psycopg.errors.UndefinedTable as exc:
                self._lost()
                self._say(
                    "missing",
                    "outbox: %s (create the outbox tables: docs/deploy.md); retrying",
                    str(exc).splitlines()[0],
                )
                stop.wait(_MAX_BACKOFF_S)
            except psycopg.Error as exc:
                self._lost()
                self._say(
                    "unreachable",
                    "outbox: PostgreSQL unreachable (%s); reconnecting",
                    str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                )
                stop.wait(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)
            except Exception:
                # A bug must not end the reader for good: its session (and lease) is closed,
                # and it starts over after the longest backoff, which the log says.
                self._lost()
                self._said = ""
                log.exception("outbox: the reader failed; starting over")
                stop.wait(_MAX_BACKOFF_S)
        self._lost()

    def close(self) -> None:
        self._stop.set()

    def _take_lease(self, conn: psycopg.Connection[tuple[object, ...]]) -> bool:
        conn.execute(self._sql.check)  # the tables are there (UndefinedTable otherwise)
        # The reader's deletes need not wait for their WAL flush: one lost in a crash leaves
        # a row that is read again, and appended again as a repeat. The next read no longer
        # waits for a disk flush after every round.
        conn.execute("SET synchronous_commit TO off")
        row = conn.execute(self._sql.try_lease, (self._lease,)).fetchone()
        if not (row and row[0]):
            return False
        conn.execute(self._sql.listen)
        self.stats.active = True
        self._say("reading", "outbox: reading %s into the event log", self._table)
        return True

    def _hold(self, conn: psycopg.Connection[tuple[object, ...]], stop: gevent.event.Event) -> None:
        """Rounds until stopped, or an error ends the session (and the lease with it)."""
        while not stop.is_set() and not self._stop.is_set():
            limits = {
                "max_body": self._limits.max_body_bytes,
                "rows": BATCH_ROWS,
                "bytes": BATCH_BYTES,
            }
            rows = [_Row.of(found) for found in conn.execute(self._sql.read, limits).fetchall()]
            if rows:
                stalled = self._round(conn, rows)
                self._refresh_lag(conn)
                if stalled:
                    stop.wait(_MIN_BACKOFF_S)
                continue
            # Nothing committed waits: no lag, and no query to say so.
            self.stats.waiting, self.stats.oldest_age_s = 0, 0.0
            self._wait(conn, stop)

    def _wait(self, conn: psycopg.Connection[tuple[object, ...]], stop: gevent.event.Event) -> None:
        """Until a commit's NOTIFY (one received during the last read included: psycopg keeps
        those for `notifies`), the poll's time, or the stop; a second at a time, so that a
        long poll never holds a stopping process."""
        deadline = time.monotonic() + self._poll_s
        while not stop.is_set() and not self._stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            for _ in conn.notifies(timeout=min(remaining, _WAKE_CHECK_S), stop_after=1):
                return

    def _round(self, conn: psycopg.Connection[tuple[object, ...]], rows: list[_Row]) -> bool:
        """Append `rows` in order, then delete those appended and move the poison ones aside,
        in one transaction; True when the broker stalled the round before its end."""
        settled: list[int] = []
        dead: list[tuple[_Row, str, str]] = []
        stalled = False
        for row in rows:
            try:
                refused = self._append(row)
            except _Stalled:
                stalled = True
                break
            if refused is not None:
                dead.append((row, refused.code, str(refused)[:_MAX_DETAIL]))
            settled.append(row.id)
        if settled:
            with conn.transaction():
                for row, code, detail in dead:
                    conn.execute(self._sql.move_dead, (code, detail, row.id))
                conn.execute(self._sql.delete, (settled,))
            for row, code, detail in dead:
                self.stats.dead[code] = self.stats.dead.get(code, 0) + 1
                self._log_dead(row, code, detail)
        return stalled

    def _append(self, row: _Row) -> RequestError | None:
        """Append one row idempotently; the error that refuses it for good (it is poison),
        or None once it is in the log (now, or by an earlier append of the same row)."""
        if row.body is None:
            limit = self._limits.max_body_bytes
            return PayloadTooLarge(f"the body has {row.size} bytes; the limit is {limit}")
        body = row.body.encode()
        try:
            key = derived_key(self._table, row.id) if row.key is None else check_key([row.key])
            assert key is not None
            events = validated(
                row.topic, body, JSON, limits=self._limits, now_us=time.time_ns() // 1000
            )
            idempotency = Idempotency(key, request_digest(JSON, body), self._window_ms)
            grace, refuse = (self._lateness_us, False)
            if self._rules is not None:
                grace, refuse = self._rules.grace_of(row.topic, self._lateness_us)
            # Past the grace: on the topic's late stream, as a POST's would be.
            appended = self._broker.append_events(
                row.topic,
                events,
                lateness_us=grace,
                idempotency=idempotency,
                keep_late=keeps_late(row.topic, refuse),
            )
        except ReplicasUnconfirmed:
            appended = None  # logged, only its replication unconfirmed: not poison
        except BrokerUnavailable as exc:
            # Nothing was written: this row and those behind it wait for the next round.
            self._say("stalled", "outbox: the event log refuses appends (%s); waiting", exc)
            raise _Stalled from None
        except RequestError as exc:
            return exc
        if appended is not None and appended.replayed:
            self.stats.replayed += 1
        else:
            self.stats.appended += 1
        if self._said == "stalled":
            self._say(
                "reading", "outbox: the event log takes appends again; reading %s", self._table
            )
        return None

    def _log_dead(self, row: _Row, code: str, detail: str) -> None:
        """Once per reason and topic (a broken producer repeating itself is one line; the
        dead-letter table has every row, and /metrics counts them)."""
        key = (code, row.topic[:200])
        if key in self._logged:
            return
        if len(self._logged) >= _LOGGED_AT_MOST:
            self._logged.clear()
        self._logged.add(key)
        log.warning(
            "outbox: row %d (topic %r) set aside in %s_dead (%s): %s; the next such rows "
            "of the topic are only counted",
            row.id, key[1], self._table, code, detail,
        )  # fmt: skip

    def _refresh_lag(self, conn: psycopg.Connection[tuple[object, ...]]) -> None:
        """The rows waiting and the oldest one's age, while rows flow: once a second."""
        now = time.monotonic()
        if now - self._lag_at < _LAG_EVERY_S:
            return
        self._lag_at = now
        row = conn.execute(self._sql.lag).fetchone()
        if row is not None:
            waiting, age = row
            self.stats.waiting = int(waiting)  # type: ignore[call-overload]
            self.stats.oldest_age_s = max(0.0, float(age)) if age is not None else 0.0  # type: ignore[arg-type]

    def _lost(self) -> None:
        self.stats.active = False
        self.stats.waiting, self.stats.oldest_age_s = 0, 0.0

    def _say(self, state: str, message: str, *args: object) -> None:
        """Log a change of state once (a standby retrying, PostgreSQL down: one line)."""
        if self._said != state:
            self._said = state
            level = logging.INFO if state in ("reading", "standby") else logging.WARNING
            log.log(level, message, *args)
