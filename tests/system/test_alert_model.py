"""Alert instances held against a reference model (support/alert_model.py, written from
Prometheus's alerting rule and the Alerts contract, sharing no code with pushsvc): generated
alerts and event sequences drive the product and the model alike, and every `_alerts`
message (alert, topic, group, state, value, since) and `GET /alerts` after every step must
be the model's.

* In-process, many examples, alerts generated too: the aggregator publishing to the memory
  broker, and a shard runner publishing through a real Redis, with and without idle ticks.
  Ticks are driven here through the aggregator's injected wall clock, so their clocks are
  known to the microsecond (a live server ticks on its own wall clock, which no test can
  predict, and `since` carries the tick's clock).
* Live, `pushsvc serve` on each broker, ticks off: real HTTP, the real stream of `_alerts`,
  `GET /alerts`, a pool of alerts in the server's rules file.
* Live on Redis through kill -9 of the active aggregator (a standby takes over, or a cold one
  starts), at varied steps, just before and just after a POST: each change once, the model's.
"""

from __future__ import annotations

import tomllib
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from faults.harness import FaultStack
from harness.fenced_publish import publish as publish_fenced
from harness.live import PushsvcProcess, SSEClient, post, request
from harness.redis_server import RedisServer
from hypothesis import Phase, event, given, note, settings
from hypothesis import strategies as st

from pushsvc.aggregate.aggregator import Aggregator
from pushsvc.aggregate.shard_runner import ShardRunner
from pushsvc.broker.memory import MemoryBroker
from pushsvc.broker.redis import RedisBroker
from pushsvc.broker.redis.lease import RedisLease
from pushsvc.broker.redis.log import RedisEventLog
from pushsvc.core.event import Event
from pushsvc.core.topics import ALERTS
from pushsvc.core.updates import UpdateDraft, UpdateId
from pushsvc.rules.analytics import default_rule, parse_rules
from support.alert_model import AlertSpec, Change, Condition, TopicModel, spec_toml

S = 1_000_000
MS = 1_000
T0 = 1_763_700_000 * S
WINDOWS = {"5s": 5 * S, "10s": 10 * S}
STATS = ("count", "sum", "mean", "min", "max", "p50", "p90", "p99", "stddev")
TOPIC_TTL = 15 * S
LATENESS = 5 * S
STATIONS = ("grill", "fryer", "wok")
RULES = f"""
[[rule]]
topics = ["g.*"]
windows = ["5s", "10s"]
stats = {list(STATS)}
group_by = ["station"]
series = []

[[rule]]
topics = ["m.*"]
windows = ["5s", "10s"]
stats = {list(STATS)}
series = []
""".replace("'", '"')

Tags = Mapping[str, str] | None
Batch = list[tuple[int, float, Tags]]


# What is generated: alerts, and steps (batches of events on a topic, idle ticks).

_RANGES = {"count": 8, "min": 30, "max": 30, "sum": 150, "mean": 30, "p50": 30, "p90": 30,
           "p99": 30, "stddev": 12}  # fmt: skip
"""The thresholds' range, in steps of the grid (1 for count, 10 for the others)."""


@st.composite
def conditions(draw: st.DrawFn) -> Condition:
    """`stat[window] op threshold`. Values are multiples of 10 (see `posts`), so count, min
    and max land on the grid exactly and take any operator with a threshold on it; the
    statistics that are rounded (mean, quantiles, sums, stddev) take an order operator and a
    threshold 5.37 off the grid, which no such statistic of this data can come within a
    rounding error of."""
    stat = draw(st.sampled_from(STATS))
    window = draw(st.sampled_from(list(WINDOWS)))
    step = draw(st.integers(0, _RANGES[stat]))
    if stat == "count":
        return Condition(stat, window, draw(st.sampled_from(list(_OPS))), float(step))
    if stat in ("min", "max"):
        return Condition(stat, window, draw(st.sampled_from(list(_OPS))), 10.0 * step)
    return Condition(stat, window, draw(st.sampled_from(["<", "<=", ">", ">="])), 10 * step + 5.37)


