"""Events from the application's database: a real PostgreSQL outbox read into the event log
exactly once, in commit order per topic, through kill -9 of pushsvc at each step of a round
(held there from outside: Redis paused for writes, a gate on the table's deletes),
PostgreSQL restarting, poison rows and a second reader standing by."""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
import redis
from harness.live import PushsvcProcess, SSEClient, metric, metric_sample, request, wait_until
from harness.net import free_port
from harness.postgres_server import PostgresServer, unavailable
from harness.procfs import peak_rss_kb, reset_peak_rss
from harness.redis_server import RedisServer

from pushsvc.ingest.outbox_sql import Statements, ddl, insert_example, lease_key

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    why = unavailable()
    if why is not None:
        pytest.skip(why)
    server = PostgresServer().start()
    yield server
    server.close()


@dataclass
class Outbox:
    """A table of its own for one test, and a connection for the test's inserts."""

    dsn: str
    table: str
    conn: psycopg.Connection[Any] = field(repr=False)

    def insert(self, topic: str, event: str, key: str | None = None) -> None:
        """One row in a transaction of its own, committed on return."""
        with self.conn.transaction():
            self.conn.execute(
                f"INSERT INTO {self.table} (topic, event, idempotency_key) VALUES (%s, %s, %s)",
                (topic, event, key),
            )

    def left(self) -> int:
        row = self.conn.execute(f"SELECT count(*) FROM {self.table}").fetchone()
        assert row is not None
        return int(row[0])

    def dead(self) -> list[tuple[Any, ...]]:
        return self.conn.execute(
            f"SELECT topic, event::text, reason, detail FROM {self.table}_dead ORDER BY id"
        ).fetchall()

    def env(self) -> dict[str, str]:
        return {
            "PUSHSVC_OUTBOX_DSN": self.dsn,
            "PUSHSVC_OUTBOX_TABLE": self.table,
            "PUSHSVC_TICK": "0",
            "PUSHSVC_LEASE": "1s",
        }


@pytest.fixture
def outbox(postgres: PostgresServer) -> Iterator[Outbox]:
    table = f"outbox_{uuid.uuid4().hex[:12]}"
    conn = psycopg.connect(postgres.dsn, autocommit=True)
    conn.execute(ddl(table))
    box = Outbox(postgres.dsn, table, conn)
    yield box
    box.conn.close()  # the test may have reconnected (PostgreSQL restarted)


def _reading(process: PushsvcProcess) -> bool:
    return any("outbox: reading" in line for line in process.output)


def _values(stream: SSEClient, count: int) -> list[float]:
    return [data["event"]["value"] for _, data in stream.take(count)]


def test_committed_rows_stream_in_commit_order_and_a_rolled_back_row_never_appears(
    outbox: Outbox, topic: str
) -> None:
    server = PushsvcProcess("serve", env=outbox.env()).start()
    try:
        wait_until(lambda: _reading(server), what="the server reads the outbox")
        with SSEClient(server.port, f"/topics/{topic}/stream") as stream:
            stream.next_data("snapshot")
            outbox.insert(topic, '{"value": 1}')
            assert _values(stream, 1) == [1.0]
            with psycopg.connect(outbox.dsn) as rolled_back:
                rolled_back.execute(
                    f"INSERT INTO {outbox.table} (topic, event) VALUES (%s, %s)",
                    (topic, '{"value": 2}'),
                )
                rolled_back.rollback()
            # A transaction that took the lower id and commits last streams last.
            with psycopg.connect(outbox.dsn) as early, psycopg.connect(outbox.dsn) as late:
                early.execute(
                    f"INSERT INTO {outbox.table} (topic, event) VALUES (%s, %s)",
                    (topic, '{"value": 4}'),
                )
                late.execute(
                    f"INSERT INTO {outbox.table} (topic, event) VALUES (%s, %s)",
                    (topic, '{"value": 3}'),
                )
                late.commit()
                assert _values(stream, 1) == [3.0]
                early.commit()
            outbox.insert(topic, '[{"value": 5}, {"value": 6}]')  # a batch, as a POST takes
            assert _values(stream, 3) == [4.0, 5.0, 6.0]
        wait_until(lambda: outbox.left() == 0, what="the rows are deleted")
        assert metric(server.port, "pushsvc_outbox_rows_appended_total") == 4
        assert metric(server.port, "pushsvc_outbox_active") == 1
        assert metric(server.port, "pushsvc_outbox_rows_waiting") == 0
    finally:
        server.stop()


