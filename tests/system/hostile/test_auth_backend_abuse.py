"""Anonymous clients against the auth proxy (`--auth-url`), with the suite's application
backend (tests/support/auth_backend.py) and pushsvc as real processes: what one client sends
must cost the others nothing.

* A flood of made-up session cookies from one address, each fresh (so no cache can know it),
  against a backend that takes half a second to deny: the address holds its share of the asks
  and no more, so a real user beside it signs in without a 503 and keeps a stream through its
  renewals. Before the per-address bound the flood held every ask: 14-16 of the user's 20
  sign-ins were 503s and the stream ended at its first renewal.
* A cookie with a byte that is not ASCII is one clear 401, not a 500 and a traceback per
  request.
* A backend answering a gzip bomb costs pushsvc no memory to speak of: its answer is bounded
  before and after decoding (before, every such ask inflated some 64-130 MB).
"""

from __future__ import annotations

import json
import secrets
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from harness.app_process import AppProcess
from harness.live import PushsvcProcess, SSEClient, metric_sample, request, wait_until
from harness.procfs import peak_rss_kb, reset_peak_rss

from support.auth_tokens import hs256

pytestmark = pytest.mark.slow

STREAM = "/topics/orders/stream"
FLOOD_ADDRESS = "127.0.0.2"  # the server listens on 127.0.0.1; all of 127/8 reaches it
FLOOD_THREADS = 80  # more than a process has asks (64, backend_auth.MAX_ASKS), as the attacker sent
PER_ADDRESS = 64 // 4  # pushsvc.security.ask_slots.per_address(64)


@pytest.fixture(scope="module")
def backend() -> Iterator[AppProcess]:
    with AppProcess("-m", "support.auth_backend") as app:
        yield app


def _mode(backend: AppProcess, **state: Any) -> None:
    given = {
        "mode": "tokens",
        "delay_s": 0,
        "deny_delay_s": 0,
        "ttl": 60,
        "body": "",
        "bomb_mb": 0,
        "forget": True,
        **state,
    }
    assert request(backend.port, "POST", "/mode", given)[0] == 200


def _asks(backend: AppProcess) -> list[dict[str, Any]]:
    asks: list[dict[str, Any]] = json.loads(request(backend.port, "GET", "/asks")[2])
    return asks


def _pushsvc(backend: AppProcess) -> PushsvcProcess:
    return PushsvcProcess(
        "serve",
        "--tick", "0",
        "--heartbeat", "1s",
        "--auth-url", f"{backend.url}/auth",
        "--auth-cookies", "session",
    ).start()  # fmt: skip


