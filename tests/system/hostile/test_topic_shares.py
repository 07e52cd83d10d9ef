"""One tenant creating topics as fast as it can takes its share of `--max-topics`, never the
table: past its share it is answered `429 topic_share_spent` with `Retry-After`, another
tenant's first event to a topic of its own is accepted, and a legitimate producer and a new
stream are served within their bounds meanwhile; once the attacker stops, its topics are
forgotten after `--topic-ttl` and its share comes back (docs/security.md#limits).

Publishers are told apart by token subject with auth on, else by client address (the
attacker, the other tenant and the legitimate client post from three loopback addresses).
"""

from __future__ import annotations

import http.client
import json
import time

import pytest
from harness.live import PushsvcProcess, SSEClient, metric, request, wait_until

from support.auth_tokens import SECRET, hs256
from support.legitimate import LegitimateClient

TTL_S = 2
BOUND_S = 2.0
"""A legitimate POST's and a new stream's head's latency, at most."""
ATTACKER, OTHER = "127.0.0.2", "127.0.0.3"
"""The attacker's and the other tenant's addresses (the legitimate client's: 127.0.0.1)."""


def _create_topics(
    port: int, prefix: str, count: int, headers: dict[str, str], source: str
) -> list[int]:
    """POST one event to each of `count` new topics on one connection: the statuses."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=(source, 0))
    statuses = []
    try:
        for n in range(count):
            conn.request(
                "POST",
                f"/topics/{prefix}.{n:05d}/events",
                body=json.dumps({"value": n}),
                headers={"Content-Type": "application/json", **headers},
            )
            response = conn.getresponse()
            response.read()
            statuses.append(response.status)
    finally:
        conn.close()
    return statuses


def _head_latency(port: int, path: str, headers: dict[str, str]) -> float:
    start = time.monotonic()
    with SSEClient(port, path, headers=headers) as stream:
        assert stream.status == 200
    return time.monotonic() - start


@pytest.mark.parametrize("auth", [False, True], ids=["by-address", "by-subject"])
@pytest.mark.parametrize("max_topics", [1000, 4], ids=["quarter-of-1000", "least"])
def test_one_tenant_takes_its_share_of_the_topics_never_the_table(
    topic: str, max_topics: int, auth: bool
) -> None:
    # One-second windows: a topic is forgotten once they are empty and it had no event for
    # the TTL.
    proc = PushsvcProcess(
        "serve", "--tick", "0", "--windows", "1s", "--max-topics", str(max_topics),
        "--topic-ttl", f"{TTL_S}s", env={"PUSHSVC_JWT_KEY": SECRET} if auth else {},
    ).start()  # fmt: skip
    share = max(1, max_topics // 4)

    def as_tenant(name: str, *topics: str) -> dict[str, str]:
        if not auth:
            return {}
        token = hs256(subject=name, publish=list(topics), subscribe=list(topics))
        return {"Authorization": f"Bearer {token}"}

    attacker = as_tenant("tenant-a", "tenant-a.*")
    other = as_tenant("tenant-b", "orders")
    mine = as_tenant("legit", f"{topic}.*")
    legit = LegitimateClient(proc.port, f"{topic}.legit", headers=mine)
    try:
        legit.round()
        statuses = _create_topics(proc.port, "tenant-a", share + 20, attacker, ATTACKER)
        assert statuses == [202] * share + [429] * 20
        # The refusal: its code, Retry-After within the TTL, and nothing created.
        status, headers, body = request(
            proc.port, "POST", "/topics/tenant-a.more/events", {"value": 1},
            headers=attacker, source=ATTACKER,
        )  # fmt: skip
        assert status == 429 and json.loads(body)["error"]["code"] == "topic_share_spent"
        assert 1 <= int(headers["retry-after"]) <= TTL_S
        # Nor does a request to many topics take more: each new topic refused in its result.
        status, _, body = request(
            proc.port, "POST", "/events",
            [{"topic": f"tenant-a.batch.{n}", "value": 1} for n in range(3)],
            headers=attacker, source=ATTACKER,
        )  # fmt: skip
        assert status == 207, body
        results = json.loads(body)["results"]
        assert [r["error"]["code"] for r in results] == ["topic_share_spent"] * 3, results
        assert metric(proc.port, "pushsvc_topics_live") == share + 1
        # Its own topics still take its events.
        assert _create_topics(proc.port, "tenant-a", 1, attacker, ATTACKER) == [202]
        # Another tenant's first event to a topic of its own is accepted.
        status, _, _ = request(
            proc.port, "POST", "/topics/orders/events", {"value": 1},
            headers=other, source=OTHER,
        )  # fmt: skip
        assert status == 202
        # The legitimate producer and a new stream are served within the bound.
        for _ in range(5):
            legit.round()
        assert max(legit.latencies) < BOUND_S
        assert _head_latency(proc.port, f"/topics/{topic}.new/stream", mine) < BOUND_S

        # The attacker stops: its topics are forgotten after the TTL (the legitimate client
        # posting meanwhile keeps its own), and its share is back.
        def forgotten() -> bool:
            legit.round()
            return metric(proc.port, "pushsvc_topics_live") <= 2

        wait_until(forgotten, timeout=TTL_S * 4 + 10, what="the attacker's topics forgotten")
        again = _create_topics(proc.port, "tenant-a.again", share, attacker, ATTACKER)
        assert again == [202] * share
        legit.assert_fast()
        assert max(legit.latencies) < BOUND_S
    finally:
        legit.close()
        proc.stop()
