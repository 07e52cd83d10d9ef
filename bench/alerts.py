"""Alert rules: what ten `[[alert]]` rules over grouped topics cost the aggregator.

    python -m bench.alerts               # 7 alternating rounds, full size
    python -m bench.alerts --rounds 9
    python -m bench.alerts --quick       # the smoke test's size: seconds, not for quoting
    python -m bench.alerts --instructions --events 2000   # callgrind: what no load can blur
    python -m bench.alerts --calm        # nothing trips: every alert armed, the usual case

Events/s of process CPU through `Aggregator.apply_events`, the same events fed to an
aggregator built from a rules file without its `[[alert]]` tables and to one built from the
whole file (both read by `load_rules`, as `pushsvc serve --rules` reads them), in alternating
rounds; the median of each, the spread, each round's ratio, and whether the goal holds: with
alerts at most 10 % slower.

The stream: 4 topics (`plant.line1` ...), one `[[rule]]` for them (10s/1m/5m; count, mean,
max, p99; `group_by = ["station"]`, 8 stations, the tag cycling through them), timestamps 3 ms
apart per topic, batches of 100, topics taking turns; the first half fed untimed. Values sit
at 100-150; each minute one station of each topic is slow (+400) for 20 s, and one event in
2003 is a spike (5000). So of the ten alerts, five trip and resolve during the run (pending,
firing, resolved; `for`, `clear`, `keep_firing_for`), and five never match: every kind of
evaluation is in the cost, and the changes are published as the server publishes them
(`_alerts` drafts). Each event is evaluated for its topic and for its group: 10 alerts x
(1 + 8) instances per topic.

`--instructions` counts instead (valgrind's callgrind): the whole stream fed without and with
the alerts, each in a process of its own, less a process that builds everything and feeds
nothing; instructions per event and their ratio. Seconds on a busy shared machine drift;
these do not (they miss cache effects, which the seconds keep).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from bench.common import machine
from pushsvc.aggregate.aggregator import Aggregator
from pushsvc.core.event import Event
from pushsvc.core.updates import UpdateDraft
from pushsvc.rules.analytics import Rules, default_rule, load_rules

S = 1_000_000
T0 = 1_700_000_000 * S
TOPICS = 4
STATIONS = 8
STEP_US = 3_000
BATCH = 100
SLOW_EVERY_US = 60 * S
SLOW_FOR_US = 20 * S
SPIKE_EVERY = 2003  # odd: the spikes move from station to station
GOAL = 0.90

RULE = """
[[rule]]
topics = ["plant.*"]
windows = ["10s", "1m", "5m"]
stats = ["count", "mean", "max", "p99"]
group_by = ["station"]
"""

# Five that trip and resolve in the run, then five that never match.
ALERTS = """
[[alert]]
name = "station_slow"
topics = ["plant.*"]
when = "mean[10s] > 300"
clear = "mean[10s] < 200"
for = "5s"
labels = { severity = "page" }
annotations = { summary = "a station's mean over 10 s is over 300" }

[[alert]]
name = "station_slow_minute"
topics = ["plant.*"]
when = "mean[1m] > 200"
for = "20s"
keep_firing_for = "30s"
labels = { severity = "warning" }

[[alert]]
name = "spike"
topics = ["plant.*"]
when = "max[10s] > 2000"
keep_firing_for = "5s"
labels = { severity = "info" }

[[alert]]
name = "tail_slow"
topics = ["plant.*"]
when = "p99[1m] > 500"
for = "30s"
keep_firing_for = "10s"
labels = { severity = "warning" }

[[alert]]
name = "tail_slow_now"
topics = ["plant.*"]
when = "p99[10s] > 520"
clear = "p99[10s] < 300"
for = "2s"
labels = { severity = "info" }

[[alert]]
name = "flood"
topics = ["plant.*"]
when = "count[10s] > 50000"
labels = { severity = "page" }

[[alert]]
name = "negative"
topics = ["plant.*"]
when = "mean[5m] < 0"
for = "1m"
labels = { severity = "page" }

[[alert]]
name = "runaway"
topics = ["plant.*"]
when = "max[1m] > 100000"
clear = "max[1m] < 50000"
labels = { severity = "page" }

