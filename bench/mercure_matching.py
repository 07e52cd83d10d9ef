"""What choosing the subscribers of one Mercure update costs: every subscription's
`SelectorSet.matches_any(update's topics)`, as the endpoint calls it, in CPU µs per update.

Workloads, each with 1,000 subscriptions holding one URL pattern each:

* `distinct`: 1,000 different patterns (`https://example.com/shop<i>/items/:id`);
* `shared`: 1,000 subscribers sharing 10 patterns: a (pattern, topic) result is memoized, so
  10 evaluations and 990 cache lookups; `shared grouped`: the same subscribers grouped by
  their `SelectorSet` (equal sets hash alike), one call per set per update — the cost of 10
  subscribers (`shared-10`, printed beside it), not of 1,000;
* `hostile`: 1,000 different patterns each as costly as the limits let through (16 groups
  `*x*x...`), against topics of the longest length they evaluate (2,048 characters).

`--limits` prints instead what the limits are there for, on `urlpattern` directly (no limit
applied): one evaluation's time against the number of groups and the length of a topic it
matches, and the compile time of the regexp groups the limits refuse.

Each update has a topic never seen before (a new item id), so no result is memoized across
updates: this is the cold cost. `warm` repeats the previous update's topic. Also printed: the
compile time per pattern, and the RSS that 1,000 compiled patterns take (VmRSS before and
after). Times are this
process's CPU time (`time.process_time_ns`), the median of `--rounds`.

    python -m bench.mercure_matching --updates 200 --rounds 5
    python -m bench.mercure_matching --limits
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Sequence

from pushsvc.deliver.mercure_selectors import (
    MAX_PATTERN_GROUPS,
    MAX_URLPATTERN_TOPIC_LENGTH,
    Selector,
    SelectorSet,
)

SUBSCRIBERS = 1000


def _distinct(i: int) -> str:
    return f"https://example.com/shop{i}/items/:id"


def _hostile(i: int) -> str:
    # As many groups as a pattern may have, each to be tracked through the whole topic.
    return f"https://example.com/h{i}/" + "*x" * MAX_PATTERN_GROUPS


def _subscriptions(patterns: Sequence[str]) -> list[SelectorSet]:
    return [SelectorSet([Selector("urlpattern", p)]) for p in patterns]


def _per_update_us(
    subscriptions: Sequence[SelectorSet], topic: Callable[[int], str], updates: int, warm: bool
) -> tuple[float, int]:
    matched = 0
    start = time.process_time_ns()
    for n in range(updates):
        topics = (topic(0 if warm else n),)
        for selectors in subscriptions:
            matched += selectors.matches_any(topics)
    return (time.process_time_ns() - start) / updates / 1000, matched


def _grouped_us(
    subscriptions: Sequence[SelectorSet], topic: Callable[[int], str], updates: int
) -> tuple[float, int]:
    groups: dict[SelectorSet, int] = {}
    for selectors in subscriptions:
        groups[selectors] = groups.get(selectors, 0) + 1
    matched = 0
    start = time.process_time_ns()
    for n in range(updates):
        topics = (topic(n),)
        for selectors, count in groups.items():
            if selectors.matches_any(topics):
                matched += count
    return (time.process_time_ns() - start) / updates / 1000, matched


def _rss_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def _limits() -> None:
    from urlpattern import URLPattern

    base = "http://mercure.invalid"

    def timed(pattern: str, topic: str) -> tuple[float, float]:
        start = time.perf_counter_ns()
        compiled = URLPattern(pattern, base)
        compile_ms = (time.perf_counter_ns() - start) / 1e6
        start = time.perf_counter_ns()
        compiled.test(topic, base)
        return compile_ms, (time.perf_counter_ns() - start) / 1e6

    print("one evaluation (ms) of https://example.com/ + '(.*)' * groups, on a topic it matches")
    lengths = (200, 2000, 8000)
    print("groups " + "".join(f"{n:>10,d} chars" for n in lengths))
    for groups in (8, 16, 32, 64, 128):
        pattern = "https://example.com/" + "(.*)" * groups
        row = [timed(pattern, "https://example.com/" + "ab/-" * (n // 4) + "z")[1] for n in lengths]
        print(f"{groups:6d} " + "".join(f"{ms:16.2f}" for ms in row))
    _, ms = timed("https://example.com/(a+)+b", "https://example.com/" + "a" * 2000 + "c")
    print(f"(a+)+b against 2,000 a then c (catastrophic where regexps backtrack): {ms:.2f} ms")
    print("compile (ms) of 16 regexp groups, each:")
    for group in ("([0-9]+)", "(\\d+)", "(.*)", "(\\w+)", "(\\w*\\w*)", "(\\p{L}{0,200}){0,50}"):
        repeat = 1 if "{" in group else 16
        compile_ms, _ = timed("https://example.com/" + group * repeat, "https://example.com/1")
        print(f"  {group:24s} x{repeat:<3d} {compile_ms:8.1f}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="one JSON object per workload")
    parser.add_argument("--limits", action="store_true", help="what the limits are there for")
    args = parser.parse_args(argv)
    if args.limits:
        _limits()
        return

    rss_before = _rss_kib()
    start = time.process_time_ns()
    distinct = _subscriptions([_distinct(i) for i in range(SUBSCRIBERS)])
    compile_us = (time.process_time_ns() - start) / SUBSCRIBERS / 1000
    rss_compiled_kib = _rss_kib() - rss_before
    start = time.process_time_ns()
    hostile = _subscriptions([_hostile(i) for i in range(SUBSCRIBERS)])
    hostile_compile_us = (time.process_time_ns() - start) / SUBSCRIBERS / 1000
    shared = _subscriptions([_distinct(i % 10) for i in range(SUBSCRIBERS)])
    shared_10 = _subscriptions([_distinct(i) for i in range(10)])
    salt = iter(range(10**9))

    def item_topic(n: int) -> str:  # a topic that matches shop 3's pattern, never seen before
        return f"https://example.com/shop3/items/{n}-{next(salt)}"

    def long_topic(n: int) -> str:  # matches no hostile pattern, after a long evaluation
        head = f"https://example.com/h5/{n}-{next(salt)}-"
        return head + "x" * (MAX_URLPATTERN_TOPIC_LENGTH - len(head) - 1) + "y"

    workloads = [
        ("distinct", distinct, item_topic, False, 1),
        ("distinct warm", distinct, lambda n: "https://example.com/shop3/items/7", True, 1),
        ("shared", shared, item_topic, False, 100),
        ("shared grouped", shared, item_topic, None, 100),
        ("shared-10", shared_10, item_topic, False, 1),
        ("hostile", hostile, long_topic, False, 0),
    ]
    print(
        f"compile: {compile_us:.0f} µs per pattern ({hostile_compile_us:.0f} µs hostile); "
        f"1,000 compiled patterns: {rss_compiled_kib / 1024:.1f} MiB of RSS"
    )
    for name, subscriptions, topic, warm, expected in workloads:
        figures = []
        for _ in range(args.rounds):
            updates = args.updates if name != "hostile" else max(args.updates // 20, 5)
            if warm is None:
                us, matched = _grouped_us(subscriptions, topic, updates)
            else:
                us, matched = _per_update_us(subscriptions, topic, updates, warm)
            assert matched == expected * updates, (name, matched)
            figures.append(us)
        median = statistics.median(figures)
        if args.json:
            print(json.dumps({"workload": name, "subscriptions": len(subscriptions), "us": median}))
        else:
            print(
                f"{name:14s} {len(subscriptions):5d} subscriptions: {median:9.1f} µs per update "
                f"({median / len(subscriptions) * 1000:.0f} ns per subscription)"
            )


if __name__ == "__main__":
    main()