def test_the_documented_insert_streams_and_the_dsn_password_is_never_logged(
    outbox: Outbox,
) -> None:
    # The suite's PostgreSQL trusts local connections: the password is sent, and ignored.
    dsn = outbox.dsn.replace("postgres@", "postgres:s3cret-pw@")
    server = PushsvcProcess("serve", env={**outbox.env(), "PUSHSVC_OUTBOX_DSN": dsn}).start()
    try:
        wait_until(lambda: _reading(server))
        with SSEClient(server.port, "/topics/orders/stream") as stream:
            stream.next_data("snapshot")
            outbox.conn.execute(insert_example(outbox.table))
            _, update = stream.next_data()
        assert update["event"]["value"] == 42.5
        assert update["event"]["tags"] == {"region": "eu"}
    finally:
        server.stop()
    assert any("postgres:***@" in line for line in server.output)  # the settings line
    assert not any("s3cret-pw" in line for line in server.output)


def test_serve_with_workers_reads_the_outbox_once_and_every_web_shows_its_counts(
    outbox: Outbox, topic: str
) -> None:
    """`serve --workers 2`: the aggregator process reads; a web worker's /metrics answers
    for every process, the reader's counts included."""
    server = PushsvcProcess("serve", "--workers", "2", env=outbox.env()).start()
    try:
        with SSEClient(server.port, f"/topics/{topic}/stream", timeout=30) as stream:
            stream.next_data("snapshot")
            for n in range(3):
                outbox.insert(topic, f'{{"value": {n}}}')
            assert _values(stream, 3) == [0.0, 1.0, 2.0]
        wait_until(lambda: outbox.left() == 0)
        wait_until(lambda: metric(server.port, "pushsvc_outbox_rows_appended_total") == 3)
        assert metric(server.port, "pushsvc_outbox_active") == 1
    finally:
        server.stop()


def test_the_documented_grants_are_all_the_reader_needs(outbox: Outbox, topic: str) -> None:
    role = f"reader_{uuid.uuid4().hex[:8]}"
    outbox.conn.execute(f"CREATE ROLE {role} LOGIN")
    outbox.conn.execute(f"GRANT SELECT, DELETE ON {outbox.table} TO {role}")
    outbox.conn.execute(f"GRANT SELECT, INSERT ON {outbox.table}_dead TO {role}")
    dsn = outbox.dsn.replace("postgres@", f"{role}@")
    server = PushsvcProcess("serve", env={**outbox.env(), "PUSHSVC_OUTBOX_DSN": dsn}).start()
    try:
        wait_until(lambda: _reading(server))
        with SSEClient(server.port, f"/topics/{topic}/stream") as stream:
            stream.next_data("snapshot")
            outbox.insert(topic, '{"value": "NaN"}')
            outbox.insert(topic, '{"value": 1}')
            assert _values(stream, 1) == [1.0]
        wait_until(lambda: outbox.left() == 0)
        assert [reason for *_, reason, _ in outbox.dead()] == ["invalid_event"]
    finally:
        server.stop()


