"""A session topic's own statistics per time window against pandas: session events inserted
out of order (a max_duration cut or an eviction ends a session whose last event is older than
one ended before), the clock moved by events and ticks; after each step every window equals
pandas over the events with ts in `(T - w, T]`."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from pushsvc.stats.session_stats import SessionWindows
from support.session_oracle import session_statistics

S = 1_000_000
STEPS = ("view", "cart", "checkout")
WINDOWS = (10 * S, 60 * S)


def _tags(events: int, level: int, since: list[float], open_now: int) -> dict[str, str]:
    tags = {"events": str(events), "reached": STEPS[level - 1] if level else "none"}
    tags["open"] = str(open_now)
    for index, seconds in enumerate(since[: max(0, level - 1)], start=2):
        tags[f"s{index}"] = f"{seconds:g}"
    return tags


step = st.one_of(
    st.tuples(
        st.just("event"),
        st.integers(-20 * S, 5 * S),  # relative to the clock: late ones too
        st.integers(1, 6),
        st.integers(0, 3),
        st.lists(st.sampled_from([0.5, 1.0, 2.5, 4.0]), min_size=2, max_size=2),
    ),
    st.tuples(st.just("tick"), st.integers(0, 30 * S)),
)


@given(st.lists(step, min_size=1, max_size=60))
def test_every_window_equals_pandas_after_every_step(steps: list[tuple[object, ...]]) -> None:
    windows = SessionWindows(WINDOWS, STEPS)
    rows: list[tuple[int, dict[str, str]]] = []
    clock: int | None = None  # the topic's: none before its first event
    opened = 0
    for item in steps:
        if item[0] == "event":
            _, offset, events, level, since = item
            assert isinstance(offset, int) and isinstance(events, int)
            assert isinstance(level, int) and isinstance(since, list)
            ts = (1_000 * S if clock is None else clock) + offset
            opened += 1
            tags = _tags(events, level, since, opened)
            windows.insert(ts, tags)
            rows.append((ts, tags))
            clock = ts if clock is None else max(clock, ts)
        else:
            forward = item[1]
            assert isinstance(forward, int)
            if clock is None:
                continue  # a tick moves no topic before its first event
            clock += forward
            windows.advance(clock)
        summary = windows.summary()
        for width in WINDOWS:
            label = f"{width // S}s" if width < 60 * S else "1m"
            got = summary[label]
            want = session_statistics(STEPS, rows, clock - width, clock)
            assert got["active"] == (opened or None)
            for name in ("bounce_rate", "events_per_session"):
                expected = want[name]
                assert (got[name] is None) == (expected is None), (name, got, want)
                if expected is not None:
                    assert math.isclose(got[name], expected, rel_tol=1e-12)
            assert got["funnel"] == want["funnel"]


def test_a_window_without_funnel_steps_reports_no_funnel() -> None:
    windows = SessionWindows(WINDOWS)
    windows.insert(5 * S, {"events": "1", "reached": "none", "open": "3"})
    assert windows.summary()["10s"] == {
        "bounce_rate": 1.0,
        "events_per_session": 1.0,
        "active": 3,
    }
    windows.advance(15 * S)
    assert windows.summary()["10s"] == {
        "bounce_rate": None,
        "events_per_session": None,
        "active": 3,
    }
