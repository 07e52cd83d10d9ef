"""`resolution=auto`'s plan held against a model of its contract (docs/design.md, Series):
among the tiers that keep the start of the range, the coarsest giving N/2 points, else the
finest of them (none keeping it: the one that reaches furthest back); the most recent part,
which that tier has not closed, from the finer tiers, each up to its first open bucket."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from pushsvc.rules.tiers import SeriesTier, check_tiers
from pushsvc.series.plan import plan_segments

S = 1_000_000
LATENESS = 5 * S
CLOCK = 1_763_700_000 * S + 123_456


@st.composite
def tier_sets(draw: st.DrawFn) -> tuple[SeriesTier, ...]:
    """One to four nested tiers (each resolution a multiple of the finer one), each keeping
    one to 3,000 of its buckets."""
    resolution = draw(st.sampled_from([1, 2, 5, 10, 60])) * S
    tiers = []
    for _ in range(draw(st.integers(1, 4))):
        buckets = draw(st.integers(1, 3000))
        tiers.append(SeriesTier(resolution, resolution * buckets))
        resolution *= draw(st.sampled_from([2, 5, 6, 10, 60]))
    return check_tiers(tiers)


def _first_open(tier: SeriesTier, clock: int) -> int:
    edge = clock - LATENESS
    return edge - edge % tier.resolution_us


def _model_first_tier(
    tiers: tuple[SeriesTier, ...], since: int, until: int, clock: int, points: int
) -> SeriesTier:
    """The contract, read literally: a tier keeps the range's start when the buckets it keeps
    (those starting after clock - retention) leave out at most part of the range's first
    bucket; it gives the closed buckets from `since` to its first open one (or `until`)."""
    keeping = [t for t in tiers if clock - t.retention_us < since + t.resolution_us]
    if not keeping:
        furthest = max(t.retention_us for t in tiers)
        return min((t for t in tiers if t.retention_us == furthest), key=lambda t: t.resolution_us)
    enough = [
        t
        for t in keeping
        if (min(until, _first_open(t, clock)) - since) // t.resolution_us >= points / 2
    ]
    if enough:
        return max(enough, key=lambda t: t.resolution_us)
    return min(keeping, key=lambda t: t.resolution_us)


@settings(max_examples=400, deadline=None)
@given(
    tiers=tier_sets(),
    back=st.integers(1, 40 * 86_400).map(lambda s: s * S),
    ahead=st.integers(-3600, 60).map(lambda s: s * S + 1),
    points=st.integers(2, 10_000),
)
def test_auto_plan_agrees_with_the_model(
    tiers: tuple[SeriesTier, ...], back: int, ahead: int, points: int
) -> None:
    since, until = CLOCK - back, CLOCK + ahead
    segments = plan_segments(tiers, since, until, CLOCK, points, LATENESS)
    if until <= since:
        assert segments == []
        return
    # Contiguous, the whole range, coarsest first.
    assert segments[0][1] == since and segments[-1][2] == until
    assert all(a[2] == b[1] for a, b in itertools.pairwise(segments))
    assert all(start < end for _, start, end in segments)
    resolutions = [t.resolution_us for t, _, _ in segments]
    assert resolutions == sorted(resolutions, reverse=True) and len(set(resolutions)) == len(
        resolutions
    )
    # The tier the model picks answers the start, unless it has closed nothing in the range
    # (a range within its open bucket): then the first finer one that has.
    chosen = _model_first_tier(tiers, since, until, CLOCK, points)
    finest = min(t.resolution_us for t in tiers)
    answering = [
        t
        for t in tiers
        if t.resolution_us <= chosen.resolution_us
        and (t.resolution_us == finest or min(until, _first_open(t, CLOCK)) > since)
    ]
    assert segments[0][0] == max(answering, key=lambda t: t.resolution_us)
    # Every segment but the last ends at its tier's first open bucket: what it answers is
    # closed; the finer tiers take over exactly there.
    for tier, _, end in segments[:-1]:
        assert end == _first_open(tier, CLOCK)
    for tier, _, end in segments:
        assert tier.resolution_us == finest or end <= _first_open(tier, CLOCK)
    # The finest tier ends the range, unless a coarser one has closed its buckets up to `until`.
    last = segments[-1][0]
    assert last.resolution_us == finest or until <= _first_open(last, CLOCK)


def test_an_hour_at_270_points_is_answered_from_the_minutes_not_the_last_15_seconds_tier() -> None:
    """The dashboard's "1 h" on the default tiers: the 1s tier would give 900 points but keeps
    only the last 15 minutes; the 1m tier keeps the whole hour (60 points, fewer than 135, and
    still the one to answer), the seconds fill what it has not closed."""
    tiers = check_tiers([SeriesTier(S, 15 * 60 * S), SeriesTier(60 * S, 86_400 * S)])
    segments = plan_segments(tiers, CLOCK - 3600 * S, CLOCK + 1, CLOCK, 270, LATENESS)
    assert [(t.resolution_us, start) for t, start, _ in segments] == [
        (60 * S, CLOCK - 3600 * S),
        (S, _first_open(tiers[1], CLOCK)),
    ]
    # A day on 1m:24h, from a clock a few seconds behind the server's: still the minutes.
    day = plan_segments(tiers, CLOCK - 86_400 * S - 3 * S, CLOCK + 1, CLOCK, 270, LATENESS)
    assert day[0][0] == tiers[1]