[[alert]]
name = "tail_runaway"
topics = ["plant.*"]
when = "p99[5m] >= 20000"
for = "1m"
keep_firing_for = "1m"
labels = { severity = "page" }

[[alert]]
name = "silent"
topics = ["plant.*"]
when = "count[1m] < 1"
for = "30s"
labels = { severity = "warning" }
"""


def rules(with_alerts: bool) -> Rules:
    """The rules file, read by the project's loader from a real file."""
    default = default_rule((10 * S, 60 * S, 300 * S), ("count", "mean", "max", "p99"))
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as handle:
        handle.write(RULE + (ALERTS if with_alerts else ""))
    try:
        return load_rules(handle.name, default)
    finally:
        os.unlink(handle.name)


def value(topic_index: int, i: int, calm: bool = False) -> float:
    """Event `i` of a topic: 100-150, its slow station +400, or a spike (`calm`: neither)."""
    base = 100.0 + (i * 7919 % 1000) / 20
    if calm:
        return base
    if i % SPIKE_EVERY == topic_index:
        return 5000.0
    t_us = i * STEP_US
    slow_station = (t_us // SLOW_EVERY_US + topic_index) % STATIONS
    if i % STATIONS == slow_station and t_us % SLOW_EVERY_US < SLOW_FOR_US:
        return base + 400.0
    return base


def streams(per_topic: int, calm: bool = False) -> dict[str, list[Event]]:
    stations = [{"station": f"s{k}"} for k in range(STATIONS)]
    return {
        f"plant.line{t + 1}": [
            Event(value(t, i, calm), T0 + i * STEP_US, stations[i % STATIONS])
            for i in range(per_topic)
        ]
        for t in range(TOPICS)
    }


@dataclass(frozen=True, slots=True)
class Run:
    events_per_s: float
    changes: Counter[str]
    """The alert changes published in the timed half, by state."""


def feed(rules_: Rules, events: dict[str, list[Event]]) -> Run:
    """The first half untimed, the second timed: events/s of process CPU."""
    aggregator = Aggregator(rules=rules_, wall_clock=lambda: 0, topic_ttl_us=3600 * S)
    per_topic = len(next(iter(events.values())))
    half = per_topic // 2 // BATCH * BATCH
    _apply(aggregator, events, 0, half)
    alert_drafts: list[UpdateDraft] = []
    started = time.process_time()
    _apply(aggregator, events, half, per_topic, alert_drafts)
    spent = time.process_time() - started
    states = Counter(orjson.loads(d.body)["state"] for d in alert_drafts)
    return Run(len(events) * (per_topic - half) / spent, states)


def _apply(
    aggregator: Aggregator,
    events: dict[str, list[Event]],
    start: int,
    stop: int,
    alert_drafts: list[UpdateDraft] | None = None,
) -> None:
    for at in range(start, stop, BATCH):
        for topic, stream in events.items():
            drafts = aggregator.apply_events(topic, stream[at : at + BATCH])
            # Kept in both cases, so that both pay for looking.
            alerts = [d for d in drafts if d.instance is not None]
            if alert_drafts is not None:
                alert_drafts += alerts


def measure(rounds: int, per_topic: int, calm: bool = False) -> dict[str, object]:
    events = streams(per_topic, calm)
    plain, alerting = rules(False), rules(True)
    without: list[float] = []
    with_: list[float] = []
    changes: Counter[str] = Counter()
    for index in range(rounds):
        # Alternating: the machine's drift over a round is paid by each side in turn.
        order = ("without", "with") if index % 2 == 0 else ("with", "without")
        for side in order:
            if side == "without":
                without.append(feed(plain, events).events_per_s)
            else:
                run = feed(alerting, events)
                with_.append(run.events_per_s)
                changes = run.changes  # the same events: the same changes every round
    ratios = [w / o for w, o in zip(with_, without, strict=True)]
    ratio = statistics.median(with_) / statistics.median(without)
    return {
        "topics": TOPICS,
        "groups_per_topic": STATIONS,
        "alerts": len(alerting.alerts),
        "instances_per_topic": len(alerting.alerts) * (1 + STATIONS),
        "events_timed": TOPICS * (per_topic - per_topic // 2 // BATCH * BATCH),
        "rounds": rounds,
        "without": _summary(without),
        "with": _summary(with_),
        "ratio": round(ratio, 3),
        "round_ratios": [round(r, 3) for r in ratios],
        "goal": GOAL,
        "goal_holds": ratio >= GOAL,
        "alert_changes": sum(changes.values()),
        "alert_changes_by_state": dict(sorted(changes.items())),
        "machine": machine(),
    }


def _summary(rates: Sequence[float]) -> dict[str, object]:
    return {
        "median": round(statistics.median(rates)),
        "min": round(min(rates)),
        "max": round(max(rates)),
        "rounds": [round(r) for r in rates],
    }


def report(result: dict[str, object]) -> str:
    without, with_ = result["without"], result["with"]
    assert isinstance(without, dict) and isinstance(with_, dict)
    ratios = result["round_ratios"]
    assert isinstance(ratios, list)
    holds = "holds" if result["goal_holds"] else "MISSED"
    lines = [
        f"{result['topics']} topics x {result['groups_per_topic']} groups, "
        f"{result['alerts']} alerts ({result['instances_per_topic']} instances per topic), "
        f"{result['events_timed']} events timed per run, {result['rounds']} rounds",
        f"without alerts  {without['median']:8d} events/s  "
        f"(min {without['min']}, max {without['max']}; rounds: {without['rounds']})",
        f"with alerts     {with_['median']:8d} events/s  "
        f"(min {with_['min']}, max {with_['max']}; rounds: {with_['rounds']})",
        f"with/without    {result['ratio']:8.3f}  (per round {min(ratios):.3f}-{max(ratios):.3f}: "
        f"{ratios})",
        f"goal: at most {1 - GOAL:.0%} slower: {holds}",
        f"alert changes published per run: {result['alert_changes']} "
        f"{result['alert_changes_by_state']}",
    ]
    return "\n".join(lines)


def feed_untimed(side: str, per_topic: int, calm: bool) -> None:
    """What `--instructions` counts: the whole stream fed (`none`: everything but the feed)."""
    events = streams(per_topic, calm)
    aggregator = Aggregator(
        rules=rules(side == "with"), wall_clock=lambda: 0, topic_ttl_us=3600 * S
    )
    if side != "none":
        _apply(aggregator, events, 0, per_topic)


def instructions(per_topic: int, calm: bool = False) -> dict[str, object]:
    """Instructions per event without and with the alerts, counted by callgrind."""
    counts = {}
    for side in ("none", "without", "with"):
        done = subprocess.run(
            [
                "valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
                sys.executable, "-m", "bench.alerts", "--feed", side, "--events", str(per_topic),
                *(["--calm"] if calm else []),
            ],
            env={**os.environ, "PYTHONHASHSEED": "0"}, capture_output=True, text=True, check=True,
        )  # fmt: skip
        found = re.search(r"Collected : (\d+)", done.stderr)
        if found is None:
            raise RuntimeError(f"no instruction count from callgrind:\n{done.stderr[-2000:]}")
        counts[side] = int(found.group(1))
    events = TOPICS * per_topic
    without = (counts["without"] - counts["none"]) / events
    with_ = (counts["with"] - counts["none"]) / events
    return {
        "events": events,
        "without_per_event": round(without),
        "with_per_event": round(with_),
        "alerts_per_event": round(with_ - without),
        "ratio": round(without / with_, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--events", type=int, default=40_000, help="per topic (half of them timed)")
    parser.add_argument("--quick", action="store_true", help="one round of 4,000 per topic")
    parser.add_argument("--json", action="store_true", help="one JSON object")
    parser.add_argument(
        "--instructions", action="store_true", help="count instructions under callgrind instead"
    )
    parser.add_argument(
        "--calm",
        action="store_true",
        help="no slow station and no spike: every alert armed, none trips (a system running well)",
    )
    parser.add_argument("--feed", choices=("none", "without", "with"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.feed:
        feed_untimed(args.feed, args.events, args.calm)
        return
    if args.instructions:
        counted = instructions(args.events, args.calm)
        print(
            json.dumps(counted) if args.json else "  ".join(f"{k}={v}" for k, v in counted.items())
        )
        return
    rounds, per_topic = (1, 4_000) if args.quick else (args.rounds, args.events)
    result = measure(rounds, per_topic, args.calm)
    print(json.dumps(result) if args.json else report(result))


if __name__ == "__main__":
    main()