def test_without_a_notify_the_poll_reads_the_rows(outbox: Outbox, topic: str) -> None:
    """A lost NOTIFY (the trigger off here; a connection lost in service) delays a row by
    one poll at most: the poll reads it."""
    outbox.conn.execute(f"ALTER TABLE {outbox.table} DISABLE TRIGGER {outbox.table}_notify")
    server = PushsvcProcess("serve", env=outbox.env()).start()
    try:
        wait_until(lambda: _reading(server))
        with SSEClient(server.port, f"/topics/{topic}/stream") as stream:
            stream.next_data("snapshot")
            outbox.insert(topic, '{"value": 7}')
            assert _values(stream, 1) == [7.0]
    finally:
        server.stop()


def test_while_the_log_refuses_appends_rows_wait_counted_as_lag_and_then_flow_in_order(
    outbox: Outbox, redis_server: RedisServer, prefix: str, topic: str
) -> None:
    """Redis full (maxmemory, noeviction): every append is refused, nothing written. The
    reader keeps the rows, in order, and /metrics shows them waiting; room again, they flow."""
    env = {**outbox.env(), "PUSHSVC_REDIS_URL": redis_server.url, "PUSHSVC_PREFIX": prefix}
    server = PushsvcProcess("serve", env=env).start()
    client = redis.Redis.from_url(redis_server.url)
    try:
        wait_until(lambda: _reading(server))
        with SSEClient(server.port, f"/topics/{topic}/stream", timeout=30) as stream:
            stream.next_data("snapshot")
            outbox.insert(topic, '{"value": 0}')
            assert _values(stream, 1) == [0.0]
            client.config_set("maxmemory", "1")
            try:
                for n in range(1, 6):
                    outbox.insert(topic, f'{{"value": {n}}}')
                wait_until(
                    lambda: metric(server.port, "pushsvc_outbox_rows_waiting") == 5,
                    what="five rows waiting",
                )
                assert metric(server.port, "pushsvc_outbox_oldest_row_seconds") > 0
                assert any("refuses appends" in line for line in server.output)
            finally:
                client.config_set("maxmemory", "0")
            assert _values(stream, 5) == [1.0, 2.0, 3.0, 4.0, 5.0]
        wait_until(lambda: outbox.left() == 0)
        assert outbox.dead() == []
        wait_until(lambda: metric(server.port, "pushsvc_outbox_rows_waiting") == 0)
    finally:
        client.close()
        server.stop()


def test_a_poison_row_is_set_aside_with_its_reason_and_the_rows_behind_it_flow(
    outbox: Outbox, topic: str
) -> None:
    server = PushsvcProcess("serve", env=outbox.env()).start()
    try:
        wait_until(lambda: _reading(server))
        with SSEClient(server.port, f"/topics/{topic}/stream") as stream:
            stream.next_data("snapshot")
            outbox.insert(topic, '{"value": 1}', key="order-1")
            outbox.insert(topic, '{"value": "NaN"}')  # invalid_event
            outbox.insert("-bad topic", '{"value": 1}')  # invalid_topic
            outbox.insert(topic, '{"value": 1}', key="order-1")  # a repeat: nothing logged
            outbox.insert(topic, '{"value": 9}', key="order-1")  # the key, another event
            outbox.insert(topic, '{"value": 2}', key="bad key")  # invalid_idempotency_key
            for _ in range(20):  # a broken producer repeating itself: counted, logged once
                outbox.insert(topic, '{"value": "NaN"}')
            outbox.insert(topic, '{"value": 3}')
            assert _values(stream, 2) == [1.0, 3.0]
        wait_until(lambda: outbox.left() == 0)
        dead = outbox.dead()
        assert [(t, e, reason) for t, e, reason, _ in dead] == [
            (topic, '{"value": "NaN"}', "invalid_event"),
            ("-bad topic", '{"value": 1}', "invalid_topic"),
            (topic, '{"value": 9}', "idempotency_key_reused"),
            (topic, '{"value": 2}', "invalid_idempotency_key"),
            *[(topic, '{"value": "NaN"}', "invalid_event")] * 20,
        ]

        # The server's log is read as it comes: the rows are set aside before their lines are.
        def logged() -> list[str]:
            return [line for line in server.output if f"{topic!r}) set aside" in line]

        wait_until(lambda: len(logged()) >= 3, what="a line per reason of this topic")
        assert len(logged()) == 3, logged()  # one per reason, the repeats only counted
        assert all(detail for *_, detail in dead)
        text = request(server.port, "GET", "/metrics")[2].decode()
        counted = dict(
            re.findall(r'^pushsvc_outbox_rows_dead_total\{reason="(\w+)"\} (\S+)$', text, re.M)
        )
        assert counted == {
            "invalid_event": "21.0",
            "invalid_topic": "1.0",
            "idempotency_key_reused": "1.0",
            "invalid_idempotency_key": "1.0",
        }
        assert metric(server.port, "pushsvc_outbox_rows_appended_total") == 2
        assert metric(server.port, "pushsvc_outbox_rows_replayed_total") == 1
        assert topic not in text  # /metrics names no topic
    finally:
        server.stop()


