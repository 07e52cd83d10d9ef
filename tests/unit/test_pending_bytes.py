"""A stream's pending bytes (pure): what its queue counts, where it conflates, what the
process's ledger adds up, when the hub's sweeper ends a stream that is stuck; and a replay or
snapshot written in pages that join to the whole."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pushsvc.core.cursor import Cursor
from pushsvc.core.heap_trim import trim
from pushsvc.core.topics import TopicMatcher
from pushsvc.core.updates import Run, Update, UpdateId
from pushsvc.deliver import hub as hub_module
from pushsvc.deliver.conflating_queue import ConflatingQueue, PendingBytes
from pushsvc.deliver.hub import TRIM_AFTER, Hub, StreamExit
from pushsvc.deliver.projection import Projection
from pushsvc.deliver.rendering import Rendering, run_of

_seq = iter(range(1, 1 << 30))


def _update(topic: str, size: int = 0) -> Update:
    n = next(_seq)
    body = b'{"ts":%d,"windows":{"10s":{"count":%d}},"pad":"%s"}' % (n, n, b"x" * size)
    return Update.numbered(topic, UpdateId("e", 0, n), n, body)


def _run(topic: str, count: int = 1, size: int = 0) -> Run:
    return run_of([_update(topic, size) for _ in range(count)])


def _queue(ledger: PendingBytes, capacity: int = 1000) -> ConflatingQueue:
    return ConflatingQueue(capacity, ledger=ledger)


def test_runs_are_queued_until_their_bytes_would_pass_the_bound_then_conflated() -> None:
    ledger = PendingBytes(per_stream=1000, budget=1 << 30)
    queue = _queue(ledger)
    run = _run("a", size=200)
    size = len(run.block)
    fits = 1000 // size
    assert [queue.put(_run("a", size=200)) for _ in range(fits)] == [False] * fits
    assert queue.pending == ledger.total == fits * size
    assert queue.put(_run("a", size=200)) is True  # past the bound: its latest only
    assert queue.latest and queue.pending <= 1000 + size
    # A stream that is conflating stays so until drained.
    assert queue.put(_run("b", size=10)) is True
    drained = queue.drain()
    assert [r.topic for r in drained] == ["a"] * fits + ["a", "b"]
    assert queue.pending == ledger.total == 0


def test_a_stream_with_nothing_pending_takes_a_run_whole_however_large() -> None:
    ledger = PendingBytes(per_stream=100, budget=1 << 30)
    queue = _queue(ledger)
    big = _run("a", count=50, size=100)  # far past the bound: an honest reader keeps up
    assert queue.put(big) is False
    assert queue.pending == len(big.block)
    assert queue.put(_run("a")) is True  # but nothing joins it


def test_bytes_in_flight_count_until_the_socket_takes_them() -> None:
    ledger = PendingBytes(per_stream=1000, budget=1 << 30)
    queue = _queue(ledger)
    queue.hold(990)  # a write's rest, waiting for the socket
    assert queue.pending == ledger.total == 990
    assert queue.put(_run("a", size=100)) is True
    queue.drain()
    queue.hold(0)  # the socket took it all
    assert queue.put(_run("a", size=100)) is False
    assert ledger.total == queue.pending == queue.queued_bytes


def test_the_ledger_is_every_streams_sum_and_an_ended_stream_gives_its_bytes_back() -> None:
    ledger = PendingBytes(per_stream=10_000, budget=1 << 30)
    one, two = _queue(ledger), _queue(ledger)
    one.put(_run("a", size=100))
    two.put(_run("b", size=300))
    two.hold(50)
    assert ledger.total == one.pending + two.pending
    two.release()
    assert ledger.total == one.pending and two.pending == 0


def test_the_budget_is_spent_once_less_of_it_is_left_than_one_stream_may_hold() -> None:
    ledger = PendingBytes(per_stream=100, budget=1000)
    queue = _queue(ledger)
    queue.hold(900)
    assert not ledger.spent
    queue.hold(901)
    assert ledger.spent
    # A bound past the budget: any stream could hold it all.
    assert PendingBytes(per_stream=2000, budget=1000).spent is False
    wide = PendingBytes(per_stream=2000, budget=1000)
    _queue(wide).hold(1)
    assert wide.spent


def test_a_run_that_would_pass_the_budget_is_conflated_whatever_the_stream_holds() -> None:
    ledger = PendingBytes(per_stream=10_000, budget=500)
    hog, other, idle = _queue(ledger), _queue(ledger), _queue(ledger)
    run = _run("a", size=10)
    hog.hold(500 - len(run.block))
    assert other.put(run) is False  # it fits: taken whole
    assert ledger.total == 500 and ledger.spent
    assert other.put(_run("a", size=10)) is True  # it would not: conflated
    assert idle.put(_run("b")) is True  # nothing pending, but no room either
    hog.hold(0)
    assert idle.drain() and idle.put(_run("b")) is False


def test_a_messages_stream_keeps_nothing_that_would_pass_the_budget() -> None:
    ledger = PendingBytes(per_stream=10_000, budget=500)
    hog = _queue(ledger)
    messages = ConflatingQueue(1000, ledger=ledger, lossless=True)
    hog.hold(450)
    assert messages.put(_run("a", size=100)) is True  # nothing kept: the hub ends it
    assert messages.pending == 0 and ledger.total == 450


def test_a_writer_may_hold_rendered_bytes_only_within_the_budget() -> None:
    ledger = PendingBytes(per_stream=100, budget=1000)
    hog, writer = _queue(ledger), _queue(ledger)
    hog.hold(600)
    writer.hold(300)
    assert writer.may_hold(400) and not writer.may_hold(401)
    assert writer.may_hold(0)  # letting go always may
    hog.hold(1000)
    assert writer.may_hold(300) and writer.may_hold(10) and not writer.may_hold(301)


def test_ended_streams_count_what_they_let_go_of() -> None:
    ledger = PendingBytes(per_stream=10_000, budget=1 << 30)
    one, two = _queue(ledger), _queue(ledger)
    one.put(_run("a", size=100))
    two.hold(50)
    held = one.pending
    one.release()
    two.release()
    assert ledger.let_go == held + 50 and ledger.total == 0


def test_the_count_bound_still_holds() -> None:
    queue = _queue(PendingBytes(per_stream=1 << 30, budget=1 << 30), capacity=2)
    assert [queue.put(_run("a")) for _ in range(3)] == [False, False, True]


_OPS = st.lists(
    st.one_of(
        st.tuples(
            st.just("put"),
            st.sampled_from(["a", "b", "c"]),
            st.integers(1, 20),  # updates in the run (a batch POST)
            st.integers(0, 300),  # padding per update
        ),
        st.tuples(st.just("drain"), st.just(""), st.just(0), st.just(0)),
        st.tuples(st.just("took"), st.just(""), st.integers(0, 100), st.just(0)),  # percent
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(ops=_OPS, bound=st.integers(100, 5000))
def test_pending_bytes_never_pass_the_bound_by_more_than_one_run_and_a_latest_per_topic(
    ops: list[tuple[str, str, int, int]], bound: int
) -> None:
    """Whatever comes and however the socket drains: a stream holds at most its bound, one
    run taken whole, and one latest update per conflated topic; the ledger is its sum."""
    ledger = PendingBytes(per_stream=bound, budget=1 << 40)
    queue = _queue(ledger)
    largest_run = largest_update = 0
    for op, topic, a, b in ops:
        if op == "put":
            run = _run(topic, count=a, size=b)
            largest_run = max(largest_run, len(run.block))
            largest_update = max([largest_update, *(len(u.sse) for u in run.updates)])
            queue.put(run)
        elif op == "drain":
            # The writer renders what it drained: in flight until its socket takes it.
            drained = queue.drain()
            queue.hold(queue.in_flight + sum(len(r.block) for r in drained))
        else:
            queue.hold(queue.in_flight * a // 100)
        assert queue.pending <= bound + largest_run + 3 * 2 * largest_update
        assert ledger.total == queue.pending
    queue.release()
    assert ledger.total == 0


def test_a_replay_in_pages_joins_to_the_whole_replay() -> None:
    updates = [_update("a", size=n * 7) for n in range(40)]
    rendering = Rendering(None, chunked=False)
    whole = rendering.replay(updates)
    for page_size in (1, 100, 1000, 1 << 20):
        pages = list(rendering.replay_pages(updates, page_size))
        assert b"".join(pages) == whole
        # Whole messages, each page about its size (one message more at most).
        assert all(p.endswith(b"\n\n") for p in pages)
        assert all(len(p) < page_size + 400 for p in pages)


def test_a_snapshot_in_pages_joins_to_the_whole_snapshot() -> None:
    latest = {f"t{n:03d}": _update(f"t{n:03d}", size=n) for n in range(60)}
    groups = {"t007": [orjson.dumps({"key": {"k": "v"}, "windows": {"10s": {"count": 1}}})]}
    cursor = Cursor.newest(u.id for u in latest.values())
    projection = Projection.parse("10s", "count", known_windows=["10s"], known_stats=["count"])
    for rendering in (Rendering(None, chunked=False), Rendering(projection, chunked=False)):
        for gap in (False, True):
            whole = rendering.snapshot(latest, groups, gap=gap, cursor=cursor)
            for page_size in (1, 500, 1 << 20):
                pages = list(
                    rendering.snapshot_pages(
                        latest, groups, gap=gap, cursor=cursor, page_size=page_size
                    )
                )
                assert b"".join(pages) == whole
                assert len(pages) > 1 or page_size == 1 << 20
    empty = Rendering(None, chunked=False)
    assert b"".join(empty.snapshot_pages({}, {}, gap=True, cursor=Cursor(), page_size=10)) == (
        empty.snapshot({}, {}, gap=True, cursor=Cursor())
    )


class _Clock:
    def __init__(self) -> None:
        self.now = 1_000_000

    def __call__(self) -> int:
        return self.now


def test_the_sweeper_ends_a_stream_whose_socket_takes_nothing_with_no_update_coming() -> None:
    """A write stuck for the timeout (a head's page, a write's rest) ends the stream as slow
    though no update comes to notice it; a stream that progresses, an idle one, and one that
    only has runs queued (waiting for its priming turn) are left alone."""
    clock = _Clock()
    hub = Hub(queue_size=10, slow_timeout_us=5_000_000, max_stream_buffer=1000, clock=clock)
    stuck, reading, idle, priming = (hub.subscribe(TopicMatcher([t])) for t in "abcd")
    stuck.queue.hold(300)
    reading.queue.hold(300)
    hub.dispatch([_update("d")])
    assert hub.pending.total == 600 + priming.queue.queued_bytes
    clock.now += 4_000_000
    reading.progressed()  # its socket took some
    assert hub.sweep() == 0
    clock.now += 2_000_000
    assert hub.sweep() == 1
    assert stuck.closed_reason is StreamExit.SLOW and hub.slow_disconnects == 1
    assert reading.closed_reason is idle.closed_reason is priming.closed_reason is None
    hub.unsubscribe(stuck)
    assert hub.pending.total == 300 + priming.queue.queued_bytes
    hub.close()


def test_nothing_pending_anywhere_costs_the_sweeper_no_walk() -> None:
    hub = Hub(queue_size=10, slow_timeout_us=1, clock=_Clock())
    client = hub.subscribe(TopicMatcher(["a"]))
    client.last_take_us = -(10**9)  # long ago: it would be stuck if it held anything
    assert hub.pending.total == 0 and hub.sweep() == 0 and client.closed_reason is None
    hub.close()


def test_memory_comes_back_once_ended_streams_let_go_of_enough(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Streams that end holding pending bytes free them; the sweeper's next pass gives the C
    heap's free pages back once they add up to `TRIM_AFTER` (glibc keeps them otherwise)."""
    trims: list[int] = []
    monkeypatch.setattr(hub_module, "trim", lambda: trims.append(1) is None)
    hub = Hub(queue_size=10, slow_timeout_us=5_000_000, clock=_Clock())
    small, big, staying = (hub.subscribe(TopicMatcher([t])) for t in "abc")
    small.queue.hold(1000)
    hub.unsubscribe(small)
    hub._give_back()
    assert trims == [] and hub.pending.let_go == 1000
    big.queue.hold(TRIM_AFTER)
    staying.queue.hold(TRIM_AFTER)  # held still: not let go of
    hub.unsubscribe(big)
    hub._give_back()
    assert trims == [1] and hub.trims == 1 and hub.pending.let_go == 0
    hub._give_back()
    assert trims == [1]
    hub.close()


