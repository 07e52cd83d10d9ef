"""A session scenario for live servers and its pandas oracle: what a `[[session]]` rule's
topic must hold after the scenario's events are posted (`support.session_oracle`)."""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass

import pandas as pd
from harness.live import request

from support.session_oracle import brute_force_funnel, pandas_sessions

S = 1_000_000
BASE = 1_763_700_000 * S
GAP = 6 * S
MAX_DURATION = 40 * S
WITHIN = 20 * S
STEPS = ("view", "cart", "checkout", "paid")


def rules(a: str, b: str, visits: str) -> str:
    """Windows for the sources and the session topic, and the session rule over both."""
    return f"""
[[rule]]
topics = ["{a}", "{b}", "{visits}"]
windows = ["1m"]
stats = ["count", "mean"]

[[session]]
topic = "{visits}"
from = ["{a}", "{b}"]
key = "user"
gap = "6s"
max_duration = "40s"
keep_key = true
funnel = {{ tag = "step", steps = ["view", "cart", "checkout", "paid"], within = "20s" }}
"""


@dataclass(frozen=True)
class Posted:
    topic: str
    ts: int
    user: str | None
    step: str | None

    def body(self) -> dict[str, object]:
        tags = {}
        if self.user is not None:
            tags["user"] = self.user
        if self.step is not None:
            tags["step"] = self.step
        return {"value": 1.0, "ts": self.ts / S, "tags": tags}