def test_a_row_far_over_max_body_is_set_aside_unloaded_and_the_row_behind_it_flows(
    outbox: Outbox, topic: str
) -> None:
    """A 20 MB event (`--max-body` is 1 MiB): its size is judged in the database, and it is
    moved to the dead-letter table there. pushsvc's peak memory meanwhile grows by less than
    the row: before, it read the row whole (and its text and bytes once more) to refuse it,
    and 20 rows of 40 MB took it from 79 MB to 1.6 GB."""
    server = PushsvcProcess("serve", env=outbox.env()).start()
    try:
        wait_until(lambda: _reading(server))
        with SSEClient(server.port, f"/topics/{topic}/stream") as stream:
            stream.next_data("snapshot")
            outbox.insert(topic, '{"value": 1}')
            assert _values(stream, 1) == [1.0]  # a round read: the reader's memory is warm
            reset_peak_rss(server.pid)
            before_kb = peak_rss_kb(server.pid)
            outbox.insert(topic, '{"value": 2, "tags": {"pad": "' + "x" * 20_000_000 + '"}}')
            outbox.insert(topic, '{"value": 3}')
            assert _values(stream, 1) == [3.0]
            grown_mb = (peak_rss_kb(server.pid) - before_kb) / 1024
        assert grown_mb < 10, f"the server's peak memory grew by {grown_mb:.0f} MB"
        wait_until(lambda: outbox.left() == 0)
        dead = outbox.conn.execute(
            f"SELECT reason, detail, octet_length(event::text) FROM {outbox.table}_dead"
        ).fetchall()
        assert len(dead) == 1
        reason, detail, size = dead[0]
        assert size > 20_000_000  # set aside whole
        assert (reason, detail) == (
            "payload_too_large",
            f"the body has {size} bytes; the limit is 1048576",
        )
        server.wait_for_log(r"set aside in \S+_dead \(payload_too_large\): the body has")
        assert (
            metric_sample(
                server.port, "pushsvc_outbox_rows_dead_total", '{reason="payload_too_large"}'
            )
            == 1
        )
    finally:
        server.stop()


def test_a_round_reads_its_rows_within_the_byte_bound_and_sends_no_oversize_event(
    outbox: Outbox,
) -> None:
    """The reader's statement, on its own: of the oldest rows, those whose sent events before
    them stay under the bound (at least one), an oversize row's size without its event."""
    sizes = [40, 500, 40, 40, 40, 40]  # max_body 100: the second is over it
    for size in sizes:
        outbox.insert("t", '{"p": "' + "x" * (size - 9) + '"}')
    read = Statements(outbox.table).read
    found = outbox.conn.execute(read, {"max_body": 100, "rows": 500, "bytes": 100}).fetchall()
    got = [(body is not None, size) for _, _, body, _, size in found]
    # 40 + 0 + 40 = 80 before the fourth row, under 100; 120 before the fifth.
    assert got == [(True, 40), (False, 500), (True, 40), (True, 40)]
    assert all(len(body) == size for _, _, body, _, size in found if body is not None)
    one = outbox.conn.execute(read, {"max_body": 100, "rows": 500, "bytes": 1}).fetchall()
    assert len(one) == 1  # the first row always
    few = outbox.conn.execute(read, {"max_body": 100, "rows": 2, "bytes": 10_000}).fetchall()
    assert len(few) == 2