_OPS = {">": "<", ">=": "<=", "<": ">", "<=": ">=", "==": "", "!=": ""}
"""Each operator and the one a hysteresis `clear` of it takes ('' for none)."""


@st.composite
def alert_specs(draw: st.DrawFn, name: str) -> AlertSpec:
    """An alert with `for` 0 or short, `keep_firing_for` 0 or short, and sometimes `clear`:
    the opposite comparison further out (hysteresis), or any condition at all."""
    when = draw(conditions())
    clear = None
    opposite = _OPS[when.op]
    kind = draw(st.sampled_from(["none", "hysteresis", "hysteresis", "other"]))
    if kind == "hysteresis" and opposite:
        unit = 1.0 if when.stat == "count" else 10.0
        gap = unit * draw(st.integers(0, 5))
        threshold = when.threshold - gap if opposite[0] == "<" else when.threshold + gap
        clear = Condition(when.stat, when.window, opposite, threshold)
    elif kind == "other":
        clear = draw(conditions())
    return AlertSpec(
        name,
        when,
        clear,
        draw(st.sampled_from([0, 0, 1500 * MS, 3 * S, 8 * S])),
        draw(st.sampled_from([0, 0, 2 * S, 6 * S])),
        {"severity": "test"},
    )


@dataclass(frozen=True)
class Post:
    """A batch of events posted to the grouping topic (`grouped`) or the plain one."""

    grouped: bool
    events: tuple[tuple[int, float, str | None], ...]
    """(time step in µs, a negative one for a late event; value; station or none)."""


@dataclass(frozen=True)
class Tick:
    """Wall time passes (`elapsed_us`), then the aggregator's idle tick runs."""

    elapsed_us: int


Step = Post | Tick


@st.composite
def posts(draw: st.DrawFn) -> Post:
    """1 to 3 events: mostly small steps (ties included), sometimes a late one within the
    lateness, sometimes a gap that empties the windows or outlasts the topic TTL; a few
    values (multiples of 50), so that the statistics meet the thresholds often; two or
    three stations, or none (a `null` key)."""
    events = []
    for _ in range(draw(st.integers(1, 3))):
        step = draw(
            st.sampled_from([0, 500 * MS, 1 * S, 1 * S, 1 * S, 2 * S, 3 * S, 7 * S, 17 * S])
        )
        if step == 0 and draw(st.integers(0, 3)) == 0:
            step = -draw(st.sampled_from([500 * MS, 2 * S, 4 * S]))  # late
        value = float(draw(st.sampled_from([0, 50, 100, 150, 200, 250, 300])))
        station = draw(st.sampled_from([*STATIONS[: draw(st.integers(2, 3))], None]))
        events.append((step, value, station))
    return Post(draw(st.booleans()), tuple(events))


def steps(*, ticks: bool) -> st.SearchStrategy[list[Step]]:
    step: st.SearchStrategy[Step] = posts()
    if ticks:
        elapsed = st.sampled_from([300 * MS, 1 * S, 1 * S, 2 * S, 4 * S, 11 * S, 20 * S])
        step = st.one_of(posts(), st.builds(Tick, elapsed))
    return st.lists(step, min_size=1, max_size=30)


def alert_sets() -> st.SearchStrategy[list[AlertSpec]]:
    return st.integers(1, 4).flatmap(
        lambda n: st.tuples(*(alert_specs(f"a{i}") for i in range(n))).map(list)
    )


def rules_text(alerts: Sequence[AlertSpec], selectors: Sequence[str] = ("g.*", "m.*")) -> str:
    return RULES + "".join(spec_toml(spec, selectors) for spec in alerts)


# Comparing.


def assert_agree(got: Sequence[Mapping[str, Any]], want: Sequence[Change], where: str) -> None:
    """`got` (messages or `GET /alerts` entries) are the model's changes: per instance the
    same changes in the same order (the order across instances is not promised)."""
    changes = [Change.of_message(message) for message in got]
    mine = sorted(changes, key=lambda change: change.instance)
    theirs = sorted(want, key=lambda change: change.instance)
    same = len(mine) == len(theirs) and all(a.agrees(b) for a, b in zip(mine, theirs, strict=True))
    assert same, f"{where}:\n  product {_show(mine)}\n  model   {_show(theirs)}"


