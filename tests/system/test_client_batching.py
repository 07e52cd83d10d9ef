"""Clients that batch by themselves, and `pushsvc publish` over many topics, against a real
`pushsvc serve`: a program that ends right after `publish` loses nothing; each call learns its
own outcome (an error reaches the caller of that message only, the others of its batch are
logged); late counts reach the caller and the command line."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from harness.live import SRC, PushsvcProcess, request, run_tool, wait_until

from pushsvc.client import ApiError, AsyncClient, BatchSettings, Client, Published
from support.auth_tokens import SECRET, hs256

# Long enough that every call of a test is held until `flush()` or a waiting caller sends
# them: the calls share one batch.
HOLD = BatchSettings(linger=30.0, max_events=1000)


@pytest.fixture(scope="module")
def secured() -> Iterator[PushsvcProcess]:
    proc = PushsvcProcess("serve", "--tick", "0", env={"PUSHSVC_JWT_KEY": SECRET}).start()
    yield proc
    proc.stop()


def values(port: int, topic: str, count: int, headers: dict[str, str] | None = None) -> list[Any]:
    """The values (or message data) of `topic`'s updates, once it has `count` of them."""
    found: list[Any] = []

    def enough() -> bool:
        status, _, body = request(port, "GET", f"/topics/{topic}/history", headers=headers)
        if status != 200:
            return False
        found[:] = [
            u["event"].get("value", u["event"].get("data")) for u in json.loads(body)["updates"]
        ]
        return len(found) >= count

    wait_until(enough, timeout=30, what=f"{topic} has {count} updates")
    return found


def test_a_program_that_ends_right_after_publish_loses_nothing(server: PushsvcProcess) -> None:
    """No close, no `with`: the interpreter's exit sends what the client holds (a linger far
    longer than the program's life)."""
    stem = f"exit-{uuid.uuid4().hex[:8]}"
    program = f"""
from pushsvc.client import BatchSettings, Client
client = Client({server.base!r}, batching=BatchSettings(linger=60.0, max_events=10_000))
for i in range(250):
    client.publish("{stem}-" + str(i % 5), {{"value": i}})
"""
    ran = subprocess.run(
        [sys.executable, "-c", program],
        env={"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode == 0, ran.stderr
    for t in range(5):
        assert values(server.port, f"{stem}-{t}", 50) == list(range(t, 250, 5))


def test_each_call_of_a_batch_learns_its_own_outcome(server: PushsvcProcess) -> None:
    stem = uuid.uuid4().hex[:8]
    with Client(server.base, batching=HOLD) as client:
        first = client.publish(f"{stem}-a", [{"value": 1}, {"value": 2}])
        bad = client.publish(f"{stem}-b", [{"value": 3}, {"value": "four"}])
        other = client.publish(f"{stem}-c", data={"hello": "there"}, type="greeting")
        assert not first.done()  # held for the batch
        assert client.flush(timeout=30)
        assert first.result() == 2 and isinstance(first.result(), Published)
        assert other.result() == 1
        with pytest.raises(ApiError) as refused:
            bad.result()
        # The index counts the caller's own events.
        assert (refused.value.status, refused.value.code, refused.value.index) == (
            400,
            "invalid_event",
            1,
        )
    assert values(server.port, f"{stem}-a", 2) == [1, 2]
    assert values(server.port, f"{stem}-c", 1) == [{"hello": "there"}]


def test_a_topic_refused_to_the_token_fails_its_callers_only(secured: PushsvcProcess) -> None:
    stem = uuid.uuid4().hex[:8]
    mine, theirs = f"{stem}.mine", f"{stem}.theirs"
    token = hs256(publish=[mine], subscribe=["*"])
    with Client(secured.base, token=token, batching=HOLD) as client:
        calls = [client.publish(mine, {"value": 1}), client.publish(theirs, {"value": 2})]
        calls.append(client.publish(mine, {"value": 3}))
        client.flush(timeout=30)
        assert calls[0].result() == 1 and calls[2].result() == 1
        with pytest.raises(ApiError) as forbidden:
            calls[1].result()
        assert (forbidden.value.status, forbidden.value.code) == (403, "forbidden")
    reader = {"Authorization": f"Bearer {hs256(subscribe=['*'])}"}
    assert values(secured.port, mine, 2, reader) == [1, 3]


def test_a_loop_of_publish_is_sent_in_few_requests_in_order(server: PushsvcProcess) -> None:
    stem = uuid.uuid4().hex[:8]
    sent: list[str] = []
    http = httpx.Client(event_hooks={"request": [lambda r: sent.append(r.url.path)]})
    with http, Client(server.base, http=http) as client:
        futures = [client.publish(f"{stem}-{i % 3}", {"value": i}) for i in range(600)]
        client.flush()
    assert sum(futures) == 600
    assert set(sent) == {"/events"}
    assert 6 <= len(sent) < 100, len(sent)  # 100 events a batch by default
    for t in range(3):
        assert values(server.port, f"{stem}-{t}", 200) == list(range(t, 600, 3))


def test_the_clients_and_the_command_line_report_late_events(server: PushsvcProcess) -> None:
    topic = f"shop.orders-{uuid.uuid4().hex[:8]}"
    now = time.time()
    with Client(server.base) as client:
        assert client.publish(topic, {"value": 1, "ts": now}).result() == 1
        late = client.publish(topic, {"value": 2, "ts": now - 3 * 3600}).result()
    assert (late.accepted, late.late, late.late_topic) == (0, 1, f"{topic}.late")

    async def publish_late() -> Published:
        async with AsyncClient(server.base) as client:
            return await client.publish(topic, {"value": 3, "ts": now - 3 * 3600})

    answer = asyncio.run(publish_late())
    assert (answer.accepted, answer.late) == (0, 1)
    ran = run_tool("publish", topic, "5", "--ts", str(now - 3 * 3600), "--url", server.base)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == f"accepted 0, late 1 (on {topic}.late)"


def test_publish_reads_ndjson_items_that_name_their_topics(server: PushsvcProcess) -> None:
    stem = uuid.uuid4().hex[:8]
    lines = [
        {"topic": f"{stem}-u1", "type": "shipped", "data": {"order": 1}},
        {"topic": f"{stem}-u2", "value": 2},
        {"topic": f"{stem}-u1", "value": 3},
        {"topic": f"{stem}-u2", "value": 4, "ts": time.time() - 3600},
    ]
    stdin = "".join(json.dumps(line) + "\n" for line in lines)
    ran = run_tool("publish", "--url", server.base, stdin=stdin)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == f"accepted 3, late 1 (on {stem}-u2.late)"
    assert values(server.port, f"{stem}-u1", 2) == [{"order": 1}, 3]
    # A refused item is named, the others logged, and the exit status says so.
    stdin = "".join(
        json.dumps(line) + "\n"
        for line in [{"topic": f"{stem}-u3", "value": 1}, {"topic": "no good", "value": 2}]
    )
    ran = run_tool("publish", "--url", server.base, stdin=stdin)
    assert ran.returncode == 1
    assert ran.stdout.strip() == "accepted 1, refused 1"
    assert "item 2 (topic no good): HTTP 400 invalid_topic" in ran.stderr
    assert values(server.port, f"{stem}-u3", 1) == [1]
    # An item without a topic: nothing is sent.
    ran = run_tool("publish", "--url", server.base, stdin='{"value": 1}\n')
    assert ran.returncode == 1 and "names no topic" in ran.stderr