def test_giving_memory_back_works_here() -> None:
    # glibc (this suite's platforms): the call exists and answers.
    assert trim() in (True, False)


def test_a_stream_of_many_topics_is_ended_once_their_latest_updates_pass_its_bound() -> None:
    """A wildcard stream that falls behind on many topics would hold one latest update a
    topic, whatever its bound: once those add up to more than the bound, the hub ends it as
    slow (no timeout needed) and its bytes go at once; a stream of the same topics that reads
    is left alone."""
    bound = 2000
    hub = Hub(queue_size=1000, slow_timeout_us=10**12, max_stream_buffer=bound, clock=_Clock())
    behind, reading = hub.subscribe(TopicMatcher(["t.*"])), hub.subscribe(TopicMatcher(["t.*"]))
    highest = largest = 0
    for i in range(200):
        update = _update(f"t.{i}", size=100)
        largest = max(largest, len(update.sse))
        hub.dispatch([update])
        reading.queue.drain()
        if behind.closed_reason is not None:
            break
        highest = max(highest, behind.queue.pending)
    assert behind.closed_reason is StreamExit.SLOW and hub.slow_disconnects == 1
    # Its bound in runs (one update a run here) and its bound in latest updates, and one more.
    assert 2 * bound - 2 * largest < highest <= 2 * bound + largest
    assert behind.queue.pending == 0 and hub.pending.total == reading.queue.pending == 0
    assert reading.closed_reason is None
    hub.close()