def _show(changes: Sequence[Change]) -> str:
    return (
        "\n          ".join(
            f"{c.alert} {c.topic} {c.group} {c.state} value={c.value} "
            f"since=T0+{(c.since_us - T0) / S}s"
            for c in changes
        )
        or "(none)"
    )


class Scenario:
    """Two topics (one grouping by station, one not) under the same alerts, the model of
    each, and the clocks that turn steps into event times and tick clocks."""

    def __init__(self, alerts: Sequence[AlertSpec], name: str) -> None:
        self.models = {
            True: TopicModel(
                f"g.{name}", alerts, WINDOWS, group_by=["station"], topic_ttl_us=TOPIC_TTL
            ),
            False: TopicModel(f"m.{name}", alerts, WINDOWS, topic_ttl_us=TOPIC_TTL),
        }
        # Each topic's clock at its last batch, and the wall time since: a tick moves the
        # topic's clock to their sum (docs/design.md, Idle topics).
        self.event_clock_us = {True: T0, False: T0}
        self.idle_us = {True: 0, False: 0}

    def batch(self, post: Post) -> tuple[str, Batch, list[Change]]:
        """The topic, the events (steps made times on the topic clock; a late event within
        the lateness) and the changes the model expects.

        No late event comes first after idle ticks: the product does not move the clock of a
        topic whose windows are empty and none of whose instances is live (nothing of it can
        change), which only an event older than the clock could see; the contract says the
        clock moves. Outside what alerts are about, and left alone here."""
        model = self.models[post.grouped]
        batch: Batch = []
        clock = model.clock_us or T0
        for index, (step, value, station) in enumerate(post.events):
            if step < 0 and index == 0 and self.idle_us[post.grouped]:
                step = 0
            ts = clock + step if step >= 0 else clock - min(-step, LATENESS - 1)
            clock = max(clock, ts)
            batch.append((ts, value, None if station is None else {"station": station}))
        changes = model.events(batch)
        assert model.clock_us is not None
        self.event_clock_us[post.grouped] = model.clock_us
        self.idle_us[post.grouped] = 0
        return model.topic, batch, changes

    def tick(self, tick: Tick) -> list[Change]:
        changes = []
        for grouped, model in self.models.items():
            self.idle_us[grouped] += tick.elapsed_us
            if model.clock_us is not None:
                changes += model.tick(self.event_clock_us[grouped] + self.idle_us[grouped])
        return changes

    def active(self) -> list[Change]:
        return [c for model in self.models.values() for c in model.active()]

    def topics(self) -> list[str]:
        return [model.topic for model in self.models.values()]

    def note_what_happened(self, changes: Sequence[Change]) -> None:
        """Hypothesis's statistics: which transitions the example went through."""
        seen = {f"{'group' if c.group else 'topic'} {c.state}" for c in changes}
        for model in self.models.values():
            seen |= model.seen
        for kind in sorted(seen):
            event(kind)


# In-process: the aggregator publishing to a broker, its wall clock driven here, so that
# idle ticks are deterministic (a live server ticks on its own wall clock, which no test can
# predict to the microsecond that `since` carries).


class InMemory:
    """What `pushsvc serve` runs on the embedded broker, without the HTTP: the aggregator and
    the memory broker it publishes to. `active` is what `GET /alerts` answers."""

    def __init__(self, alerts: Sequence[AlertSpec]) -> None:
        self.wall_us = 0
        self.aggregator = _aggregator(alerts, lambda: self.wall_us)
        self.broker = MemoryBroker.serving()

    def post(self, topic: str, batch: Batch) -> list[dict[str, Any]]:
        return self._publish(self.aggregator.apply_events(topic, _events(batch)))

    def tick(self, elapsed_us: int) -> list[dict[str, Any]]:
        self.wall_us += elapsed_us
        return self._publish(self.aggregator.tick())

    def _publish(self, drafts: Sequence[UpdateDraft]) -> list[dict[str, Any]]:
        updates = publish_fenced(self.broker, drafts)
        return [orjson.loads(u.data) for u in updates if u.event == "alert"]

    def active(self) -> list[dict[str, Any]]:
        return [orjson.loads(body) for body in self.broker.active_alerts()]

    def close(self) -> None:
        self.broker.close()


