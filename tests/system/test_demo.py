"""`pushsvc demo`: its models' patterns, checked with pandas on the events it generates, and the
command against a real server (every documented topic, auth, 429 with Retry-After, bad options).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pandas as pd
import pytest

from pushsvc.aggregate.aggregator import Aggregator
from pushsvc.core.event import Event
from pushsvc.demo.clock import SimClock
from pushsvc.demo.scenario import DISHES, STATIONS, Scenario, topic_names
from pushsvc.stats.rules import default_rule, load_rules
from support.auth_tokens import SECRET, hs256
from support.live import SRC, PushsvcProcess, request

README = Path(__file__).resolve().parents[2] / "README.md"
EXAMPLE_RULES = Path(__file__).resolve().parents[2] / "examples" / "demo-rules.toml"
S = 1_000_000
T0_S = 1_763_700_000
DAY_SPEED = 1440.0  # a simulated day in 60 machine seconds


def _day(seed: int, rate: float = 1000.0, start: str = "00:00") -> tuple[Scenario, pd.DataFrame]:
    """One simulated day of the scenario, as a frame: offset, topic, value, tags, hour."""
    hours, minutes = (int(p) for p in start.split(":"))
    scenario = Scenario(SimClock(hours * 3600.0 + minutes * 60.0, DAY_SPEED), rate, seed)
    rows = []
    for event in scenario.events():
        if event.offset >= 86_400 / DAY_SPEED:
            break
        rows.append(
            {"offset": event.offset, "topic": event.topic, "value": event.value, **event.tags}
        )
    frame = pd.DataFrame(rows)
    frame["hour"] = [scenario.clock.hour(offset) for offset in frame["offset"]]
    return scenario, frame


@pytest.fixture(scope="module")
def day() -> tuple[Scenario, pd.DataFrame]:
    return _day(seed=11)


# ---------------------------------------------------------------- the models


def test_rush_hours_slow_every_kitchen_station(day: tuple[Scenario, pd.DataFrame]) -> None:
    _, frame = day
    latency = frame[frame["topic"].str.startswith("restaurant.latency.")]
    period = pd.cut(
        latency["hour"],
        bins=[0, 10, 12.25, 13.25, 15, 17.5, 19, 20, 24],
        labels=["night", "", "lunch", "", "afternoon", "", "dinner", ""],
        ordered=False,
    )
    means = latency.groupby(["station", period], observed=True)["value"].mean().unstack()
    assert set(means.index) == set(STATIONS)
    off_peak = means[["night", "afternoon"]].max(axis=1)
    assert (means["lunch"] > 1.5 * off_peak).all(), means
    assert (means["dinner"] > 1.5 * off_peak).all(), means
    # ...and the orders pour in then: more latency events per hour in the rushes.
    per_hour = latency.groupby(period, observed=True).size() / pd.Series(
        {"night": 10, "lunch": 1, "afternoon": 2.5, "dinner": 1}
    )
    assert per_hour["lunch"] > 2 * per_hour["afternoon"]
    assert per_hour["dinner"] > 2 * per_hour["night"]


def test_ratings_are_whole_stars_from_1_to_5(day: tuple[Scenario, pd.DataFrame]) -> None:
    _, frame = day
    ratings = frame[frame["topic"].str.startswith("restaurant.rating.")]
    assert set(ratings["dish"]) == set(DISHES)
    assert ratings["value"].between(1, 5).all()
    assert (ratings["value"] == ratings["value"].round()).all()
    assert set(ratings["value"]) == {1.0, 2.0, 3.0, 4.0, 5.0}


def test_a_bad_batch_lowers_the_dishs_window_mean(day: tuple[Scenario, pd.DataFrame]) -> None:
    scenario, frame = day
    drops = []
    for incident in scenario.incidents:
        if incident.kind != "bad batch" or incident.end > frame["offset"].max():
            continue
        dish = frame[frame["topic"] == incident.topic]
        ratings = dish.set_index(pd.to_datetime(dish["offset"], unit="s"))["value"]
        # A window as wide as the bad batch, sliding like the server's: its mean just before
        # the batch, and at the batch's end (when it holds only the batch's ratings).
        width = incident.end - incident.start
        window = ratings.rolling(pd.Timedelta(seconds=width))
        before, during = _at(window, incident.start), _at(window, incident.end)
        inside = dish["offset"].between(incident.start, incident.end).sum()
        if inside < 8 or before[1] < 8:
            continue  # too few ratings around this one to tell (a quiet night)
        if any(
            other.topic == incident.topic and 0 < incident.start - other.end < 2 * width
            for other in scenario.incidents
        ):
            continue  # right after another bad batch of the same dish: no good "before"
        drops.append(before[0] - during[0])
    # Each one lowers the mean clearly (the noise of ~10 ratings is ~0.3 star), and by well
    # over a star on average (1.5 to 2.2 stars less quality, less what the 1-star floor clips).
    assert len(drops) >= 3
    assert min(drops) > 0.3, drops
    assert sum(drops) / len(drops) > 1.0, drops


def _at(window: pd.api.typing.Rolling, offset: float) -> tuple[float, int]:
    """(mean, count) of the rolling window at its last event at or before `offset`."""
    means, counts = window.mean(), window.count()
    upto = pd.to_datetime(offset, unit="s")
    # Strictly before `offset`: the batch starts (or ends) at a time, not at a rating.
    earlier = means.index < upto
    return float(means[earlier].iloc[-1]), int(counts[earlier].iloc[-1])


def test_flash_sales_are_bursts_of_checkouts(day: tuple[Scenario, pd.DataFrame]) -> None:
    scenario, frame = day
    checkouts = frame[frame["topic"] == "shop.checkout_value"]
    sales = [i for i in scenario.incidents if i.kind == "flash sale"]
    on_sale = pd.Series(False, index=checkouts.index)
    for sale in sales:
        on_sale |= checkouts["offset"].between(sale.start, sale.end, inclusive="left")
    assert (checkouts["campaign"] == "flash-sale").equals(on_sale)
    end = frame["offset"].max()
    sale_time = sum(min(s.end, end) - s.start for s in sales if s.start < end)
    rate_on_sale = on_sale.sum() / sale_time
    rate_otherwise = (~on_sale).sum() / (end - sale_time)
    assert rate_on_sale > 3 * rate_otherwise
    assert checkouts[on_sale]["value"].median() < checkouts[~on_sale]["value"].median()


def test_the_rate_is_a_budget(day: tuple[Scenario, pd.DataFrame]) -> None:
    _, frame = day
    per_second = frame.groupby(frame["offset"].astype(int)).size()
    assert per_second.mean() < 1000
    # Poisson noise aside, no 5-second stretch goes over the budget.
    assert per_second.rolling(5).sum().max() < 1000 * 5


def test_the_same_seed_gives_the_same_events() -> None:
    def first(seed: int) -> list[object]:
        events = Scenario(SimClock(12 * 3600.0, 60.0), 50.0, seed).events()
        return [next(events) for _ in range(300)]

    assert first(5) == first(5)
    assert first(5) != first(6)


def test_readme_lists_the_topics_the_demo_publishes() -> None:
    text = README.read_text(encoding="utf-8")
    section = text.split("## The demo", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^\| `((?:restaurant|shop)\.[^`]+)` \|", section, re.MULTILINE)
    assert listed == list(topic_names())


# ---------------------------------------------------------------- the command, for real


def _env(**extra: str) -> dict[str, str]:
    return {"PYTHONPATH": SRC, "PATH": os.environ["PATH"], "TZ": "UTC", **extra}


def _run(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *argv], env=env or _env(), capture_output=True, text=True, timeout=60
    )


def _posted(stderr: str) -> int:
    match = re.search(r"posted (\d+) events", stderr)
    assert match, stderr
    return int(match[1])


def _window_counts(port: int, topics: tuple[str, ...], token: str | None = None) -> dict[str, int]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    counts = {}
    for topic in topics:
        status, _, body = request(port, "GET", f"/topics/{topic}/stats", headers=headers)
        counts[topic] = json.loads(body)["windows"]["5m"]["count"] if status == 200 else 0
    return counts


@pytest.mark.parametrize("entry", ["pushsvc demo", "python -m pushsvc.demo"])
def test_the_demo_publishes_every_documented_topic(server: PushsvcProcess, entry: str) -> None:
    prefix = f"d{uuid.uuid4().hex[:8]}."
    settings = {"speed": "1440", "start": "12:00", "rate": "200", "duration": "3s", "seed": "1"}
    if entry == "pushsvc demo":
        flags = [f"--{name}={value}" for name, value in settings.items()]
        done = _run("-m", "pushsvc", "demo", f"--url={server.base}", f"--prefix={prefix}", *flags)
    else:  # the compose stack's way: everything in PUSHSVC_DEMO_* variables
        variables = {f"PUSHSVC_DEMO_{name.upper()}": value for name, value in settings.items()}
        env = _env(PUSHSVC_DEMO_URL=server.base, PUSHSVC_DEMO_PREFIX=prefix, **variables)
        done = _run("-m", "pushsvc.demo", env=env)
    assert done.returncode == 0, done.stderr
    counts = _window_counts(server.port, topic_names(prefix))
    assert all(counts.values()), counts  # every topic, and no other (the names are ours)
    _, _, body = request(server.port, "GET", "/topics")
    ours = {t["topic"] for t in json.loads(body)["topics"] if t["topic"].startswith(prefix)}
    assert ours == set(topic_names(prefix))
    assert sum(counts.values()) == _posted(done.stderr)  # what it says it posted, all there


@pytest.fixture(scope="module")
def guarded() -> Iterator[PushsvcProcess]:
    """A server with auth on and a publish rate the demo goes over."""
    env = {"PUSHSVC_JWT_KEY": SECRET, "PUSHSVC_PUBLISH_RATE": "40"}
    proc = PushsvcProcess("serve", "--tick", "0", env=env).start()
    yield proc
    proc.stop()


def test_without_a_token_the_demo_stops_with_the_servers_answer(
    guarded: PushsvcProcess,
) -> None:
    done = _run("-m", "pushsvc", "demo", f"--url={guarded.base}", "--rate=50", "--count=5")
    assert done.returncode == 1
    assert "HTTP 401" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_demo_waits_out_429s_and_loses_nothing_it_counts(guarded: PushsvcProcess) -> None:
    prefix = f"r{uuid.uuid4().hex[:8]}."
    token = hs256(publish=[f"{prefix}*"], subscribe=[f"{prefix}*"], subject=prefix)
    done = _run(
        "-m", "pushsvc", "demo", f"--url={guarded.base}", f"--prefix={prefix}",
        "--speed=1440", "--start=19:00", "--rate=300", "--count=120", "--seed=2",
        env=_env(PUSHSVC_TOKEN=token),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    retried = re.search(r"not ready \(HTTP 429 rate_limited: .*\); retrying in \d", done.stderr)
    assert retried, done.stderr
    assert _posted(done.stderr) == 120
    assert sum(_window_counts(guarded.port, topic_names(prefix), token).values()) == 120


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--speed=0"], "--speed"),
        (["--rate=-1"], "--rate"),
        (["--start=25:00"], "not a time of day"),
        (["--prefix=no spaces."], "--prefix"),
        (["--duration=0"], "--duration"),
        (["--duration=soon"], "not a duration"),
        (["--count=0"], "--count"),
        (["--topics=a,b", "--speed=60"], "--speed is for the scenario"),
    ],
)
def test_bad_options_are_a_usage_error(args: list[str], message: str) -> None:
    done = _run("-m", "pushsvc", "demo", *args)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_backfill_posts_the_past_hours_then_goes_live(server: PushsvcProcess) -> None:
    """`--backfill 6h` from 18:00: the six simulated hours before (the lunch rush, the quiet
    afternoon) land stamped in the past, in the kitchen's minute series; a second backfill into
    the same topics is refused with one clear line."""
    prefix = f"b{uuid.uuid4().hex[:8]}."
    flags = ["--start=18:00", "--speed=1", "--rate=3", "--duration=1s", "--seed=4"]
    began = time.time()
    done = _run(
        "-m", "pushsvc", "demo", f"--url={server.base}", f"--prefix={prefix}", "--backfill=6h",
        *flags,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    filled = re.search(r"backfilled (\d+) events", done.stderr)
    assert filled and int(filled[1]) > 1000, done.stderr
    kitchen = f"{prefix}restaurant.kitchen"
    status, _, body = request(server.port, "GET", f"/topics/{kitchen}/series?resolution=1m")
    assert status == 200
    points = json.loads(body)["points"]
    # The newest closed minute: up to two minutes back, depending on where the minute turns.
    assert points[0]["t"] < began - 5.9 * 3600 and points[-1]["t"] > began - 180
    counts = pd.Series(
        [p["count"] for p in points], index=pd.to_datetime([p["t"] for p in points], unit="s")
    )
    # 12:00-13:30 simulated is the lunch rush; 15:00-16:30 the quiet afternoon.
    lunch = counts[counts.index < pd.Timestamp(began - 4.5 * 3600, unit="s")]
    afternoon = counts[
        (counts.index >= pd.Timestamp(began - 3 * 3600, unit="s"))
        & (counts.index < pd.Timestamp(began - 1.5 * 3600, unit="s"))
    ]
    assert lunch.sum() / 90 > 1.5 * afternoon.sum() / 90, (lunch.sum(), afternoon.sum())
    again = _run(
        "-m", "pushsvc", "demo", f"--url={server.base}", f"--prefix={prefix}", "--backfill=1h",
        *flags,
    )  # fmt: skip
    assert again.returncode == 1
    assert "already has events newer than the backfill" in again.stderr


def test_the_demo_rules_alerts_trip_on_the_lunch_rush_and_a_bad_batch() -> None:
    """examples/demo-rules.toml's alerts, fed three simulated hours from 11:30 at the demo's
    own pace (--speed 1) through an aggregator: the kitchen's fires in the lunch rush, and the
    ratings' fires for the dish of a bad batch while it is served."""
    rules = load_rules(str(EXAMPLE_RULES), default_rule((10 * S, 60 * S, 300 * S), ("count",)))
    scenario = Scenario(SimClock(11.5 * 3600, 1.0), 20.0, seed=1)
    aggregator = Aggregator(rules=rules, wall_clock=lambda: 0)
    changes = []
    for e in scenario.events():
        if e.offset >= 3 * 3600:
            break
        if e.topic not in ("restaurant.kitchen", "restaurant.reviews"):
            continue
        event = Event(e.value, round((T0_S + e.offset) * S), e.tags)
        for d in aggregator.apply_events(e.topic, [event]):
            if d.instance is not None:
                change = orjson.loads(d.body)
                changes.append((change, scenario.clock.hour(change["since"] - T0_S)))
    kitchen = [h for c, h in changes if c["alert"] == "kitchen_slow" and c["group"] is None
               and c["state"] == "firing"]  # fmt: skip
    assert kitchen and 12 <= kitchen[0] <= 13.5, kitchen  # lunch
    (batch,) = [i for i in scenario.incidents if i.kind == "bad batch" and
                12 <= scenario.clock.hour(i.start) <= 14]  # fmt: skip
    dish = batch.topic.rsplit(".", 1)[1]
    sinking = [
        h for c, h in changes
        if c["alert"] == "dish_ratings_sink" and c["group"] == {"dish": dish}
        and c["state"] == "firing"
    ]  # fmt: skip
    start, end = scenario.clock.hour(batch.start), scenario.clock.hour(batch.end)
    assert sinking and start <= sinking[0] <= end + 0.1, (sinking, start, end)
