"""Redis must not evict, and may be full (docs/reliability.md, "Redis memory"): every process
refuses an evicting Redis at start and reports one while running; a Redis that refuses writes
(full, read-only, busy, loading) answers a POST with a 503 of its own, never a 500; and the
aggregator waits for a full Redis, then continues where it stopped."""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient
from harness.live import SRC, PushsvcProcess, metric, request, wait_until
from harness.redis_server import RedisServer

from conftest import MakeApp
from pushsvc.broker.redis import RedisBroker
from pushsvc.broker.redis.guard import CHECK_EVERY_S
from pushsvc.broker.redis.lease import RedisLease
from pushsvc.errors import BrokerLoading
from pushsvc.http.api.error_replies import headers_of, status_of
from pushsvc.ingest import Event

pytestmark = pytest.mark.redis

REFUSAL = (
    "pushsvc: redis maxmemory-policy is {}: pushsvc keeps data in Redis that must not be "
    'evicted; run CONFIG SET maxmemory-policy noeviction or set "maxmemory-policy '
    'noeviction" in redis.conf'
)

# Every way to run a process on Redis; the bridge runs in each aggregating one.
COMMANDS = [("serve",), ("web",), ("aggregate",), ("serve", "--workers", "2")]


def _env(server: RedisServer, prefix: str, **more: str) -> dict[str, str]:
    return {
        "PUSHSVC_REDIS_URL": server.url,
        "PUSHSVC_PREFIX": prefix,
        "PUSHSVC_TICK": "0",
        **{f"PUSHSVC_{k.upper()}": v for k, v in more.items()},
    }


