"""The session assembler against a model that keeps every event and scans every session:
adds, late adds, clock moves, eviction, checkpoint and restore, in any interleaving."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from pushsvc.stats.sessions import EndedSession, Funnel, SessionAssembler, SessionSettings
from support.session_oracle import ModelSessions

S = 1_000_000


def _seen(ended: list[EndedSession]) -> list[tuple[object, ...]]:
    return [(e.key, e.first_us, e.last_us, e.events, e.funnel.level, e.evicted) for e in ended]


class AssemblerAgainstModel(RuleBasedStateMachine):
    assembler: SessionAssembler
    model: ModelSessions

    @initialize(
        gap=st.integers(1, 20),
        lateness=st.integers(0, 10),
        max_duration=st.none() | st.integers(20, 60),
        max_open=st.integers(1, 6),
        resolution=st.sampled_from([1, 3]),
    )
    def start(
        self, gap: int, lateness: int, max_duration: int | None, max_open: int, resolution: int
    ) -> None:
        settings = SessionSettings(
            gap_us=gap * S,
            lateness_us=lateness * S,
            max_duration_us=None if max_duration is None else max_duration * S,
            max_open=max_open,
            funnel=Funnel(steps=3, within_us=15 * S),
            resolution_us=resolution * S,
        )
        self.assembler = SessionAssembler(settings)
        self.model = ModelSessions(settings)
        self.now = 1_000 * S

    @rule(
        key=st.sampled_from("abcd"),
        ahead=st.integers(0, 8),
        step=st.none() | st.integers(0, 2),
    )
    def add(self, key: str, ahead: int, step: int | None) -> None:
        self.now += ahead * S
        self._add(key, self.now, step)

    @rule(key=st.sampled_from("abcd"), back=st.integers(0, 12), step=st.none() | st.integers(0, 2))
    def add_late(self, key: str, back: int, step: int | None) -> None:
        # Some of these are later than the lateness allows: both must refuse them alike.
        self._add(key, self.now - back * S, step)

    @rule(ahead=st.integers(1, 40))
    def move_clock(self, ahead: int) -> None:
        self.now += ahead * S
        assert _seen(self.assembler.advance(self.now)) == self.model.advance(self.now)

    @rule()
    def checkpoint_and_restore(self) -> None:
        data = self.assembler.checkpoint()
        self.assembler = SessionAssembler.restore(self.assembler.settings, data)

    @invariant()
    def same_open_sessions(self) -> None:
        if hasattr(self, "model"):
            assert self.assembler.open_sessions == sum(len(v) for v in self.model.open.values())

    def _add(self, key: str, ts: int, step: int | None) -> None:
        got = self.assembler.add(key, ts, step)
        want = self.model.add(key, ts, step)
        assert (None if got is None else _seen(got)) == want


TestAssemblerAgainstModel = AssemblerAgainstModel.TestCase


def test_a_too_short_max_duration_is_refused() -> None:
    with pytest.raises(ValueError, match="max_duration"):
        SessionSettings(gap_us=30 * S, lateness_us=5 * S, max_duration_us=10 * S)


def test_past_max_open_the_longest_idle_key_gives_up_its_session_marked_evicted() -> None:
    assembler = SessionAssembler(SessionSettings(gap_us=60 * S, lateness_us=0, max_open=2))
    assert assembler.add("ann", 100 * S) == []
    assert assembler.add("bob", 101 * S) == []
    assert assembler.add("ann", 102 * S) == []  # ann is busy again: bob is the idle one now
    [evicted] = assembler.add("cy", 103 * S) or []
    assert (evicted.key, evicted.events, evicted.evicted) == ("bob", 1, True)
    assert assembler.open_sessions == 2 and assembler.evicted_total == 1


def test_a_checkpoint_that_is_not_one_is_refused() -> None:
    settings = SessionSettings(gap_us=60 * S, lateness_us=0)
    with pytest.raises(ValueError, match="session checkpoint"):
        SessionAssembler.restore(settings, b'{"v": 9}')


_RESIDENT_PER_OPEN = """
import gc, os
from pushsvc.stats.sessions import Funnel, SessionAssembler, SessionSettings
S, T0, N = 1_000_000, 1_750_000_000 * 1_000_000, 1_000_000
def resident():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
keys = [f"u{i:07d}" for i in range(N)]
gc.collect()
before = resident()
assembler = SessionAssembler(
    SessionSettings(gap_us=1800 * S, lateness_us=5 * S, max_open=N, funnel=Funnel(4, 3600 * S))
)
for i, key in enumerate(keys):
    assembler.add(key, T0 + i, 0)
assert assembler.open_sessions == N
# The key strings were made before measuring; the assembler keeps them, so count them.
print(round((resident() - before + sum(k.__sizeof__() for k in keys)) / N))
"""


@pytest.mark.slow  # the whole suite runs it; `-m fast` leaves it out
def test_a_million_open_sessions_cost_at_most_300_bytes_each() -> None:
    # At the count the docs state it for: the assembler's dicts grow by doubling, so the
    # cost per session at a smaller count can sit at a kinder point of their growth. What
    # the process holds (RSS, in a fresh process), not what tracemalloc counts: the
    # allocator's overhead is memory too, and tracing a million adds took 100 s.
    done = subprocess.run(
        [sys.executable, "-c", _RESIDENT_PER_OPEN], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) <= 300
