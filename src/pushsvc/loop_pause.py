"""Pauses that let the rest of a gevent process run inside long work on its loop: the embedded
aggregator's (between slices of a big batch, between parts of its publish), a stream's
priming (`pushsvc.deliver.priming`) and a Mercure resume lookup's pages
(`pushsvc.deliver.mercure_search`), so that producers and streams are served meanwhile."""

from __future__ import annotations

import contextlib
import time
import weakref
from collections import deque

import gevent
from gevent.hub import Hub, Waiter

HOLD_S = 0.01
"""How long the loop may be held in one turn before a pause waits."""
PAUSE_MAX_S = 0.0025
"""The longest a pause waits for the loop to be idle."""


def let_others_run() -> None:
    """The aggregator's pause: once the loop has been held `HOLD_S` since its turn began, wait
    until everything else this process has to do is done (the loop is idle), or
    `PAUSE_MAX_S`, whichever comes first; before that, return at once.

    `gevent.sleep(0)` would run the greenlets ready now but poll no socket: a POST would wait
    behind a 10,000-event batch all the same (measured: docs/performance.md, 'Hostile
    clients'). The bound keeps the aggregator four fifths of the loop under a flood of
    requests. Below `HOLD_S` it goes on: a batch of a few hundred events is applied (and its
    updates published) before the next request is read, as one that never pauses would."""
    hub = gevent.get_hub()
    # libev's time, the wall clock's, taken as the turn began (and again whenever a timer is
    # started in it, which the aggregator's slices do not do): how long this greenlet has
    # held the loop.
    if time.time() - hub.loop.now() >= HOLD_S:
        _wait_for_idle(hub)


def make_way() -> None:
    """The pause of work that serves nobody waiting on the loop now (a Mercure lookup, which
    an attacker may ask for as often as a subscriber): wait until everything else this
    process has to do is done, or `PAUSE_MAX_S`, each time, however short the work since the
    last pause. `let_others_run` would go on for `HOLD_S` first: a Redis round trip answered
    before its reply is awaited (Redis on the same host) does not yield either, so pages of
    a few milliseconds each held the loop `HOLD_S` at a time (measured: docs/performance.md,
    'Mercure')."""
    _wait_for_idle(gevent.get_hub())


class _Turns:
    """A hub's turns of the loop and the greenlets waiting for one, in the order they came.

    Turns are counted by a prepare watcher (run once a turn, before the poll), not by the
    loop's time (`loop.now()`), which every timer started moves within a turn. While
    greenlets wait, an idle watcher and a timer of `PAUSE_MAX_S` (for a loop that is never
    idle) let them go on after the poll: the first of the line first, one after another
    while `HOLD_S` has not passed since the turn's first went (each runs until it blocks or
    ends, then the next is let go). Only those that go are woken: a herd of streams
    reconnecting at once, each woken every turn to look again, spends the turns on waking each
    other (found: docs/journal/2026-11-27-loop-turns.md, 'Taken up again, and landed')."""

    def __init__(self, hub: Hub) -> None:
        self.number = 0
        self.taken = -1
        self.first_went = 0.0
        self.waiting: deque[Waiter[None]] = deque()
        loop = hub.loop
        self._turn = loop.prepare(ref=False)  # counts, never keeps the loop running
        self._turn.start(self._next)
        self._idle = loop.idle()
        self._bound = loop.timer(PAUSE_MAX_S, PAUSE_MAX_S)
        self._releasing = False

    def may_go(self) -> bool:
        return self.taken != self.number or time.time() - self.first_went < HOLD_S

    def went(self) -> None:
        if self.taken != self.number:
            self.taken, self.first_went = self.number, time.time()

    def _next(self) -> None:
        self.number += 1

    def wait(self, waiter: Waiter[None]) -> None:
        self.waiting.append(waiter)
        if not self._releasing:
            self._idle.start(self._release)
            self._bound.start(self._release, update=True)
            self._releasing = True

    def _release(self) -> None:
        waiting = self.waiting
        while waiting and self.may_go():
            self.went()
            waiting.popleft().switch(None)  # runs it until it blocks or ends
        if not waiting and self._releasing:
            self._idle.stop()
            self._bound.stop()
            self._releasing = False


_turns: weakref.WeakKeyDictionary[Hub, _Turns] = weakref.WeakKeyDictionary()


def take_turns() -> None:
    """A pause for work that many greenlets start at once (streams primed together, each a few
    milliseconds): in each turn of the loop, the first of them goes on, and the others go on
    while `HOLD_S` has not passed since it did; the rest wait in line for the next turns
    (`_Turns`). A turn runs as many as fit in `HOLD_S`, with the
    sockets polled between turns, instead of all of them back to back, which held the loop
    for as long as every priming took (measured: docs/performance.md, 'Hostile clients')."""
    hub = gevent.get_hub()
    turns = _turns.get(hub)
    if turns is None:
        turns = _turns[hub] = _Turns(hub)
    if not turns.waiting and turns.may_go():
        turns.went()
        return
    waiter: Waiter[None] = Waiter(hub)
    turns.wait(waiter)
    try:
        waiter.get()
    except BaseException:
        # Killed while in line (a stream whose client left): out of it, or the turn that
        # comes to it would let a greenlet go that is gone.
        with contextlib.suppress(ValueError):
            turns.waiting.remove(waiter)
        raise


def _wait_for_idle(hub: Hub) -> None:
    # `gevent.idle()` under a `gevent.Timeout` would do, but a timeout is an exception, whose
    # traceback holds this frame and, through it, the callers' (a batch's events, drafts and
    # updates) in a cycle until the collector's next full pass, which then holds the loop
    # (measured: docs/performance.md, 'Hostile clients'). Two watchers, no exception.
    loop = hub.loop
    waiter: Waiter[None] = Waiter(hub)
    idle, bound = loop.idle(), loop.timer(PAUSE_MAX_S)
    idle.start(waiter.switch, None)
    bound.start(waiter.switch, None, update=True)  # from now, not from the turn's start
    try:
        waiter.get()
    finally:
        idle.close()
        bound.close()
