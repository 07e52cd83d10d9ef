"""A session topic's own statistics in long windows against pandas: session events inserted
out of order, the clock moved by events and ticks; after each step each long window equals
pandas over the session events with ts in `(floor((T - w) / s) * s, T]`, `s = w // 60` (the
long windows' rounded edge, docs/design.md "Long windows"): exactly for `bounce_rate`,
`events_per_session` and the funnel's counts and conversions, within the sketch's relative
error (1 %) for `median_s`. The exact window beside them keeps `(T - w, T]`. The durable
state taken at any step continues as the original."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pushsvc.stats.session_stats import SessionWindows
from support.session_oracle import session_statistics

S = 1_000_000
STEPS = ("view", "cart", "checkout")
EXACT = 2 * S
# 6 s (sub-buckets of 100 ms) and a width that is no multiple of 60 (50,000 µs and 7/60).
LONG = (6 * S, 3 * S + 7)
LABELS = ("6s", "3s")
A = 0.01  # the sketch's relative error (LongWindows' default accuracy)
SLACK = 1 + 1e-9  # see test_sketch.py: log/exp rounding at a bin edge


def _windows() -> SessionWindows:
    return SessionWindows((EXACT,), STEPS, ["2s"], long_us=LONG, long_labels=LABELS)


def _tags(events: int, level: int, since: list[float | None], open_now: int) -> dict[str, str]:
    tags = {"events": str(events), "reached": STEPS[level - 1] if level else "none"}
    tags["open"] = str(open_now)
    for index, seconds in enumerate(since[: max(0, level - 1)], start=2):
        if seconds is not None:  # None: the tag missing (no median counts it)
            tags[f"s{index}"] = f"{seconds:g}"
    return tags


def _check(got: dict[str, object], want: dict[str, object], *, exact_median: bool) -> None:
    for name in ("bounce_rate", "events_per_session"):
        # Exactly pandas': both divide the same integers once.
        assert got[name] == want[name], (name, got, want)
    got_funnel, want_funnel = got["funnel"], want["funnel"]
    assert isinstance(got_funnel, list) and isinstance(want_funnel, list)
    for got_step, want_step in zip(got_funnel, want_funnel, strict=True):
        median, expected = got_step["median_s"], want_step["median_s"]
        assert {**got_step, "median_s": 0} == {**want_step, "median_s": 0}, (got_step, want_step)
        assert (median is None) == (expected is None), (got_step, want_step)
        if expected is not None and not exact_median:
            # Seconds are never negative: the bound is relative to the median itself.
            assert abs(median - expected) <= A * abs(expected) * SLACK, (median, expected)
        else:
            assert median == expected


# Times on a grid of half sub-buckets of the 6 s window, give or take a µs: events share
# sub-buckets, and a clock that moves lands the window's edge on a held one (or a µs off it)
# while an older one leaves. (The 3 s window's sub-buckets fall across the grid.)
GRID = 50_000
JITTER = st.sampled_from([0, 0, 0, 1, -1])
OFFSET = st.tuples(st.integers(-130, 4), JITTER)  # grid steps from the clock's, and µs
FORWARD = st.tuples(st.integers(0, 130), JITTER)


def _on_grid(clock: int, steps: int, jitter: int) -> int:
    return (clock // GRID + steps) * GRID + jitter


step = st.one_of(
    st.tuples(
        st.just("event"),
        OFFSET,  # relative to the clock: late ones too
        st.integers(1, 6),
        st.integers(0, 3),
        st.lists(
            st.sampled_from([0.0, 0.5, 1.0, 2.5, 4.0, 17.25, 3600.0, None]),
            min_size=2,
            max_size=2,
        ),
    ),
    st.tuples(st.just("tick"), FORWARD),
)


@given(st.lists(step, min_size=8, max_size=60), st.integers(0, 59))
def test_long_windows_equal_pandas_over_their_rounded_window_after_every_step(
    steps: list[tuple[object, ...]], restore_at: int
) -> None:
    windows = _windows()
    rows: list[tuple[int, dict[str, str]]] = []
    clock: int | None = None  # the topic's: none before its first event
    opened = 0
    for number, item in enumerate(steps):
        if item[0] == "event":
            _, offset, events, level, since = item
            assert isinstance(offset, tuple) and isinstance(events, int)
            assert isinstance(level, int) and isinstance(since, list)
            ts = _on_grid(1_000 * S if clock is None else clock, *offset)
            opened += 1
            tags = _tags(events, level, since, opened)
            windows.insert(ts, tags)
            rows.append((ts, tags))
            clock = ts if clock is None else max(clock, ts)
        else:
            forward = item[1]
            assert isinstance(forward, tuple)
            if clock is None:
                continue  # a tick moves no topic before its first event
            clock = max(clock, _on_grid(clock, *forward))
            windows.advance(clock)
        if number == restore_at:
            # A rebuild: the durable state, then the exact window's events from the log.
            restored = _windows()
            restored.restore(windows.durable_state())
            for ts, tags in rows:
                restored.insert_exact(ts, tags)
            windows = restored
        summary = windows.summary()
        assert list(summary) == ["2s", *LABELS]
        exact = summary["2s"]
        _check(exact, session_statistics(STEPS, rows, clock - EXACT, clock), exact_median=True)
        for label, width in zip(LABELS, LONG, strict=True):
            got = summary[label]
            assert got["active"] == (opened or None)
            sub = width // 60
            _check(
                got,
                session_statistics(STEPS, rows, (clock - width) // sub * sub, clock),
                exact_median=False,
            )


def test_one_value_or_equal_values_give_the_median_exactly() -> None:
    """Clamped into the window's exact min and max, as every long window's quantiles."""
    windows = _windows()
    windows.insert(100 * S, _tags(3, 2, [2.2, None], 1))
    assert windows.summary()["6s"]["funnel"][1]["median_s"] == 2.2
    windows.insert(101 * S, _tags(3, 2, [2.2, None], 1))
    assert windows.summary()["6s"]["funnel"][1]["median_s"] == 2.2


def test_a_state_without_long_windows_or_of_another_funnel_is_refused() -> None:
    windows = _windows()
    windows.insert(100 * S, _tags(2, 3, [1.0, 2.0], 1))
    saved = windows.durable_state()
    exact_only = SessionWindows((EXACT,), STEPS, ["2s"])
    with pytest.raises(ValueError, match="long windows"):
        exact_only.restore(saved)
    other_funnel = SessionWindows((EXACT,), STEPS[:2], ["2s"], long_us=LONG, long_labels=LABELS)
    with pytest.raises(ValueError, match="another funnel"):
        other_funnel.restore(saved)
    # Written by a rule without long windows: they start empty, the rest comes back.
    exact_only.insert(100 * S, _tags(2, 3, [1.0, 2.0], 7))
    fresh = _windows()
    fresh.restore(exact_only.durable_state())
    assert fresh.clock_us == 100 * S and fresh.summary()["6s"]["active"] == 7
    assert fresh.summary()["6s"]["bounce_rate"] is None