class OnRedis:
    """What `pushsvc aggregate` runs, stepped by hand: a shard runner holding the lease,
    applying the event log (events appended as `pushsvc web` appends them, idle ticks logged
    as it logs them) and publishing through the fenced step. `active` is what `GET /alerts`
    answers (the broker's hash of active instances)."""

    def __init__(self, alerts: Sequence[AlertSpec], url: str) -> None:
        prefix = f"m{uuid.uuid4().hex[:10]}:"
        self.wall_us = 0
        self.broker = RedisBroker(url, prefix=prefix, partitions=1)
        self.aggregator = _aggregator(alerts, lambda: self.wall_us)
        self._log = RedisEventLog(url, self.broker.keys, (0, 1), socket_timeout=5.0)
        self._lease = RedisLease(url, self.broker.keys.shard((0, 1)).lease, ttl_us=600 * S)
        self.runner = ShardRunner(
            self.aggregator, self.broker, self._log, self._lease, tick_us=S, block_ms=1
        )
        self.runner.rebuild()
        assert self._lease.renew()
        self._after: UpdateId | None = None

    def post(self, topic: str, batch: Batch) -> list[dict[str, Any]]:
        self.broker.append_events(topic, _events(batch), lateness_us=LATENESS)
        self.runner.step()
        return self._published()

    def tick(self, elapsed_us: int) -> list[dict[str, Any]]:
        self.wall_us += elapsed_us
        self.runner._log_ticks()  # what its loop does every --tick, as the lease holder
        self.runner.step()
        return self._published()

    def _published(self) -> list[dict[str, Any]]:
        page = self.broker.history(ALERTS, after=self._after, limit=10_000)
        if page.updates:
            self._after = page.updates[-1].id
        return [orjson.loads(u.data) for u in page.updates]

    def active(self) -> list[dict[str, Any]]:
        return [orjson.loads(body) for body in self.broker.active_alerts()]

    def close(self) -> None:
        for closing in (self._lease, self._log, self.broker):
            closing.close()


def _aggregator(alerts: Sequence[AlertSpec], wall: Callable[[], int]) -> Aggregator:
    rules = parse_rules(tomllib.loads(rules_text(alerts)), default_rule((10 * S,), STATS))
    return Aggregator(rules=rules, wall_clock=wall, topic_ttl_us=TOPIC_TTL, lateness_us=LATENESS)


def _events(batch: Batch) -> list[Event]:
    return [Event(value, ts, None if tags is None else dict(tags)) for ts, value, tags in batch]


def run_in_process(
    product: InMemory | OnRedis, alerts: Sequence[AlertSpec], script: Sequence[Step]
) -> None:
    """Drive the product and the model through `script`, comparing after every step."""
    note(f"alerts: {alerts!r}")
    note(f"steps: {script!r}")
    scenario = Scenario(alerts, "x")
    every: list[Change] = []
    try:
        for number, step in enumerate(script):
            if isinstance(step, Post):
                topic, batch, want = scenario.batch(step)
                got = product.post(topic, batch)
            else:
                want = scenario.tick(step)
                got = product.tick(step.elapsed_us)
            where = f"step {number} ({step})"
            assert_agree(got, want, f"_alerts after {where}")
            assert_agree(product.active(), scenario.active(), f"GET /alerts after {where}")
            every += want
    finally:
        product.close()
    scenario.note_what_happened(every)


