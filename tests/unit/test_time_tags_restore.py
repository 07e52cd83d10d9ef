"""A long window's tag statistics written to their state at any step and read back continue
exactly as the ones never interrupted, and both answer as pandas does over the rows the
window holds: through late events at the restored clock, ticks, and sub-bucket edges crossed
before and after the restore (what a checkpoint and a cold aggregator do).
"""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pushsvc.stats.tagged import TagSpec, TimeTags
from support.tag_oracle import Kind, distinct, frame, held, top

S = 1_000_000
WIDTHS = (60 * S, 605 * S)  # one a multiple of the sub-buckets, one not
LABELS = ("1m", "w")
SPEC = TagSpec(("user",), (("product", 2),))

Step = tuple[str, int, dict[str, str] | None]


@st.composite
def _steps(draw: st.DrawFn) -> list[Step]:
    steps: list[Step] = []
    clock = 1_700_000_000 * S
    for _ in range(draw(st.integers(1, 60))):
        clock += draw(st.sampled_from([0, 0, 1, 999_999, 1_000_000, 7 * S, 61 * S, 700 * S]))
        if draw(st.integers(0, 7)) == 0:
            steps.append(("tick", clock, None))
            continue
        ts = clock - draw(st.sampled_from([0, 0, 0, 1, S, 20 * S, 90 * S]))  # late ones too
        tags = {
            name: f"{name[0]}{draw(st.integers(0, 5))}"
            for name in ("user", "product")
            if draw(st.integers(0, 4))
        }
        steps.append(("event", ts, tags or None))
    return steps


def _apply(tags: TimeTags, step: Step, clock: int) -> None:
    kind, ts, values = step
    if kind == "tick":
        tags.advance(ts)
    else:
        tags.insert(ts, values, clock)


def _oracle(rows: list[tuple[int, dict[str, str] | None]], clock: int) -> bytes:
    data = frame(rows, ("user", "product"))
    windows: dict[str, dict[str, object]] = {}
    for label, width in zip(LABELS, WIDTHS, strict=True):
        inside = held(data, clock, Kind(label, width, long=True))
        windows[label] = {
            "distinct_user": distinct(inside, "user"),
            "top_product": top(inside, "product", 2),
        }
    return orjson.dumps(windows)


def _seen(tags: TimeTags) -> bytes:
    windows: dict[str, dict[str, object]] = {label: {} for label in LABELS}
    tags.fill(windows)
    return orjson.dumps(windows)


@pytest.mark.slow  # the whole suite runs it; `-m fast` leaves it out
@settings(max_examples=80, deadline=None)
@given(steps=_steps(), at=st.integers(0, 60))
def test_restored_at_any_step_continues_as_the_uninterrupted(steps: list[Step], at: int) -> None:
    whole = TimeTags(WIDTHS, LABELS, SPEC)
    copy = TimeTags(WIDTHS, LABELS, SPEC)
    rows: list[tuple[int, dict[str, str] | None]] = []
    clock = 0
    for i, step in enumerate(steps):
        if i == at:
            copy = TimeTags.from_state(WIDTHS, LABELS, SPEC, copy.to_state())
            assert _seen(copy) == _seen(whole), "right after the restore"
        clock = max(clock, step[1])
        _apply(whole, step, clock)
        _apply(copy, step, clock)
        if step[0] == "event":
            rows.append((step[1], step[2]))
        assert _seen(whole) == _oracle(rows, clock), (i, step)
        assert _seen(copy) == _seen(whole), (i, step)
    assert copy.to_state() == whole.to_state()
