"""What the costliest URL patterns the bounds allow take from a hub's memory, measured as its
resident size: from one client address until it is refused its share (`429`), then from more
addresses until the process is refused any new pattern (`503`), with topics published that
every pattern reads to the end (its engine's caches grown). The resident growth stays within
the bounds docs/security.md gives in bytes (`MAX_PATTERN_BYTES_PER_ADDRESS`,
`MAX_LIVE_PATTERN_BYTES`), plus a slack for what the streams themselves hold.

The costliest pattern is a long run of classes that span all of Unicode (`[^a]`, some 6 KiB
each compiled), as long as `MAX_COMPILED_BYTES` lets it be, measured here as the hub
measures it.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from functools import partial
from urllib.parse import urlencode

import psutil
import pytest
from harness.live import PushsvcProcess, SSEClient
from urlpattern import URLPattern

from pushsvc.deliver.mercure_pattern_bytes import MAX_COMPILED_BYTES, measured
from pushsvc.deliver.mercure_pattern_shares import MAX_PATTERN_BYTES_PER_ADDRESS
from pushsvc.deliver.mercure_selectors import MAX_LIVE_PATTERN_BYTES, MAX_URLPATTERNS
from support.mercure_hub import HUB, SECRET, publish

MIB = 1 << 20
STREAM_SLACK = 16 * MIB
"""What the streams and their requests hold beside their patterns (tens of streams), and
what the allocator keeps of a compilation's passing peak."""


def costliest_run() -> int:
    """The longest run of `[^a]` whose pattern compiles within `MAX_COMPILED_BYTES`."""
    for run in range(120, 0, -4):
        _, size = measured(partial(URLPattern, pattern("probe", run), "http://h/"))
        assert size is not None, "the heap cannot be read here: every pattern is charged its most"
        if size <= MAX_COMPILED_BYTES - (32 << 10):
            return run
    raise AssertionError("no run fits")


def pattern(name: str, run: int) -> str:
    """Patterns apart by their hash, so that a topic's pathname is read by each."""
    return "https://x.example/:p(" + "[^a]" * run + f")#{name}"


@pytest.fixture(scope="module")
def hub() -> Iterator[PushsvcProcess]:
    proc = PushsvcProcess(
        "serve",
        *("--mercure", "anonymous", "--trusted-proxies", "1", "--tick", "0"),
        env={"PUSHSVC_JWT_KEY": SECRET},
    ).start()
    try:
        yield proc
    finally:
        proc.stop()


def test_the_costliest_patterns_stay_within_the_bounds_in_bytes(hub: PushsvcProcess) -> None:
    run = costliest_run()
    server = psutil.Process(hub.pid)
    streams: list[SSEClient] = []

    def subscribe(address: str, n: int, run: int = run) -> int:
        # As many as the request line takes (8 KiB), at most a subscription's.
        chosen: list[tuple[str, str]] = []
        for i in range(MAX_URLPATTERNS):
            name = f"a{address.replace('.', '')}-{n}-{i}-{uuid.uuid4().hex[:6]}"
            if len(urlencode([*chosen, ("match_urlpattern", pattern(name, run))])) > 7900:
                break
            chosen.append(("match_urlpattern", pattern(name, run)))
        query = urlencode(chosen)
        stream = SSEClient(hub.port, f"{HUB}?{query}", headers={"X-Forwarded-For": address})
        if stream.status == 200:
            streams.append(stream)
        else:
            stream.close()
        return stream.status

    try:
        # Warmed up first: a cheap pattern's subscription and a publication it reads, so that
        # what the first of each costs the process once is not counted as the patterns'.
        assert subscribe("10.0.0.100", 0, run=1) == 200
        grow(hub, run)
        before = server.memory_info().rss
        # One address, until its share is full.
        statuses = [subscribe("10.0.0.1", n) for n in range(8)]
        assert 429 in statuses, statuses
        taken_one = statuses.index(429)
        assert taken_one >= 1  # one subscription of the costliest patterns is always taken
        grow(hub, run)
        one = server.memory_info().rss - before
        assert one <= MAX_PATTERN_BYTES_PER_ADDRESS + STREAM_SLACK, one / MIB
        # More addresses, until the process refuses any new pattern.
        refused_by_process = False
        for host in range(2, 12):
            for n in range(8):
                status = subscribe(f"10.0.0.{host}", n)
                if status == 503:
                    refused_by_process = True
                    break
                if status == 429:
                    break
            if refused_by_process:
                break
        assert refused_by_process
        grow(hub, run)
        every = server.memory_info().rss - before
        assert every <= MAX_LIVE_PATTERN_BYTES + STREAM_SLACK, every / MIB
        # What was compiled: at least half of the most a pattern may take, each.
        assert len(streams) * 8 * MAX_COMPILED_BYTES // 2 <= every
    finally:
        for stream in streams:
            stream.close()


def grow(hub: PushsvcProcess, run: int) -> None:
    """Publish topics whose pathname each pattern reads to its end, of every width of UTF-8
    character, so that the engines' caches grow as far as such topics take them."""
    rnd = random.Random(7)
    for _ in range(24):
        # Two, three and four bytes of UTF-8, none a control or format character.
        chars = [chr(rnd.randint(0x100, 0x5FF)), chr(rnd.randint(0x4E00, 0x9FFF)), "\U0001f600"]
        path = "".join(rnd.choice([*chars, "b"]) for _ in range(run))
        publish(hub, [f"https://x.example/{path}"], "grow")