class _Producer(threading.Thread):
    """Commits rows one transaction each, alternating two topics, value n for the n-th row
    of its topic, `every` seconds apart; rows `first` to `count` - 1."""

    def __init__(
        self, outbox: Outbox, topics: tuple[str, str], count: int, every: float, first: int = 0
    ):
        super().__init__(daemon=True)
        self.conn = psycopg.connect(outbox.dsn, autocommit=True)
        self.table, self.topics, self.count, self.every = outbox.table, topics, count, every
        self.first = first
        self.committed = 0
        self.done = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for n in range(self.first, self.count):
                self.conn.execute(
                    f"INSERT INTO {self.table} (topic, event) VALUES (%s, %s)",
                    (self.topics[n % 2], f'{{"value": {n // 2}}}'),
                )
                self.committed += 1
                self.done.wait(self.every)
        except BaseException as exc:
            self.error = exc
        finally:
            self.conn.close()
            self.done.set()


def _aggregator(env: dict[str, str], **extra: str) -> PushsvcProcess:
    return PushsvcProcess(
        "aggregate", env={**env, "PUSHSVC_METRICS_PORT": str(free_port()), **extra}, http=False
    ).start()


def _metrics_port(process: PushsvcProcess) -> int:
    return int(process.env["PUSHSVC_METRICS_PORT"])


class _Holds:
    """Holds the outbox reader at one step of a round, from outside pushsvc, for the test to
    kill it there. Redis paused for writes (`CLIENT PAUSE WRITE`) holds its next append; a
    gate on the table (a statement trigger taking an advisory lock the test holds) holds its
    next delete. Where the reader is, PostgreSQL says (`pg_stat_activity` of the session
    holding the reader's lease)."""

    def __init__(self, outbox: Outbox, redis_url: str) -> None:
        self.outbox = outbox
        self.redis = redis.Redis.from_url(redis_url)
        self.conn = psycopg.connect(outbox.dsn, autocommit=True)
        self.gate_key = uuid.uuid4().int >> 65  # a positive 63-bit key
        table = outbox.table
        self.conn.execute(
            f"CREATE FUNCTION {table}_gate() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN PERFORM pg_advisory_xact_lock_shared({self.gate_key}); RETURN NULL; END $$"
        )
        self.conn.execute(
            f"CREATE TRIGGER {table}_gate BEFORE DELETE ON {table} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {table}_gate()"
        )
        lease = lease_key(table) & 0xFFFF_FFFF_FFFF_FFFF
        self._lease = (lease >> 32, lease & 0xFFFF_FFFF)

    def close_gate(self) -> None:
        self.conn.execute("SELECT pg_advisory_lock(%s)", (self.gate_key,))

    def open_gate(self) -> None:
        self.conn.execute("SELECT pg_advisory_unlock(%s)", (self.gate_key,))

    def pause_appends(self) -> None:
        self.redis.execute_command("CLIENT", "PAUSE", 60_000, "WRITE")

    def resume_appends(self) -> None:
        self.redis.execute_command("CLIENT", "UNPAUSE")

    def reader(self) -> tuple[str, str, str, Any] | None:
        """(state, wait event type, query, query start) of the reader's session."""
        return self.conn.execute(
            "SELECT a.state, coalesce(a.wait_event_type, ''), a.query, a.query_start "
            "FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s AND l.objid = %s "
            "AND l.objsubid = 1",
            self._lease,
        ).fetchone()

    def now(self) -> Any:
        row = self.conn.execute("SELECT clock_timestamp()").fetchone()
        assert row is not None
        return row[0]

    def close(self) -> None:
        self.resume_appends()
        self.conn.close()
        self.redis.close()


