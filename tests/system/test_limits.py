"""Per-client limits: each reached and answered as docs/design.md says (JSON, before any streaming,
counted in /metrics by reason), while the server keeps serving everyone else."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest
from harness.live import PushsvcProcess, SSEClient, post, request, wait_until

from pushsvc.core.topics import MAX_SELECTORS
from pushsvc.errors import RateLimited, ServerBusy, TooManyStreams
from pushsvc.http.api.error_replies import headers_of
from pushsvc.security.limits import RateLimiter, StreamSlots
from support.auth_tokens import SECRET, hs256

# ------------------------------------------------------------------ units, on a driven clock


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_admits_a_burst_of_one_second_then_the_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(10, clock=clock)
    for _ in range(10):
        limiter.admit("a")
        limiter.charge("a", 1)
    with pytest.raises(RateLimited) as refused:
        limiter.admit("a")
    assert headers_of(refused.value)["Retry-After"] == "1"
    limiter.admit("b")  # every key has its own bucket
    clock.now += 0.1  # one event's worth
    limiter.admit("a")


def test_a_batch_bigger_than_the_burst_passes_once_then_waits_its_cost() -> None:
    clock = Clock()
    limiter = RateLimiter(10, clock=clock)
    limiter.admit("a")
    limiter.charge("a", 45)  # 35 in debt: 3.5 s until the bucket holds anything again
    with pytest.raises(RateLimited) as refused:
        limiter.admit("a")
    assert headers_of(refused.value)["Retry-After"] == "4"
    clock.now += 3.4
    with pytest.raises(RateLimited):
        limiter.admit("a")
    clock.now += 0.2
    limiter.admit("a")


def test_idle_buckets_are_forgotten_when_many_keys_pile_up() -> None:
    clock = Clock()
    limiter = RateLimiter(5, clock=clock)
    limiter.PRUNE_AT = 100
    for n in range(100):
        limiter.admit(f"ip{n}")
        limiter.charge(f"ip{n}", 1)
    clock.now += 2  # every bucket is full again: nothing to remember
    limiter.admit("newcomer")
    limiter.charge("newcomer", 1)
    assert len(limiter._buckets) == 1


def test_stream_slots_per_address_and_in_all() -> None:
    slots = StreamSlots(per_ip=2, total=3)
    a1, a2 = slots.acquire("a"), slots.acquire("a")
    with pytest.raises(TooManyStreams):
        slots.acquire("a")
    b1 = slots.acquire("b")
    with pytest.raises(ServerBusy) as busy:
        slots.acquire("c")
    assert headers_of(busy.value)["Retry-After"]
    a1()
    a1()  # releasing twice frees one slot, not two
    slots.acquire("c")
    with pytest.raises(ServerBusy):
        slots.acquire("d")
    a2(), b1()
    assert slots.open == 1


# ------------------------------------------------------------------ a real server


@pytest.fixture(scope="module")
def limited() -> Iterator[PushsvcProcess]:
    proc = PushsvcProcess(
        "serve",
        "--tick",
        "0",
        "--heartbeat",
        "1s",
        env={
            "PUSHSVC_MAX_STREAMS_PER_IP": "3",
            "PUSHSVC_MAX_STREAMS": "5",
            "PUSHSVC_TRUSTED_PROXIES": "1",
            "PUSHSVC_PUBLISH_RATE": "20",
        },
    ).start()
    yield proc
    proc.stop()


def _from(ip: str) -> dict[str, str]:
    # What the one trusted proxy in front (nginx) adds: the client's address.
    return {"X-Forwarded-For": ip}


def _error(status_headers_body: tuple[int, dict[str, str], bytes]) -> tuple[int, str]:
    status, _, body = status_headers_body
    return status, json.loads(body)["error"]["code"]


def _rejected(server: PushsvcProcess, code: str) -> float:
    body = request(server.port, "GET", "/metrics")[2].decode()
    match = re.search(rf'pushsvc_requests_rejected_total{{code="{code}"}} (\S+)', body)
    return float(match[1]) if match else 0.0


def _open(server: PushsvcProcess, ip: str, topic: str = "lim.a") -> SSEClient:
    stream = SSEClient(server.port, f"/topics/{topic}/stream", headers=_from(ip))
    if stream.status == 200:
        assert stream.next().event == "snapshot"
    return stream


def test_streams_per_address_then_per_process(limited: PushsvcProcess) -> None:
    opened = [_open(limited, "10.0.0.1") for _ in range(3)]
    try:
        fourth = _open(limited, "10.0.0.1")
        assert fourth.status == 429
        assert json.loads(fourth._resp.read())["error"]["code"] == "too_many_streams"
        fourth.close()
        # Another address still gets in: the limit is per client, not a global lock-out.
        opened += [_open(limited, "10.0.0.2"), _open(limited, "10.0.0.3")]
        assert all(s.status == 200 for s in opened)
        # Five streams is this process's maximum: the next one is told to come back later.
        busy = SSEClient(limited.port, "/topics/lim.a/stream", headers=_from("10.0.0.4"))
        assert busy.status == 503
        assert int(busy.response_headers["retry-after"]) > 0
        busy.close()
        assert request(limited.port, "GET", "/healthz")[0] == 200
        assert post(limited.port, "lim.a", {"value": 1}, headers=_from("10.0.0.9"))[0] == 202
        assert all(s.next_data()[1]["event"]["value"] == 1 for s in opened)
        assert _rejected(limited, "too_many_streams") >= 1
        assert _rejected(limited, "server_busy") >= 1
    finally:
        for stream in opened:
            stream.close()
    # Closed streams give their slots back.
    wait_until(lambda: _status_of_a_stream(limited, "10.0.0.1") == 200)


def _status_of_a_stream(server: PushsvcProcess, ip: str) -> int:
    with _open(server, ip) as stream:
        return stream.status


def test_a_forged_forwarded_for_is_not_believed_past_the_trusted_hops() -> None:
    server = PushsvcProcess("serve", "--tick", "0", env={"PUSHSVC_MAX_STREAMS_PER_IP": "2"}).start()
    try:
        # No proxy is trusted: every "address" below is really 127.0.0.1.
        streams = [_open(server, f"10.1.0.{n}") for n in range(3)]
        assert [s.status for s in streams] == [200, 200, 429]
        for stream in streams:
            stream.close()
    finally:
        server.stop()


def test_too_many_selectors_is_a_400_counted_by_its_code(limited: PushsvcProcess) -> None:
    query = "&".join(f"topic=lim.s{n}" for n in range(MAX_SELECTORS + 1))
    refused = _error(request(limited.port, "GET", f"/stream?{query}"))
    assert refused == (400, "too_many_selectors")
    assert _rejected(limited, "too_many_selectors") >= 1
    query = "&".join(f"topic=lim.s{n}" for n in range(MAX_SELECTORS))
    with SSEClient(limited.port, f"/stream?{query}") as ok:
        assert ok.status == 200


def test_the_publish_rate_per_client_address(limited: PushsvcProcess) -> None:
    me, other = _from("10.2.0.1"), _from("10.2.0.2")
    # 40 events at 20/s: admitted (the bucket was full), leaving it a second in debt.
    assert post(limited.port, "lim.r", [{"value": 1}] * 40, headers=me)[0] == 202
    status, headers, body = request(
        limited.port, "POST", "/topics/lim.r/events", {"value": 1}, headers=me
    )
    assert (status, json.loads(body)["error"]["code"]) == (429, "rate_limited")
    assert int(headers["retry-after"]) >= 1
    assert post(limited.port, "lim.r", {"value": 1}, headers=other)[0] == 202
    # The bucket refills at the rate: the producer gets in again.
    wait_until(lambda: post(limited.port, "lim.r", {"value": 1}, headers=me)[0] == 202, 3)
    assert _rejected(limited, "rate_limited") >= 1


def test_the_publish_rate_follows_the_token_subject_across_addresses() -> None:
    server = PushsvcProcess(
        "serve",
        "--tick",
        "0",
        env={
            "PUSHSVC_JWT_KEY": SECRET,
            "PUSHSVC_PUBLISH_RATE": "10",
            "PUSHSVC_TRUSTED_PROXIES": "1",
        },
    ).start()
    try:
        alice = {"Authorization": f"Bearer {hs256(publish=['*'], subject='alice')}"}
        bob = {"Authorization": f"Bearer {hs256(publish=['*'], subject='bob')}"}
        assert (
            post(server.port, "r", [{"value": 1}] * 20, headers={**alice, **_from("10.3.0.1")})[0]
            == 202
        )
        # Another address does not reset alice's bucket; bob has his own.
        assert (
            post(server.port, "r", {"value": 1}, headers={**alice, **_from("10.3.0.2")})[0] == 429
        )
        assert post(server.port, "r", {"value": 1}, headers={**bob, **_from("10.3.0.1")})[0] == 202
    finally:
        server.stop()


def test_a_refused_batch_costs_no_rate(limited: PushsvcProcess) -> None:
    me = _from("10.4.0.1")
    for _ in range(30):  # bad input is answered as bad input, never eats the budget
        assert post(limited.port, "lim.b", {"value": "x"}, headers=me)[0] == 400
    assert post(limited.port, "lim.b", [{"value": 1}] * 20, headers=me)[0] == 202