class _Flood:
    """FLOOD_THREADS clients from FLOOD_ADDRESS, each sending request after request with a
    fresh random session cookie; what they were answered, counted."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.stop = threading.Event()
        self.answers: Counter[int] = Counter()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run) for _ in range(FLOOD_THREADS)]

    def _run(self) -> None:
        while not self.stop.is_set():
            cookie = {"Cookie": f"session={secrets.token_urlsafe(24)}"}
            status = request(self.port, "GET", "/topics", headers=cookie, source=FLOOD_ADDRESS)[0]
            with self._lock:
                self.answers[status] += 1
            if status == 429:
                self.stop.wait(0.05)  # paces the flood (an attacker would not): CPU is shared

    def __enter__(self) -> _Flood:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join()


def test_a_flood_of_made_up_cookies_from_one_address_costs_a_real_user_nothing(
    backend: AppProcess,
) -> None:
    _mode(backend, deny_delay_s=0.5, ttl=2)
    proc = _pushsvc(backend)
    try:
        carol = {"Authorization": f"Bearer {hs256(subscribe=['orders'], subject='carol')}"}
        with _Flood(proc.port) as flood:
            wait_until(
                lambda: len(_asks(backend)) >= 2 * PER_ADDRESS,
                what="the flood's asks reach the backend",
            )
            # Sign-ins the cache cannot answer: a fresh credential each.
            statuses = []
            for n in range(20):
                fresh = hs256(subscribe=["orders"], subject=f"user-{n}")
                headers = {"Authorization": f"Bearer {fresh}"}
                statuses.append(request(proc.port, "GET", "/topics", headers=headers)[0])
            assert statuses == [200] * 20
            # A stream on a 2 s grant: 6 heartbeats of 1 s see it through 2 renewals at least.
            with SSEClient(proc.port, STREAM, headers=carol, timeout=30) as stream:
                assert stream.status == 200
                stream.next_data("snapshot")
                stream.wait_comments(6)
        renewals = [a for a in _asks(backend) if a["body"]["action"] == "subscribe"]
        assert len(renewals) >= 3, renewals  # the opening ask and two renewals
        assert not any("stream ended: expired" in line for line in proc.output)
        # The flood was denied, or told to wait, and nothing else.
        assert set(flood.answers) == {401, 429}, flood.answers
        denied = metric_sample(proc.port, "pushsvc_auth_asks_total", '{outcome="denied"}')
        assert denied >= PER_ADDRESS
    finally:
        proc.stop()


def test_the_same_made_up_cookie_again_costs_one_ask(backend: AppProcess) -> None:
    """A denial is kept briefly: a client repeating one made-up credential asks once."""
    _mode(backend)
    proc = _pushsvc(backend)
    try:
        made_up = {"Cookie": "session=not-a-session"}
        for _ in range(5):
            assert request(proc.port, "GET", "/topics", headers=made_up)[0] == 401
        assert len(_asks(backend)) == 1
    finally:
        proc.stop()


@pytest.mark.parametrize("value", ["al\xc3\xa9ice", "a\x01b", "a\x7fb"])
def test_a_cookie_that_cannot_be_forwarded_is_one_clear_401(
    backend: AppProcess, value: str
) -> None:
    """http.client sends the str's code points as bytes (latin-1): `al\\xc3\\xa9ice` is the
    UTF-8 of `aléice` on the wire."""
    _mode(backend)
    proc = _pushsvc(backend)
    try:
        for path in ("/topics", STREAM):
            status, _, body = request(
                proc.port, "GET", path, headers={"Cookie": f"session={value}"}
            )
            assert status == 401, body
            error = json.loads(body)["error"]
            assert error["code"] == "unauthorized"
            assert "not printable ASCII" in error["message"]
        assert _asks(backend) == []
        assert request(proc.port, "GET", "/healthz")[0] == 200
    finally:
        proc.stop()
    assert not [line for line in proc.output if "Traceback" in line], proc.log_tail(60)


def test_a_gzip_bomb_from_the_backend_is_refused_before_it_is_inflated(
    backend: AppProcess,
) -> None:
    """256 MiB of spaces in 256 KiB of gzip: a 503, one clear line, and pushsvc's peak memory
    far below even one 64 KiB chunk inflated (some 64 MB); a gzip grant of honest size is
    read all the same, and pushsvc asks for no encoding."""
    alice = {"Authorization": f"Bearer {hs256(subscribe=['orders'], subject='alice')}"}
    _mode(backend, mode="gzip")
    proc = _pushsvc(backend)
    try:
        assert request(proc.port, "GET", "/topics", headers=alice)[0] == 200
        assert _asks(backend)[0]["accept_encoding"] == "identity"
        _mode(backend, mode="gzip_bomb", bomb_mb=256)
        bob = {"Authorization": f"Bearer {hs256(subscribe=['orders'], subject='bob')}"}
        reset_peak_rss(proc.pid)
        before_kb = peak_rss_kb(proc.pid)
        for _ in range(3):
            status, _, body = request(proc.port, "GET", "/topics", headers=bob)
            assert status == 503, body
            assert json.loads(body)["error"]["code"] == "auth_unavailable"
        grown_mb = (peak_rss_kb(proc.pid) - before_kb) / 1024
        assert grown_mb < 16, f"pushsvc's peak memory grew by {grown_mb:.0f} MB"
        proc.wait_for_log("answered more than 65536 bytes")
    finally:
        proc.stop()
    assert not [line for line in proc.output if "Traceback" in line]