def _commit(outbox: Outbox, topics: tuple[str, str], numbers: range) -> None:
    """Rows `numbers` (as _Producer numbers them) in one transaction: one round's read."""
    with outbox.conn.transaction():
        for n in numbers:
            outbox.conn.execute(
                f"INSERT INTO {outbox.table} (topic, event) VALUES (%s, %s)",
                (topics[n % 2], f'{{"value": {n // 2}}}'),
            )


ROWS = 24  # 12 a topic
ROUND = 3  # rows of the round the reader is killed in


def _hold_and_kill(
    holds: _Holds, doomed: PushsvcProcess, step: str, topics: tuple[str, str], rows: range
) -> None:
    """Commit `rows` as one round and kill the reader at `step` of it: `read`, the rows read
    and none appended; `appended`, every row of it appended and none deleted; `deleted`, its
    delete committed and nothing appended since."""
    if step == "read":
        holds.pause_appends()
        _commit(holds.outbox, topics, rows)
        committed = holds.now()

        def read() -> bool:
            # A read that started after the commit has the rows; it is held at its append.
            at = holds.reader()
            return (
                at is not None
                and at[0] == "idle"
                and "SELECT id, topic" in at[2]
                and at[3] > committed
            )

        wait_until(read, what="the reader read the round")
        doomed.kill()
        holds.resume_appends()
        return
    holds.close_gate()
    _commit(holds.outbox, topics, rows)
    wait_until(
        lambda: (at := holds.reader()) is not None and at[1] == "Lock",
        what="the reader waits at the gate, the round appended",
    )
    if step == "deleted":
        holds.pause_appends()
        holds.open_gate()
        wait_until(
            lambda: (at := holds.reader()) is not None and at[0] == "idle",
            what="the round's delete committed",
        )
        doomed.kill()
        holds.resume_appends()
        return
    doomed.kill()
    # The killed reader's session ends once its delete, let through, finds the client gone:
    # the delete is rolled back, and the lease freed.
    holds.open_gate()