@settings(max_examples=300, deadline=None)
@given(alert_sets(), steps(ticks=False))
def test_in_memory_without_ticks(alerts: list[AlertSpec], script: list[Step]) -> None:
    run_in_process(InMemory(alerts), alerts, script)


@settings(max_examples=300, deadline=None)
@given(alert_sets(), steps(ticks=True))
def test_in_memory_with_ticks(alerts: list[AlertSpec], script: list[Step]) -> None:
    run_in_process(InMemory(alerts), alerts, script)


@pytest.mark.redis
@settings(max_examples=60, deadline=None)
@given(alert_sets(), steps(ticks=True))
def test_on_redis_with_ticks(
    redis_server: RedisServer, alerts: list[AlertSpec], script: list[Step]
) -> None:
    run_in_process(OnRedis(alerts, redis_server.url), alerts, script)


# Live: `pushsvc serve` on each broker (real HTTP, the real stream, `GET /alerts`), idle
# ticks off (`--tick 0`): every evaluation is an event's, so the outcome is a function of the
# events alone. A pool of alerts is in the server's rules file; an example picks some of them
# by the topics it posts to (alert i matches `g.<mask>.*` and `m.<mask>.*` for every mask
# with bit i), with fresh topics each time.

POOL = (
    AlertSpec("hot", Condition("max", "5s", ">", 200.0), None, 3 * S),
    AlertSpec("busy", Condition("count", "10s", ">=", 5.0), Condition("count", "10s", "<=", 2.0)),
    AlertSpec("warm", Condition("mean", "10s", ">", 145.37), None, 0, 4 * S),
    AlertSpec("tail", Condition("p90", "10s", ">=", 225.37), None, 1500 * MS, 2 * S),
    AlertSpec("cold", Condition("min", "5s", "<", 50.0)),
    AlertSpec("quiet", Condition("count", "5s", "<", 2.0), None, 4 * S),
    AlertSpec("spiky", Condition("max", "10s", ">", 250.0), Condition("mean", "10s", "<", 100.37)),
    AlertSpec("peak", Condition("max", "5s", "==", 300.0), None, 0, 3 * S),
)
HOT_LONG = AlertSpec("hot_long", Condition("max", "10s", ">", 100.0), None, 20 * S)
LIVE_RULES = (
    RULES
    + '\n[[rule]]\ntopics = ["hot.*"]\nwindows = ["10s"]\nstats = ["count", "max"]\nseries = []\n\n'
    + "".join(
        spec_toml(
            spec,
            [f"{kind}.{mask}.*" for mask in range(1, 256) if mask >> i & 1 for kind in "gm"],
        )
        for i, spec in enumerate(POOL)
    )
    + spec_toml(HOT_LONG, ["hot.*"])
)
SERVER_ENV = {"PUSHSVC_TOPIC_TTL": "15s", "PUSHSVC_SERIES": "none", "PUSHSVC_TICK": "0"}


