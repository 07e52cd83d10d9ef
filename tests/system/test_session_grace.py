"""Sessions and funnels take the late clicks their source topic's rule accepts, on the embedded
broker and on Redis: a phone's clicks posted minutes late on a topic whose rule gives an hour
of grace extend, join and open sessions and advance funnels exactly as the pandas oracle of
every click the sources accepted says (`support.session_oracle`), though the server's own
`--grace` is 5 s; a click past the rule's grace (kept on the late stream) and one past the
other source's 5 s make no session."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness.live import PushsvcProcess, metric_sample, post, wait_until
from harness.redis_server import RedisServer

from support.session_events import duplicates, oracle_session_events, session_events

APP, WEB, VISITS = "app.clicks", "web.clicks", "shop.visits"
S = 1_000_000
BASE = 1_763_700_000 * S
GAP = 30 * S
WITHIN = 600 * S
STEPS = ("view", "cart", "checkout", "paid")
RULES = f"""
[[rule]]
topics = ["{APP}"]          # phones that buffer their clicks while offline
windows = ["1m"]
stats = ["count"]
grace = "1h"

[[rule]]
topics = ["{WEB}", "{VISITS}"]   # the server's --grace, 5 s
windows = ["1m"]
stats = ["count"]

[[session]]
topic = "{VISITS}"
from = ["{APP}", "{WEB}"]
key = "user"
gap = "30s"
keep_key = true
funnel = {{ tag = "step", steps = ["view", "cart", "checkout", "paid"], within = "10m" }}
"""


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def server(request: pytest.FixtureRequest, tmp_path: Path, prefix: str) -> Iterator[PushsvcProcess]:
    path = tmp_path / "rules.toml"
    path.write_text(RULES)
    env = {}
    redis_server = None
    if request.param == "redis":
        redis_server = RedisServer().start()
        env = {"PUSHSVC_REDIS_URL": redis_server.url, "PUSHSVC_PREFIX": prefix}
    proc = PushsvcProcess("serve", "--tick", "0", "--rules", str(path), env=env).start()
    yield proc
    proc.stop()
    if redis_server is not None:
        redis_server.stop()


def _click(topic: str, ts: int, user: str, step: str | None) -> tuple[str, int, str, str | None]:
    return (topic, ts, user, step)


def _scenario(seed: int) -> tuple[list[tuple[str, int, str, str | None]], list[int]]:
    """The clicks in the order they are posted, and the places of those posted past their
    topic's grace. Users click on both topics on time for 10 minutes; two phones' app clicks
    of those minutes arrive together at the end (up to 10 minutes late, within the hour): one
    phone's join its web sessions, the other's make sessions of their own; then a click past
    the app topic's hour and a web click past its 5 s; last, a click two hours on that ends
    every other session."""
    rng = random.Random(seed)
    on_time: list[tuple[str, int, str, str | None]] = []
    held: list[tuple[str, int, str, str | None]] = []
    for user in ("u0", "u1", "u2", "u3", "phone0", "phone1"):
        t = BASE + rng.randrange(20 * S)
        while t < BASE + 600 * S:
            step = rng.choice([*STEPS, None, "other"])
            topic = rng.choice([APP, WEB])
            if user == "phone1":
                topic = APP  # all of its clicks late: sessions of its own
            click = _click(topic, t, user, step)
            (held if user.startswith("phone") and topic == APP else on_time).append(click)
            t += rng.randrange(S, 45 * S)  # gaps within 30 s and beyond
    on_time.sort(key=lambda c: c[1])
    held.sort(key=lambda c: c[1])
    posted = on_time + held
    clock = {topic: max(ts for t, ts, _, _ in posted if t == topic) for topic in (APP, WEB)}
    past = [len(posted), len(posted) + 1]
    posted.append(_click(APP, clock[APP] - 3601 * S, "phone0", "view"))  # past the app's hour
    posted.append(_click(WEB, clock[WEB] - 6 * S, "u0", "paid"))  # past the web's 5 s
    posted.append(_click(APP, max(clock.values()) + 7200 * S, "closer", None))
    return posted, past


def _expected(clicks: list[tuple[str, int, str, str | None]]) -> list[tuple[int, float, dict]]:
    return oracle_session_events(
        [(user, ts, step) for _, ts, user, step in clicks], GAP, None, WITHIN
    )


def test_late_clicks_within_the_rule_grace_make_sessions_as_the_oracle_says(
    server: PushsvcProcess,
) -> None:
    posted, past = _scenario(seed=5)
    late_counts = []
    for topic, ts, user, step in posted:
        tags = {"user": user, **({"step": step} if step else {})}
        status, body = post(server.port, topic, {"value": 1.0, "ts": ts / S, "tags": tags})
        assert status == 202, body
        late_counts.append(body.get("late", 0))
    # The broker kept exactly the two clicks past their topic's grace off the topics.
    assert [i for i, late in enumerate(late_counts) if late] == past
    accepted = [click for i, click in enumerate(posted) if i not in past]
    want = _expected(accepted)
    # The late clicks matter: without them, the phones' sessions would be others.
    on_time = [c for c in accepted if not (c[2].startswith("phone") and c[0] == APP)]
    assert _expected(on_time) != want
    assert any(tags["user"] == "phone1" for _, _, tags in want)

    def refused() -> float:
        return metric_sample(server.port, "pushsvc_session_events_late_total")

    wait_until(
        lambda: len(session_events(server.port, VISITS)) >= len(want) or refused() > 0,
        timeout=30,
        what="every session to end (or a click refused as late)",
    )
    time.sleep(0.5)  # a duplicate would come now
    assert refused() == 0
    got = session_events(server.port, VISITS)
    assert not duplicates(got)
    assert got == want