@pytest.mark.parametrize("before", [0, 8])
@pytest.mark.parametrize("step", ["read", "appended", "deleted"])
def test_kill_9_at_each_step_of_a_round_delivers_each_row_once_in_commit_order(
    outbox: Outbox, redis_server: RedisServer, prefix: str, step: str, before: int
) -> None:
    """Killed by the test at a step of a round of several rows, after `before` rows flowed."""
    env = {**outbox.env(), "PUSHSVC_REDIS_URL": redis_server.url, "PUSHSVC_PREFIX": prefix}
    topics = (f"a-{uuid.uuid4().hex[:8]}", f"b-{uuid.uuid4().hex[:8]}")
    web = PushsvcProcess("web", env=env).start()
    doomed = _aggregator(env)
    holds = _Holds(outbox, redis_server.url)
    successor: PushsvcProcess | None = None
    try:
        with (
            SSEClient(web.port, f"/topics/{topics[0]}/stream", timeout=30) as first,
            SSEClient(web.port, f"/topics/{topics[1]}/stream", timeout=30) as second,
        ):
            first.next_data("snapshot")
            second.next_data("snapshot")
            wait_until(lambda: _reading(doomed), what="the first reader reads")
            flowed = _Producer(outbox, topics, before, every=0.01)
            flowed.run()
            wait_until(lambda: outbox.left() == 0, what="the first rows flowed")
            _hold_and_kill(holds, doomed, step, topics, range(before, before + ROUND))
            assert doomed.proc is not None and doomed.proc.returncode == -9
            producer = _Producer(outbox, topics, ROWS, every=0.05, first=before + ROUND)
            producer.start()
            successor = _aggregator(env)
            producer.done.wait(30)
            assert producer.error is None and producer.committed == ROWS - before - ROUND
            got = (_values(first, ROWS // 2), _values(second, ROWS // 2))
        wanted = [float(n) for n in range(ROWS // 2)]
        assert got == (wanted, wanted)  # each once, in commit order per topic
        wait_until(lambda: outbox.left() == 0, what="every row deleted")
        # Nothing more: a row appended twice would stream after the last one.
        with SSEClient(web.port, f"/topics/{topics[0]}/stream") as again:
            _, snapshot = again.next_data("snapshot")
        assert snapshot["topics"][topics[0]]["windows"]["1m"]["count"] == ROWS // 2
        if step == "appended":
            # What the killed reader appended and left was read again, and was a repeat.
            assert metric(_metrics_port(successor), "pushsvc_outbox_rows_replayed_total") >= 1
    finally:
        holds.close()
        web.stop()
        doomed.kill()
        if successor is not None:
            successor.stop()


def test_postgres_restarting_under_the_reader_loses_and_doubles_nothing(
    outbox: Outbox, postgres: PostgresServer, topic: str
) -> None:
    server = PushsvcProcess("serve", env=outbox.env()).start()
    try:
        wait_until(lambda: _reading(server))
        with SSEClient(server.port, f"/topics/{topic}/stream", timeout=60) as stream:
            stream.next_data("snapshot")
            for round_ in range(3):
                for n in range(40):
                    outbox.insert(topic, f'{{"value": {round_ * 40 + n}}}')
                # While the reader is at it: a crash (round 0, 2) or a clean restart.
                postgres.crash() if round_ != 1 else postgres.stop()
                postgres.start()
                outbox.conn.close()
                outbox.conn = psycopg.connect(outbox.dsn, autocommit=True)
            outbox.insert(topic, '{"value": 120}')
            values = _values(stream, 121)
        assert values == [float(n) for n in range(121)]
        wait_until(lambda: outbox.left() == 0)
        wait_until(lambda: metric(server.port, "pushsvc_outbox_active") == 1)
        assert any("PostgreSQL unreachable" in line for line in server.output)
    finally:
        server.stop()


@pytest.mark.parametrize("killed_after", [1, 40, 120])
def test_two_readers_one_holds_the_lease_and_the_other_takes_over_after_kill_9(
    outbox: Outbox, redis_server: RedisServer, prefix: str, killed_after: int
) -> None:
    """Killed at varied moments of a steady flow of rows: each row once, in order per topic."""
    env = {**outbox.env(), "PUSHSVC_REDIS_URL": redis_server.url, "PUSHSVC_PREFIX": prefix}
    topics = (f"a-{uuid.uuid4().hex[:8]}", f"b-{uuid.uuid4().hex[:8]}")
    web = PushsvcProcess("web", env=env).start()
    readers = [_aggregator(env), _aggregator(env)]
    try:
        wait_until(lambda: any(_reading(r) for r in readers), what="one reads")
        active, standby = readers if _reading(readers[0]) else readers[::-1]
        wait_until(lambda: any("standing by" in line for line in standby.output))
        assert metric(_metrics_port(active), "pushsvc_outbox_active") == 1
        assert metric(_metrics_port(standby), "pushsvc_outbox_active") == 0
        with (
            SSEClient(web.port, f"/topics/{topics[0]}/stream", timeout=30) as first,
            SSEClient(web.port, f"/topics/{topics[1]}/stream", timeout=30) as second,
        ):
            first.next_data("snapshot")
            second.next_data("snapshot")
            producer = _Producer(outbox, topics, 200, every=0.01)
            producer.start()
            wait_until(lambda: producer.committed >= killed_after)
            active.kill()
            wait_until(lambda: _reading(standby), what="the standby takes over")
            producer.done.wait(30)
            assert producer.error is None
            got = (_values(first, 100), _values(second, 100))
        wanted = [float(n) for n in range(100)]
        assert got == (wanted, wanted)
        wait_until(lambda: outbox.left() == 0)
        assert metric(_metrics_port(standby), "pushsvc_outbox_active") == 1
    finally:
        web.stop()
        for reader in readers:
            reader.kill()