def scenario(a: str, b: str, seed: int) -> list[Posted]:
    """Events in the order to post them: random users on both topics (repeated steps, steps
    out of order, events without the key), a kiosk whose session is cut at max_duration, a
    session extended and two joined by late events (posted after later ones, within the
    lateness), a funnel that times out; last, one far later event that ends every other
    session."""
    rng = random.Random(seed)
    timed: list[tuple[int, int, Posted]] = []  # (post time, tie, event)

    def add(at: int, event: Posted) -> None:
        timed.append((at, len(timed), event))

    for user in (f"u{i}" for i in range(8)):
        t = BASE + rng.randrange(20 * S)
        while t < BASE + 150 * S:
            step = rng.choice([*STEPS, None, "other"])
            add(t, Posted(rng.choice([a, b]), t, user, step))
            t += rng.randrange(S // 2, 10 * S)
    for _ in range(40):  # no key: in the sources' windows, never in a session
        t = BASE + rng.randrange(150 * S)
        add(t, Posted(rng.choice([a, b]), t, None, "view"))
    for i in range(34):  # every 3 s for 100 s: cut at 40 s
        t = BASE + 10 * S + i * 3 * S
        add(t, Posted(a, t, "kiosk", None))
    # Joined: 100 s and 108 s are two sessions (8 s > gap) until 104 s arrives after 108 s.
    add(BASE + 100 * S, Posted(a, BASE + 100 * S, "joiner", "view"))
    add(BASE + 108 * S, Posted(b, BASE + 108 * S, "joiner", "checkout"))
    add(BASE + 108 * S + 1, Posted(b, BASE + 104 * S, "joiner", "cart"))
    # Extended backwards: 60 s arrives after 64 s, before the session's first event.
    add(BASE + 64 * S, Posted(a, BASE + 64 * S, "early", "cart"))
    add(BASE + 64 * S + 1, Posted(b, BASE + 60 * S, "early", "view"))
    # A funnel that times out: checkout 25 s after view (within is 20 s).
    for i, step in enumerate(["view", "cart", None, None, None, "checkout", "paid"]):
        t = BASE + 120 * S + i * 5 * S
        add(t, Posted(b, t, "slow", step))
    timed.sort(key=lambda row: row[:2])
    posted = [event for _, _, event in timed]
    last = max(event.ts for event in posted)
    # Past every session's end, on Redis too (its sessionizer allows 30 s of skew more).
    posted.append(Posted(a, last + 60 * S, "closer", None))
    return posted


def expected(posted: list[Posted]) -> list[tuple[int, float, dict[str, str]]]:
    """(ts µs, value, tags) of every session the scenario ends, by ts then user."""
    return oracle_session_events(
        [(e.user, e.ts, e.step) for e in posted], GAP, MAX_DURATION, WITHIN
    )


def oracle_session_events(
    clicks: list[tuple[str | None, int, str | None]],
    gap_us: int,
    max_duration_us: int | None,
    within_us: int,
) -> list[tuple[int, float, dict[str, str]]]:
    """(ts µs, value, tags) of every session that the clicks (user, ts µs, funnel step) end, as
    the session topic's events give them (a user `closer` still open), by ts then user."""
    frame = pd.DataFrame(
        {
            "key": [user for user, _, _ in clicks],
            "ts": [ts for _, ts, _ in clicks],
            "step": [STEPS.index(step) if step in STEPS else None for *_, step in clicks],
        }
    )
    out = []
    for key, first, last, events, steps in pandas_sessions(frame, gap_us, max_duration_us):
        if key == "closer":
            continue  # still open
        level, since = brute_force_funnel(len(STEPS), within_us, steps)
        tags = {
            "events": str(events),
            "reached": STEPS[level - 1] if level else "none",
            "user": key,
            # Seconds from the first step to each later step reached, as the tags write them.
            **{f"s{i}": f"{us / S:g}" for i, us in enumerate(since[1:], start=2)},
        }
        out.append((last, (last - first) / S, tags))
    return sorted(out, key=lambda row: (row[0], row[2]["user"]))


def session_events(port: int, topic: str) -> list[tuple[int, float, dict[str, str]]]:
    """(ts µs, value, tags without `open`) of every event the session topic's history holds,
    by ts then user."""
    status, _, body = request(port, "GET", f"/topics/{topic}/history?limit=10000")
    if status == 404:
        return []
    assert status == 200, body
    out = []
    for update in json.loads(body)["updates"]:
        if update.get("reason") != "event":
            continue
        event = update["event"]
        tags = {k: v for k, v in event["tags"].items() if k != "open"}
        out.append((round(event["ts"] * S), event["value"], tags))
    return sorted(out, key=lambda row: (row[0], row[2]["user"]))


def duplicates(got: list[tuple[int, float, dict[str, str]]]) -> list[object]:
    """Sessions that appear more than once."""
    counted = Counter((ts, tags["user"]) for ts, _, tags in got)
    return [key for key, n in counted.items() if n > 1]


def window_oracle(port: int, topic: str, width_us: int) -> tuple[int, dict[str, object]]:
    """The session topic's clock and, by pandas over the events its history holds with ts in
    `(clock - width, clock]`, the session statistics of that window."""
    status, _, body = request(port, "GET", f"/topics/{topic}/history?limit=10000")
    assert status == 200, body
    updates = json.loads(body)["updates"]
    clock = max(round(u["ts"] * S) for u in updates)
    events = [u["event"] for u in updates if u.get("reason") == "event"]
    frame = pd.DataFrame(
        {
            "ts": [round(e["ts"] * S) for e in events],
            "events": [int(e["tags"]["events"]) for e in events],
            "reached": [e["tags"]["reached"] for e in events],
            **{
                f"s{i}": [float(e["tags"].get(f"s{i}", "nan")) for e in events]
                for i in range(2, len(STEPS) + 1)
            },
        }
    )
    inside = frame[(frame["ts"] > clock - width_us) & (frame["ts"] <= clock)]
    sessions = len(inside)
    level = inside["reached"].map(lambda r: STEPS.index(r) + 1 if r in STEPS else 0)
    funnel = []
    for index, step in enumerate(STEPS):
        count = int((level > index).sum())
        first = int((level > 0).sum())
        before = int((level > index - 1).sum()) if index else None
        median = inside[f"s{index + 1}"].median() if index else (0.0 if count else None)
        funnel.append(
            {
                "step": step,
                "sessions": count,
                "conversion": count / first if first else None,
                "step_conversion": (count / before if before else None) if index else None,
                "median_s": None if median is None or median != median else float(median),
            }
        )
    return clock, {
        "bounce_rate": float((inside["events"] == 1).mean()) if sessions else None,
        "events_per_session": float(inside["events"].mean()) if sessions else None,
        "funnel": funnel,
    }