@pytest.fixture(scope="module")
def live_rules(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("alert-model") / "rules.toml"
    path.write_text(LIVE_RULES)
    return str(path)


@pytest.fixture(scope="module", params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def live(request: pytest.FixtureRequest, live_rules: str) -> Iterator[PushsvcProcess]:
    """`pushsvc serve` with the pool of alerts, on the embedded broker or on a redis-server
    of the module's own."""
    env = {**SERVER_ENV, "PUSHSVC_RULES": live_rules}
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        env |= {"PUSHSVC_REDIS_URL": server.url, "PUSHSVC_PREFIX": f"m{uuid.uuid4().hex[:10]}:"}
    proc = PushsvcProcess("serve", env=env).start()
    yield proc
    proc.stop()


class LiveStream:
    """One example's stream of its topics and of `_alerts`, read step by step: a step's alert
    messages follow its first update and come before the next step's first update (a topic's
    changes follow its update in the id sequence, docs/design.md)."""

    def __init__(self, port: int, topics: Sequence[str], marker: str) -> None:
        query = "&".join(f"topic={t}" for t in (*topics, ALERTS, marker))
        self.stream = SSEClient(port, f"/stream?{query}", timeout=30)
        self.stream.next_data("snapshot")
        self.topics = set(topics)
        self.ids: list[str] = []
        self._alerts: list[dict[str, Any]] = []

    def updates(self, topic: str, count: int) -> list[dict[str, Any]]:
        """Read on until `count` updates of `topic` have arrived; the alert messages read
        before the first of them (the previous step's)."""
        before: list[dict[str, Any]] = []
        seen = 0
        while seen < count:
            message = self.stream.next()
            data = orjson.loads(message.data)
            if message.event == "alert" and data["topic"] in self.topics:
                self.ids.append(message.id)
                self._alerts.append(data)
            elif message.event == "stats" and data["topic"] == topic:
                if seen == 0:
                    before, self._alerts = self._alerts, []
                seen += 1
        return before

    def close(self) -> None:
        self.stream.close()


def active_alerts(port: int, topics: Sequence[str]) -> list[dict[str, Any]]:
    """`GET /alerts`, every page of it (earlier examples' instances fill the first ones)."""
    found: list[dict[str, Any]] = []
    path = "/alerts?limit=1000"
    while True:
        status, _, body = request(port, "GET", path)
        assert status == 200, body
        page = orjson.loads(body)
        found += [a for a in page["alerts"] if a["topic"] in topics]
        if page["next"] is None:
            return found
        path = f"/alerts?limit=1000&after={page['next']}"


def run_live(
    port: Callable[[], int],
    mask: int,
    script: Sequence[Post],
    before_post: Callable[[int, bool], None] = lambda number, after: None,
) -> None:
    """Post `script` to a live deployment and hold every step to the model: the `_alerts`
    messages of each step, `GET /alerts` after each, and the whole run's ids (each change
    once). `before_post(number, after)` runs before a step's POST and right after it
    (`after`): where a fault goes. `port`: where to post and read now."""
    alerts = [spec for i, spec in enumerate(POOL) if mask >> i & 1]
    note(f"alerts: {[spec.name for spec in alerts]}")
    note(f"steps: {script!r}")
    name = uuid.uuid4().hex[:10]
    scenario = Scenario(alerts, f"{mask}.{name}")
    marker = f"z.{name}"  # no alert matches it: its update closes the last step
    stream = LiveStream(port(), scenario.topics(), marker)
    every: list[Change] = []
    try:
        previous: tuple[str, list[Change]] | None = None
        for number, step in enumerate([*script, None]):
            if step is None:
                topic, batch, want = marker, [(T0, 0.0, None)], []
            else:
                topic, batch, want = scenario.batch(step)
            before_post(number, False)
            status, body = post(port(), topic, [_event_json(e) for e in batch])
            assert status == 202, body
            before_post(number, True)
            got = stream.updates(topic, len(batch))
            if previous is not None:
                assert_agree(got, previous[1], f"_alerts of {previous[0]}")
            previous = (f"step {number} ({step})", want)
            every += want
            if step is not None:
                where = f"GET /alerts after step {number} ({step})"
                assert_agree(active_alerts(port(), scenario.topics()), scenario.active(), where)
    finally:
        stream.close()
    assert len(set(stream.ids)) == len(stream.ids), "a change arrived twice"
    scenario.note_what_happened(every)


def _event_json(event: tuple[int, float, Tags]) -> dict[str, Any]:
    ts, value, tags = event
    found: dict[str, Any] = {"value": value, "ts": ts / S}
    if tags is not None:
        found["tags"] = dict(tags)
    return found


masks = st.sets(st.integers(0, len(POOL) - 1), min_size=1, max_size=3).map(
    lambda bits: sum(1 << bit for bit in bits)
)


def live_steps(max_size: int) -> st.SearchStrategy[list[Post]]:
    return st.lists(posts(), min_size=1, max_size=max_size)


@settings(max_examples=40, deadline=None)
@given(masks, live_steps(20))
def test_live_without_ticks(live: PushsvcProcess, mask: int, script: list[Post]) -> None:
    run_live(lambda: live.port, mask, script)


def test_a_pending_instance_that_clears_is_gone_from_get_alerts(live: PushsvcProcess) -> None:
    """The reported case: `hot_long` (`max[10s] > 100` for 20 s), one event a second of event
    time: 10 for 0..2 s, 200 for 3..7 s, 10 for 8..30 s. Pending at 3 s; at 17 s the last 200
    has left the 10 s window, before `for` ran out (23 s): inactive, and `GET /alerts` lists
    nothing from then on. A later spike goes pending again, not firing at once."""
    port = live.port
    topic = f"hot.{uuid.uuid4().hex[:10]}"
    stream = LiveStream(port, [topic], f"z.{topic}")
    try:
        listed, changes = [], []
        for i in range(31):
            value = 200.0 if 3 <= i <= 7 else 10.0
            assert post(port, topic, {"value": value, "ts": (T0 + i * S) / S})[0] == 202
            changes += stream.updates(topic, 1)
            listed.append([(a["state"], a["since"]) for a in active_alerts(port, [topic])])
        assert listed == [[]] * 3 + [[("pending", (T0 + 3 * S) / S)]] * 14 + [[]] * 14
        assert post(port, topic, {"value": 250.0, "ts": (T0 + 31 * S) / S})[0] == 202
        changes += stream.updates(topic, 1)  # with those of the event before
        assert post(port, topic, {"value": 250.0, "ts": (T0 + 32 * S) / S})[0] == 202
        changes += stream.updates(topic, 1)
        assert [(c["state"], c["since"] - T0 / S, c["value"]) for c in changes] == [
            ("pending", 3.0, 200.0),
            ("inactive", 17.0, 10.0),
            ("pending", 31.0, 250.0),
        ]
        assert [(a["state"], a["since"]) for a in active_alerts(port, [topic])] == [
            ("pending", (T0 + 31 * S) / S)
        ]
    finally:
        stream.close()


# Redis through kill -9: `pushsvc web` and two `pushsvc aggregate` (one holds the lease, one
# stands by). Mid-way the active aggregator is killed with SIGKILL — just before a step's POST
# or right after it, while its events may be logged but not yet applied — and the standby
# takes over, or every aggregator is killed and a cold one starts (from the checkpoints and
# the log). Each change must still come exactly once, and be the model's.


@pytest.fixture(scope="module")
def standby_stack(redis_server: RedisServer, live_rules: str) -> Iterator[FaultStack]:
    prefix = f"k{uuid.uuid4().hex[:10]}:"
    stack = FaultStack(redis_server, prefix, env={**SERVER_ENV, "PUSHSVC_RULES": live_rules})
    try:
        stack.start_web()
        _two_aggregators(stack)
        yield stack
    finally:
        stack.stop()


def _two_aggregators(stack: FaultStack) -> None:
    while len(stack.aggregators) < 2:
        stack.start_aggregator()
    stack.active_aggregator()


@pytest.mark.redis
@pytest.mark.slow
# Not shrunk: each try costs seconds of processes starting and leases running out.
@settings(max_examples=8, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(
    masks,
    live_steps(12),
    st.integers(0, 11),
    st.booleans(),
    st.sampled_from(["standby takes over", "cold restart"]),
)
def test_live_on_redis_through_kill_9(
    standby_stack: FaultStack, mask: int, script: list[Post], kill_at: int, after: bool, how: str
) -> None:
    stack = standby_stack
    kill_at = min(kill_at, len(script) - 1)
    note(f"kill -9 {'after' if after else 'before'} the POST of step {kill_at}: {how}")

    def kill(number: int, posted: bool) -> None:
        if (number, posted) != (kill_at, after):
            return
        victims = [stack.active_aggregator()] if how == "standby takes over" else stack.aggregators
        for aggregator in list(victims):
            aggregator.kill()
            stack.aggregators.remove(aggregator)
        if not stack.aggregators:
            stack.start_aggregator()

    try:
        run_live(lambda: stack.ports()[0], mask, script, kill)
    finally:
        _two_aggregators(stack)
