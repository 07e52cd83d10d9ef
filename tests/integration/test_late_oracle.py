"""Late events through the whole path (POST, broker, aggregator, history) against pandas.

Hypothesis draws streams whose events are on time, late within the grace (applied in place),
late past it (kept on the late stream) or at an earlier event's time (ties). The model of
which events are accepted is the contract's (`ts < clock - grace` is past the grace, the
clock the largest accepted `ts`); every update's statistics must equal pandas' rolling over
the accepted events at their event times (`harness.oracle`), every update of an event behind
the clock says `late`, the 202s count what went where, and the late stream holds exactly the
events past the grace, in order.
"""

from __future__ import annotations

import uuid

from flask.testing import FlaskClient
from harness.oracle import Exact, mismatches, rolling
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import MakeApp

S = 1_000_000
GRACE = 3 * S
WIDTHS = (2 * S, 10 * S)
LABELS = ("2s", "10s")
STATS = ("count", "sum", "mean", "min", "max", "var", "stddev", "p50", "p90", "p99")
BASE = 1_763_700_000 * S
YEARS_20 = 20 * 365 * 86_400 * S

# How an event's time relates to the clock: ahead, at an earlier event's time, within the
# grace, right at its edge, or past it.
KINDS = st.sampled_from(["next", "next", "tie", "within", "edge", "past"])
VALUES = st.one_of(st.integers(-3, 3).map(float), st.floats(-1e6, 1e6, allow_nan=False))


@st.composite
def streams(draw: st.DrawFn) -> list[list[tuple[int, float]]]:
    """Batches of (ts_us, value), the first event on time."""
    clock = BASE
    seen = [BASE]
    events: list[tuple[int, float]] = [(BASE, draw(VALUES))]
    for _ in range(draw(st.integers(1, 24))):
        kind = draw(KINDS)
        if kind == "next":
            ts = clock + draw(st.sampled_from([1, S // 2, S, 2 * S, 4 * S, 11 * S]))
        elif kind == "tie":
            ts = draw(st.sampled_from(seen))
        elif kind == "within":
            ts = clock - draw(st.integers(1, GRACE - 1))
        elif kind == "edge":
            ts = clock - GRACE + draw(st.sampled_from([-1, 0, 1]))
        else:  # past it: by seconds, or by 20 years (the late stream takes any age)
            ts = clock - GRACE - draw(st.integers(1, 4 * GRACE) | st.just(YEARS_20))
        events.append((ts, draw(VALUES)))
        seen.append(ts)
        clock = max(clock, ts)
    sizes = draw(st.lists(st.integers(1, 5), min_size=len(events), max_size=len(events)))
    batches, at = [], 0
    for size in sizes:
        if at >= len(events):
            break
        batches.append(events[at : at + size])
        at += size
    return batches


def _check(client: FlaskClient, batches: list[list[tuple[int, float]]]) -> None:
    topic = f"late-{uuid.uuid4().hex[:10]}"
    clock: int | None = None
    accepted: list[tuple[int, float]] = []
    states: list[list[tuple[int, float]]] = []
    late_flags: list[bool] = []
    kept: list[float] = []
    for batch in batches:
        on_time = late = 0
        for ts, value in batch:
            if clock is not None and ts < clock - GRACE:
                kept.append(value)
                late += 1
                continue
            clock = ts if clock is None else max(clock, ts)
            accepted.append((ts, value))
            states.append(sorted(accepted, key=lambda row: row[0]))
            late_flags.append(ts < clock)
            on_time += 1
        body = [{"value": value, "ts": ts / S} for ts, value in batch]
        answer = client.post(f"/topics/{topic}/events", json=body)
        want = {"accepted": on_time, "late": late} if late else {"accepted": on_time}
        assert (answer.status_code, answer.get_json()) == (202, want)
    updates = client.get(f"/topics/{topic}/history?limit=1000").get_json()["updates"]
    assert len(updates) == len(states)
    oracle = rolling(states, WIDTHS)
    for k, (update, state) in enumerate(zip(updates, states, strict=True)):
        assert update.get("late", False) is late_flags[k], (k, update)
        newest = max(ts for ts, _ in state)
        for width, label in zip(WIDTHS, LABELS, strict=True):
            window = [v for ts, v in state if ts > newest - width]
            order = {name: float(column[k]) for name, column in oracle[width].items()}
            wrong = mismatches(update["windows"][label], order, Exact.of(window), STATS)
            assert not wrong, (k, label, wrong)
    if kept:
        stream = client.get(f"/topics/{topic}.late/history?limit=1000").get_json()["updates"]
        # Split off by the one append that logs each batch: in the order they were posted.
        assert [u["event"]["value"] for u in stream] == kept
    else:
        assert client.get(f"/topics/{topic}.late/stats").status_code == 404


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batches=streams())
def test_every_update_equals_pandas_over_the_accepted_events(
    make_app: MakeApp, batches: list[list[tuple[int, float]]]
) -> None:
    client = _client(make_app)
    _check(client, batches)


_APPS: dict[int, FlaskClient] = {}


def _client(make_app: MakeApp) -> FlaskClient:
    """One app per test run (Hypothesis calls the test once per example; each example posts to
    a topic of its own)."""
    key = id(make_app)
    if key not in _APPS:
        _APPS.clear()
        _APPS[key] = make_app(grace="3s", windows="2s,10s", max_future="1000d").test_client()
    return _APPS[key]