def _run(command: tuple[str, ...], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("PUSHSVC_")}
    return subprocess.run(
        [sys.executable, "-m", "pushsvc", *command, "--port", "0"],
        env={**inherited, "PYTHONPATH": SRC, **env},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _readyz(port: int) -> tuple[int, dict[str, Any]]:
    status, _, body = request(port, "GET", "/readyz")
    return status, json.loads(body)


@pytest.mark.parametrize("policy", ["allkeys-lru", "volatile-lru"])
def test_every_process_refuses_an_evicting_redis(policy: str, prefix: str) -> None:
    with RedisServer(args=("--maxmemory-policy", policy)) as server:
        for command in COMMANDS:
            done = _run(command, _env(server, prefix))
            assert (done.returncode, done.stderr.splitlines()) == (1, [REFUSAL.format(policy)]), (
                command
            )


def test_a_redis_that_hides_its_policy_gets_a_warning_and_the_process_starts(
    prefix: str,
) -> None:
    hidden = ("--rename-command", "CONFIG", "", "--rename-command", "INFO", "")
    with RedisServer(args=hidden) as server:
        process = PushsvcProcess("serve", env=_env(server, prefix)).start()
        try:
            process.wait_for_log("could not read Redis's maxmemory-policy .* by hand")
            wait_until(lambda: _readyz(process.port)[0] == 200)
        finally:
            process.stop()


def test_a_redis_without_config_is_checked_through_info(prefix: str) -> None:
    """Managed services disable CONFIG but answer INFO, which names the policy too."""
    args = ("--rename-command", "CONFIG", "", "--maxmemory-policy", "allkeys-lru")
    with RedisServer(args=args) as server:
        done = _run(("web",), _env(server, prefix))
    assert (done.returncode, done.stderr.splitlines()) == (1, [REFUSAL.format("allkeys-lru")])


def test_readyz_follows_the_policy_while_running(own_redis: RedisServer, prefix: str) -> None:
    process = PushsvcProcess("serve", env=_env(own_redis, prefix)).start()
    control = redis.Redis(port=own_redis.port)
    try:
        wait_until(lambda: _readyz(process.port)[0] == 200)
        control.config_set("maxmemory-policy", "allkeys-lru")
        wait_until(lambda: _readyz(process.port)[1]["status"] == "redis_evicts")
        status, body = _readyz(process.port)
        assert status == 503
        assert body["reason"].startswith("redis maxmemory-policy is allkeys-lru: ")
        process.wait_for_log("redis maxmemory-policy is allkeys-lru.*not ready")
        control.config_set("maxmemory-policy", "noeviction")
        wait_until(lambda: _readyz(process.port)[0] == 200)
    finally:
        control.close()
        process.stop()


@pytest.mark.parametrize("command", ["serve", "web"])
def test_readyz_answers_redis_full_for_as_long_as_redis_refuses_writes(
    own_redis: RedisServer, prefix: str, command: str
) -> None:
    """Not as the last periodic look saw it (every `CHECK_EVERY_S`): every /readyz while Redis
    refuses a plain SET is a 503 `redis_full`, and the first one after it takes writes again
    is ready."""
    env = _env(own_redis, prefix)
    process = PushsvcProcess(command, env=env).start()
    if command == "web":  # ready needs an aggregator for its shard
        aggregator = PushsvcProcess("aggregate", env=env, http=False).start()
    control = redis.Redis(port=own_redis.port)
    try:
        wait_until(lambda: _readyz(process.port)[0] == 200)
        control.config_set("maxmemory", 1)  # held full: every write is refused
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            control.set(f"{prefix}probe", "x")
        for _ in range(20):
            status, body = _readyz(process.port)
            assert (status, body["status"]) == (503, "redis_full")
            assert re.fullmatch(
                r"redis is full \(used_memory \d+ of maxmemory 1\); aggregator \d+ entries behind",
                body["reason"],
            )
        control.config_set("maxmemory", 0)
        control.set(f"{prefix}probe", "x")
        assert _readyz(process.port)[0] == 200
    finally:
        control.config_set("maxmemory", 0)
        control.close()
        process.stop()
        if command == "web":
            aggregator.stop()


def test_a_full_redis_refuses_posts_then_every_accepted_event_is_applied_once(
    own_redis: RedisServer, prefix: str
) -> None:
    env = _env(own_redis, prefix, windows="1h", history="100000")
    process = PushsvcProcess("serve", env=env).start()
    control = redis.Redis(port=own_redis.port)
    posters = 4
    accepted: list[list[float]] = [[] for _ in range(posters)]
    answers: list[tuple[int, dict[str, str], bytes]] = []
    refused = threading.Semaphore(0)
    stop = threading.Event()

    def post_until_stopped(index: int) -> None:
        value = 0
        while not stop.is_set():
            batch = [float(value + i) for i in range(20)]
            events = [{"value": v, "tags": {"pad": "x" * 40}} for v in batch]
            answer = request(process.port, "POST", f"/topics/load.{index}/events", events)
            answers.append(answer)
            if answer[0] == 202:
                accepted[index] += batch
            elif answer[0] == 503:
                refused.release()
            value += 20

    try:
        wait_until(lambda: _readyz(process.port)[0] == 200)
        used = int(control.info("memory")["used_memory"])
        control.config_set("maxmemory", used + 1_500_000)
        threads = [threading.Thread(target=post_until_stopped, args=(i,)) for i in range(posters)]
        for thread in threads:
            thread.start()
        try:
            for _ in range(40):  # Redis filled up and refused this many POSTs
                assert refused.acquire(timeout=60), "Redis never filled up"
            # Asked while the posters still hold Redis full: once they stop, the memory their
            # connections' buffers held is freed and Redis may drop back under maxmemory.
            full: list[tuple[int, dict[str, Any]]] = []

            def says_full() -> bool:
                full.append(_readyz(process.port))
                return full[-1][0] == 503

            wait_until(says_full)
            # The gauge is the periodic look's: one comes within CHECK_EVERY_S.
            wait_until(
                lambda: metric(process.port, "pushsvc_redis_full") == 1, timeout=3 * CHECK_EVERY_S
            )
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        status, body = full[-1]
        assert body["status"] == "redis_full"
        assert re.fullmatch(
            r"redis is full \(used_memory \d+ of maxmemory \d+\); aggregator \d+ entries behind",
            body["reason"],
        )
        assert metric(process.port, 'pushsvc_redis_refusals_total{code="broker_full"}') >= 40

        assert {a[0] for a in answers} == {202, 503}  # never a 500
        # The aggregator waits for memory (saying so), it does not fail. During the fill its
        # writes may all fall between the moments Redis is full (its trims free room), so
        # Redis is held full until the aggregator meets it: its next write, a publish or the
        # checkpoint it saves every 5 s, is refused.
        control.config_set("maxmemory", 1)
        process.wait_for_log(r"Redis refuses \(broker_full")
        assert not [line for line in process.output if "Traceback" in line]
        for status, headers, raw in answers:
            if status == 503:
                assert json.loads(raw)["error"]["code"] == "broker_full"
                assert headers["retry-after"] == "5"

        control.config_set("maxmemory", 0)
        wait_until(lambda: _readyz(process.port)[0] == 200, timeout=20)

        def history(index: int) -> dict[str, Any]:
            path = f"/topics/load.{index}/history?limit=10000"
            result: dict[str, Any] = json.loads(request(process.port, "GET", path)[2])
            return result

        def caught_up(index: int) -> bool:
            return len(history(index)["updates"]) >= len(accepted[index])

        for index in range(posters):
            wait_until(functools.partial(caught_up, index))
            page = history(index)
            assert not page["gap"] and not page["more"]
            # One update per accepted event, in order; the windows hold exactly those events.
            assert [u["event"]["value"] for u in page["updates"]] == accepted[index]
            window = page["updates"][-1]["windows"]["1h"]
            assert (window["count"], window["sum"]) == (len(accepted[index]), sum(accepted[index]))
    finally:
        control.close()
        process.stop()


def test_the_bridge_waits_for_a_full_redis_and_then_appends_every_message(
    own_redis: RedisServer, prefix: str
) -> None:
    process = PushsvcProcess("serve", env=_env(own_redis, prefix, windows="1h")).start()
    control = redis.Redis(port=own_redis.port)
    try:
        process.wait_for_log("bridge: bridging")
        control.config_set("maxmemory", 1)  # full: every append is refused
        for value in range(10):
            # PUBLISH needs no memory: the messages reach the bridge, its appends are refused.
            control.publish(f"{prefix}ingest:bridged", json.dumps({"value": float(value)}))
        process.wait_for_log(r"bridge: Redis refuses appends \(broker_full")
        control.config_set("maxmemory", 0)

        def updates() -> list[dict[str, Any]]:
            page = request(process.port, "GET", "/topics/bridged/history")[2]
            result: list[dict[str, Any]] = json.loads(page)["updates"]
            return result

        wait_until(lambda: len(updates()) >= 10)
        assert [u["event"]["value"] for u in updates()] == [float(v) for v in range(10)]
        assert metric(process.port, "pushsvc_bridge_events_total") == 10
    finally:
        control.close()
        process.stop()


def test_a_full_redis_keeps_the_lease_with_its_holder_and_standbys_quiet(
    own_redis: RedisServer, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    holder = RedisLease(own_redis.url, f"{prefix}lease", ttl_us=60_000_000)
    standby = RedisLease(own_redis.url, f"{prefix}lease", ttl_us=60_000_000)
    control = redis.Redis(port=own_redis.port)
    try:
        assert holder.renew()
        control.config_set("maxmemory", 1)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="pushsvc"):
            assert holder.renew()  # PEXPIRE needs no memory
            assert not standby.renew()  # a held lease: nothing to write, nothing refused
        assert not caplog.records
    finally:
        control.config_set("maxmemory", 0)
        control.close()
        for lease in (holder, standby):
            lease.close()


# -- each refusal its own 503, on the POST path ----------------------------------------------


@pytest.fixture
def web_client(make_app: MakeApp, own_redis: RedisServer, prefix: str) -> FlaskClient:
    return make_app(redis_url=own_redis.url, prefix=prefix).test_client()


def _post(client: FlaskClient) -> tuple[int, str | None, str]:
    response = client.post("/topics/refused/events", json={"value": 1.0})
    code = response.get_json()["error"]["code"] if response.status_code != 202 else ""
    return response.status_code, response.headers.get("Retry-After"), code


def test_a_full_redis_answers_broker_full_and_logs_nothing(
    web_client: FlaskClient, own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    control = redis.Redis(port=own_redis.port)
    control.config_set("maxmemory", 1)
    try:
        with caplog.at_level(logging.INFO, logger="pushsvc"):
            assert _post(web_client) == (503, "5", "broker_full")
        # The refusal logs nothing. The guard's check (every `CHECK_EVERY_S`) may come in the
        # meantime and say, once, that the process is not ready while Redis is full: that
        # line is the readiness's, tested with the guard.
        assert not [r for r in caplog.records if r.name != "pushsvc.broker.redis.guard"]
    finally:
        control.config_set("maxmemory", 0)
        control.close()
    assert _post(web_client)[0] == 202


def test_a_demoted_primary_answers_broker_read_only(
    web_client: FlaskClient, own_redis: RedisServer
) -> None:
    control = redis.Redis(port=own_redis.port)
    with RedisServer() as primary:
        control.replicaof("127.0.0.1", primary.port)
        try:
            # Synced (so not loading the primary's dataset): a read-only replica.
            wait_until(lambda: control.info("replication")["master_link_status"] == "up")
            assert _post(web_client) == (503, "1", "broker_read_only")
        finally:
            control.replicaof("NO", "ONE")
            control.close()
    assert _post(web_client)[0] == 202


@pytest.fixture
def busy_redis(own_redis: RedisServer) -> Iterator[None]:
    """A script that runs until killed, past the busy threshold: Redis answers BUSY."""
    control = redis.Redis(port=own_redis.port)
    control.config_set("busy-reply-threshold", 50)
    runner = redis.Redis(port=own_redis.port, socket_timeout=60)
    killed: list[redis.ResponseError] = []

    def run_until_killed() -> None:
        try:
            runner.eval("while true do end", 0)
        except redis.ResponseError as exc:
            killed.append(exc)

    script = threading.Thread(target=run_until_killed)
    script.start()

    def busy() -> bool:
        try:
            control.ping()
        except redis.ResponseError as exc:
            return str(exc).startswith("BUSY")
        return False

    wait_until(busy)
    yield
    control.script_kill()
    script.join()
    assert killed
    control.close()
    runner.close()


def test_a_busy_redis_answers_broker_busy(web_client: FlaskClient, busy_redis: None) -> None:
    assert _post(web_client) == (503, "1", "broker_busy")


@pytest.mark.parametrize("call", ["append_events", "topic_stats"])
def test_a_loading_redis_refuses_appends_with_broker_loading(prefix: str, call: str) -> None:
    """LOADING through the broker (the POST path's calls), not HTTP: a loading Redis answers
    only every few seconds, past the web process's socket timeout; the HTTP answer of every
    BrokerRefused (503, code, Retry-After) is the same path the tests above take. A new
    topic's append reads topic_stats, which may be the call that meets the reload first."""
    with RedisServer(args=("--enable-debug-command", "local")) as server:
        control = redis.Redis(port=server.port, socket_timeout=120)
        control.execute_command("DEBUG", "POPULATE", 20000)
        control.config_set("key-load-delay", 200)  # µs per key: a reload of several seconds
        control.config_set("loading-process-events-interval-bytes", 1024)  # answering meanwhile
        reload = threading.Thread(target=control.execute_command, args=("DEBUG", "RELOAD"))
        broker = RedisBroker(server.url, prefix=prefix, socket_timeout=60)
        raised: list[BrokerLoading] = []
        reload.start()
        try:
            while reload.is_alive() and not raised:
                try:
                    if call == "append_events":
                        broker.append_events("loading", [Event(1.0, 1)], lateness_us=0)
                    else:
                        broker.topic_stats()
                except BrokerLoading as exc:
                    raised.append(exc)
        finally:
            reload.join()
            broker.close()
            control.close()
    assert [(status_of(e), e.code, headers_of(e)) for e in raised] == [
        (503, "broker_loading", {"Retry-After": "5"})
    ]


def test_the_private_redis_of_serve_workers_does_not_evict() -> None:
    process = PushsvcProcess("serve", "--workers", "2", "--tick", "0").start()
    try:
        process.wait_for_log(r"private redis-server \S+ \(")
        line = next(line for line in process.output if "private redis-server" in line)
        socket_path = re.search(r"\((\S+)\)", line)
        assert socket_path is not None
        private = redis.Redis(unix_socket_path=socket_path[1])
        assert private.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        private.close()
    finally:
        process.stop()