def test_a_stream_that_took_a_large_run_whole_is_not_ended_for_conflating_one_update() -> None:
    ledger = PendingBytes(per_stream=1000, budget=1 << 30)
    queue = _queue(ledger)
    assert queue.put(_run("a", count=40, size=100)) is False  # 5 kB, taken whole
    assert queue.put(_run("b", size=100)) is True
    assert not queue.overflowing


def test_conflated_updates_that_take_the_process_past_its_budget_overflow_their_stream() -> None:
    ledger = PendingBytes(per_stream=1000, budget=1500)
    one, two = _queue(ledger), _queue(ledger)
    assert one.put(_run("a", size=800)) is False
    assert two.put(_run("b", size=600)) is True  # no room left in the budget: conflated
    assert ledger.total > ledger.budget and two.overflowing and not one.overflowing
    two.release()
    assert ledger.total == one.pending


_HUB_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.integers(0, 39), st.integers(1, 5), st.integers(0, 300)),
        st.tuples(st.just("drain"), st.just(0), st.just(0), st.just(0)),
        st.tuples(st.just("took"), st.just(0), st.integers(0, 100), st.just(0)),  # percent
    ),
    max_size=80,
)


@settings(max_examples=200, deadline=None)
@given(ops=_HUB_OPS, bound=st.integers(200, 5000))
def test_a_wildcard_stream_holds_its_bound_twice_at_most_or_is_ended(
    ops: list[tuple[str, int, int, int]], bound: int
) -> None:
    """Whatever comes on forty topics and however its socket drains, a wildcard stream holds
    at most its bound and one run, and its bound in latest updates and one more, or it is
    ended as slow holding nothing; the process's ledger is what the open streams hold."""
    hub = Hub(queue_size=1000, slow_timeout_us=10**12, max_stream_buffer=bound, clock=_Clock())
    client = hub.subscribe(TopicMatcher(["t.*"]))
    queue = client.queue
    largest_run = largest_update = 0
    for op, topic, a, b in ops:
        if op == "put":
            run = [_update(f"t.{topic}", size=b) for _ in range(a)]
            largest_run = max(largest_run, len(run_of(run).block))
            largest_update = max([largest_update, *(len(u.sse) for u in run)])
            hub.dispatch(run)
        elif op == "drain" and client.closed_reason is None:
            drained = queue.drain()
            queue.hold(queue.in_flight + sum(len(r.block) for r in drained))
        elif client.closed_reason is None:
            queue.hold(queue.in_flight * a // 100)
        if client.closed_reason is None:
            assert queue.pending <= 2 * bound + largest_run + largest_update
            assert queue.conflated_bytes <= bound + largest_update
        else:
            assert client.closed_reason is StreamExit.SLOW and queue.pending == 0
        assert hub.pending.total == queue.pending
    hub.close()
