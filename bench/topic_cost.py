"""What a topic costs the aggregator: bytes and CPU per topic that carries only messages, the
shape of a channel per user.

    python -m bench.topic_cost                  # 10,000 topics, one message each, a table
    python -m bench.topic_cost --topics 100000 --json

The aggregator alone (`Aggregator` with the server's default rules: `Settings.load({}, {})`),
a wall clock injected. One pass makes each topic `u{i}` with one message; a second gives each a
second message. Bytes are `tracemalloc`'s after the drafts are dropped (as a broker drops them
once published) and a collection, per topic, with the files holding the most; CPU is
`time.process_time()` over a pass without tracemalloc. Method and figures: docs/performance.md,
"A topic's cost: messages only, statistics, series tiers". What a topic costs over a day is a
test's bound (tests/unit/test_channel_memory.py), not a benchmark's.
"""

from __future__ import annotations

import argparse
import gc
import time
import tracemalloc
from typing import Any

import orjson

from bench.common import machine
from pushsvc.aggregate.aggregator import Aggregator
from pushsvc.config import Settings
from pushsvc.core.event import Event, Message

S = 1_000_000
NOW_US = 1_795_000_000 * S
MESSAGE = Message("shipped", b'{"order":4711}')


def _aggregator() -> Aggregator:
    return Aggregator(rules=Settings.load({}, {}).rules, wall_clock=lambda: NOW_US)


def _pass(aggregator: Aggregator, topics: int) -> None:
    for i in range(topics):
        aggregator.apply_events(f"u{i}", [Event(None, NOW_US, None, MESSAGE)])


def measure(topics: int) -> dict[str, Any]:
    """Bytes per topic (total and by file) and CPU µs per new topic and per further message."""
    aggregator = _aggregator()
    _pass(aggregator, 1)  # what the aggregator makes once for every topic (compiled paths)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    _pass(aggregator, topics)
    gc.collect()
    per_topic = (tracemalloc.get_traced_memory()[0] - before) / topics
    by_file = {
        stat.traceback[0].filename.rsplit("/", 2)[-1]: round(stat.size / topics)
        for stat in tracemalloc.take_snapshot().statistics("filename")[:8]
    }
    tracemalloc.stop()
    del aggregator
    aggregator = _aggregator()
    _pass(aggregator, 1)
    start = time.process_time()
    _pass(aggregator, topics)
    created = time.process_time() - start
    start = time.process_time()
    _pass(aggregator, topics)
    further = time.process_time() - start
    return {
        "topics": topics,
        "bytes_per_topic": round(per_topic),
        "bytes_by_file": by_file,
        "new_topic_us": round(created / topics * S, 1),
        "further_message_us": round(further / topics * S, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--topics", type=int, default=10_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = measure(args.topics)
    if args.json:
        print(orjson.dumps({"machine": machine(), **result}).decode())
        return
    print(f"{result['topics']:,} message-only topics, default rule")
    print(f"  aggregator bytes per topic     {result['bytes_per_topic']:>8,}")
    for name, size in result["bytes_by_file"].items():
        print(f"    {name:<28} {size:>8,}")
    print(f"  CPU per new topic + message    {result['new_topic_us']:>8} µs")
    print(f"  CPU per further message        {result['further_message_us']:>8} µs")


if __name__ == "__main__":
    main()
