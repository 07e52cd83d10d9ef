"""The demo's loops on the machine's clock: post what is due, in batches, until told to stop."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from pushsvc.client.calls import Events
from pushsvc.demo.clock import format_time_of_day
from pushsvc.demo.publisher import Publisher, Rejected
from pushsvc.demo.scenario import DemoEvent, Incident, Scenario

log = logging.getLogger("pushsvc.demo")

BATCH_S = 0.25  # events due within this long go out together, one POST per topic
# An event is never posted later than this after its time: the server refuses events older than
# its allowed lateness (5 s by default) behind the topic's clock, which idle ticks advance.
STALE_S = 4.0


@dataclass(frozen=True)
class RunLimits:
    count: int | None = None  # events to post
    duration_s: float | None = None  # machine seconds to run

    def done(self, posted: int, elapsed_s: float) -> bool:
        return (self.count is not None and posted >= self.count) or (
            self.duration_s is not None and elapsed_s >= self.duration_s
        )


def run_scenario(
    publisher: Publisher, scenario: Scenario, limits: RunLimits, behind_s: float = 0.0
) -> int:
    """Post the scenario's events as they fall due; returns how many the server accepted once
    live (what a catch-up posted is logged, not counted).

    Events carry their simulated time (`ts`, the scenario clock's `timestamp`). The scenario
    began `behind_s` machine seconds ago (a backfill: the simulated span before the start,
    at the same speed): what is due already is posted first, as fast as the server takes it
    (`_catch_up`), and the limits count from when it is done. Then live: events that could not
    be posted within STALE_S of their time (the server was down) are dropped and counted in
    a log line.
    """
    t0 = time.monotonic() - behind_s  # the machine time of offset 0
    events = scenario.events()
    upcoming = next(events)
    if behind_s > 0:
        upcoming, filled = _catch_up(publisher, scenario, events, upcoming, t0)
        log.warning("backfilled %d events", filled)
    live_from = time.monotonic() - t0  # the offset at which the limits start counting
    posted = dropped = 0
    announced: set[Incident] = set()
    hour = -1
    while not limits.done(posted, (elapsed := time.monotonic() - t0) - live_from):
        due: list[DemoEvent] = []
        while upcoming.offset <= elapsed and not limits.done(posted + len(due), 0.0):
            due.append(upcoming)
            upcoming = next(events)
        for topic, batch in _by_topic(due).items():
            give_up_at = t0 + batch[0].offset + STALE_S
            if _post(publisher, topic, _body(scenario, batch), give_up_at):
                posted += len(batch)
            else:
                dropped += len(batch)
                log.warning("dropped %d events of %s: too old to post", len(batch), topic)
        hour = _announce(scenario, elapsed, hour, announced)
        wake = max(upcoming.offset, elapsed + BATCH_S)
        if limits.duration_s is not None:
            wake = min(wake, live_from + limits.duration_s)
        time.sleep(max(0.0, wake - (time.monotonic() - t0)))
    if dropped:
        log.warning("dropped %d events in all while the server was unavailable", dropped)
    return posted


CATCH_UP_BATCH = 5000  # events per round while catching up: one POST per topic each


def _catch_up(
    publisher: Publisher,
    scenario: Scenario,
    events: Iterator[DemoEvent],
    upcoming: DemoEvent,
    t0: float,
) -> tuple[DemoEvent, int]:
    """Post every event due by now (offset 0 at machine time `t0`), in rounds of at most
    CATCH_UP_BATCH, each topic's in time order, until none is due; returns the next event
    and how many were posted. A topic that already has newer events takes them as late (a
    topic's clock only moves forward) onto its late stream: Rejected, saying so."""
    filled = 0
    while upcoming.offset <= (now := time.monotonic() - t0):
        due: list[DemoEvent] = []
        while upcoming.offset <= now and len(due) < CATCH_UP_BATCH:
            due.append(upcoming)
            upcoming = next(events)
        for topic, batch in _by_topic(due).items():
            try:
                publisher.post(topic, _body(scenario, batch))
            except Rejected as exc:
                if exc.code == "late_event":
                    raise Rejected(
                        f"{topic} already has events newer than the backfill: backfill into "
                        "topics without them (a fresh server, or another --prefix)",
                        exc.code,
                    ) from None
                raise
        filled += len(due)
    return upcoming, filled


def _body(scenario: Scenario, batch: list[DemoEvent]) -> Events:
    clock = scenario.clock
    return [
        {"value": e.value, "ts": round(clock.timestamp(e.offset), 3), "tags": e.tags} for e in batch
    ]


def _by_topic(events: list[DemoEvent]) -> dict[str, list[DemoEvent]]:
    groups: dict[str, list[DemoEvent]] = {}
    for event in events:
        groups.setdefault(event.topic, []).append(event)
    return groups


def _post(publisher: Publisher, topic: str, body: Events, give_up_at: float) -> bool:
    try:
        return publisher.post(topic, body, give_up_at=give_up_at)
    except Rejected as exc:
        if exc.code == "late_event":  # the server's clock ran ahead of ours: skip, go on
            return False
        if exc.code == "future_event":
            raise Rejected(
                f"{exc}: above --speed 1 the demo's day runs ahead of the clock; start the "
                "server with room for it, e.g. --max-future 3650d (docs/demo.md)",
                exc.code,
            ) from None
        raise


def _announce(scenario: Scenario, elapsed: float, hour: int, announced: set[Incident]) -> int:
    """Log each simulated hour and each incident as it starts, so a watcher knows what to
    look for; returns the simulated hour now."""
    now = int(scenario.clock.hour(elapsed))
    if now != hour:
        log.info("simulated time %s", format_time_of_day(scenario.clock.seconds(elapsed)))
    for incident in scenario.incidents:
        if incident.start <= elapsed and incident not in announced:
            announced.add(incident)
            if incident.end > elapsed:
                clock = scenario.clock
                log.warning(
                    "%s on %s until %s simulated: %s",
                    incident.kind,
                    incident.topic,
                    format_time_of_day(clock.seconds(incident.end)),
                    incident.note,
                )
    return now


def random_walks(topics: Sequence[str], rng: random.Random) -> Iterator[tuple[str, float]]:
    """(topic, value) forever, round-robin over topics; each topic walks on its own."""
    values = dict.fromkeys(topics, 100.0)
    while True:
        for topic in topics:
            values[topic] += rng.gauss(0.0, 1.0)
            yield topic, round(values[topic], 3)


def run_walk(
    publisher: Publisher, topics: Sequence[str], rate: float, limits: RunLimits, seed: int | None
) -> int:
    """A random walk per topic, one event per POST, round-robin at `rate` per second, stamped
    by the server on arrival; retried until the server takes it. Returns how many were posted.
    """
    interval = 1.0 / rate
    walks = random_walks(topics, random.Random(seed))
    posted = 0
    t0 = next_at = time.monotonic()
    while not limits.done(posted, time.monotonic() - t0):
        topic, value = next(walks)
        publisher.post(topic, {"value": value})
        posted += 1
        # Keep the rate without a burst to catch up after a wait for the server.
        next_at = max(next_at + interval, time.monotonic())
        if limits.done(posted, next_at - t0):
            break  # the next one would fall after the end
        time.sleep(max(0.0, next_at - time.monotonic()))
    return posted
