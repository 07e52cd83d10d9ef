"""POSTing batches of events as fast as they are accepted: threads on keep-alive connections
(bench/e2e.py); and what a publisher reports, here or in
the load generator (loadgen/publisher.py: one event per POST, paced)."""

from __future__ import annotations

import http.client
import queue
import threading
import time
from dataclasses import dataclass, field

import orjson


@dataclass
class Published:
    accepted: int = 0
    """Events the server accepted (a batch: answered 202 with the batch's length)."""
    errors: dict[str, int] = field(default_factory=dict)
    """Events in batches that failed, by reason."""
    first_sent: float = 0.0
    last_accepted: float = 0.0


def batches(events: int, size: int, message_bytes: int = 0) -> list[tuple[int, bytes]]:
    """Events with values 0..events-1 as JSON arrays of up to `size` (no ts: the server stamps
    them), each with its length: what `publish` takes. With `message_bytes`, each is a message
    without a value instead (`event_json`)."""
    return [
        (len(values), b"[" + b",".join(event_json(v, message_bytes) for v in values) + b"]")
        for values in (range(start, min(events, start + size)) for start in range(0, events, size))
    ]


def event_json(value: int, message_bytes: int = 0) -> bytes:
    """`{"value": value}`, or with `message_bytes` a message whose data is `{"value": value,
    "pad": "xx.."}` of exactly that many bytes (at least the value's own)."""
    if not message_bytes:
        return b'{"value":%d}' % value
    data = b'{"value":%d,"pad":"' % value
    data += b"x" * max(0, message_bytes - len(data) - 2) + b'"}'
    return b'{"type":"message","data":%s}' % data


def publish(
    bases: list[str], path: str, bodies: list[tuple[int, bytes]], publishers: int, timeout: float
) -> Published:
    """POST every body once, from `publishers` threads (publisher i to bases[i % len(bases)]),
    each taking the next body as soon as its previous one is answered. One publisher keeps
    value order equal to publication order."""
    result = Published()
    todo: queue.SimpleQueue[tuple[int, bytes]] = queue.SimpleQueue()
    for item in bodies:
        todo.put(item)
    lock = threading.Lock()
    deadline = time.monotonic() + timeout
    started = threading.Barrier(publishers)

    def fail(reason: str, count: int) -> None:
        with lock:
            result.errors[reason] = result.errors.get(reason, 0) + count

    def run(base: str) -> None:
        host, port = base.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        headers = {"Content-Type": "application/json"}
        started.wait()
        with lock:
            result.first_sent = result.first_sent or time.time()
        try:
            while time.monotonic() < deadline:
                try:
                    count, body = todo.get_nowait()
                except queue.Empty:
                    return
                try:
                    connection.request("POST", path, body, headers)
                    response = connection.getresponse()
                    answer = response.read()
                except (OSError, http.client.HTTPException) as exc:
                    connection.close()  # reconnects on the next request
                    fail(type(exc).__name__, count)
                    continue
                if response.status != 202 or orjson.loads(answer).get("accepted") != count:
                    fail(f"status {response.status}", count)
                    continue
                now = time.time()
                with lock:
                    result.accepted += count
                    result.last_accepted = max(result.last_accepted, now)
            while not todo.empty():  # the deadline passed
                fail("deadline", todo.get_nowait()[0])
        finally:
            connection.close()

    threads = [
        threading.Thread(target=run, args=(bases[i % len(bases)],), daemon=True)
        for i in range(publishers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout + 60)
    return result
