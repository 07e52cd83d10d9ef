"""The demo's world: a restaurant's kitchen and dining room, and a web shop, on a simulated day.

`Scenario(...).events()` yields every event the demo will post, in time order, each at an
offset (machine seconds since the demo started). It is pure and seeded: the same seed, rate,
speed and start give the same events, however fast or slow they are consumed, because every
stream draws from its own random generator in its own time.

The streams share the `rate` budget (events per second at most, on average): each is a Poisson
process whose intensity follows the simulated time of day (thinning, Lewis and Shedler), scaled
so that its busiest moment uses its share of the budget.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from pushsvc.demo.clock import (
    LUNCH,
    ORDERS_PEAK,
    SHOP_PEAK,
    SimClock,
    bump,
    kitchen_load,
    orders,
    shop_traffic,
)

# Kitchen stations and their median order latency (seconds) when the kitchen is idle.
STATIONS: dict[str, float] = {
    "grill": 480.0,
    "wok": 300.0,
    "fryer": 240.0,
    "salad": 150.0,
    "pastry": 210.0,
}
# Dishes: (mean quality on the 1-5 scale, share of the ratings).
DISHES: dict[str, tuple[float, float]] = {
    "ramen": (4.4, 0.30),
    "burger": (4.1, 0.25),
    "pad_thai": (4.3, 0.20),
    "caesar": (3.9, 0.15),
    "tiramisu": (4.6, 0.10),
}

# Shares of the rate budget at each stream's busiest moment (they add up to 1).
# Shares of the budget; the restaurant's events are posted twice (their own topic and the
# kitchen's or the reviews'), so they count double:
# 2 * 0.15 + 2 * 0.15 + 0.10 + 0.05 + 0.15 + 0.10 = 1.
LATENCY_SHARE = 0.15
RATING_SHARE = 0.15
PAGEVIEWS_SHARE = 0.10
SESSION_SHARE = 0.05
CHECKOUT_SHARE = 0.15
CLICKS_SHARE = 0.10

LATENCY_SIGMA = 0.35  # lognormal spread of a station's latency
QUALITY_REVERSION_S = 6 * 3600.0  # a dish's quality drifts back to its mean over ~6 h
QUALITY_DRIFT = 0.25  # stationary standard deviation of that drift (rating points)
RATING_NOISE = 0.7  # one diner's opinion around the dish's quality
BAD_BATCH_EVERY_S = 8 * 3600.0  # mean simulated time between two bad batches of one dish
BAD_BATCH_MINUTES = (25.0, 50.0)
BAD_BATCH_DROP = (1.5, 2.2)  # rating points lost while a bad batch is served
PAGEVIEWS_PEAK = 120.0  # page views per second at the evening peak
PAGEVIEWS_PERIOD_S = 1.0  # one page-view count per second (fewer when the budget is small)
SESSION_MEDIAN_S = 150.0
SESSION_SIGMA = 0.9
CHECKOUT_MEDIAN = 42.0
CHECKOUT_SIGMA = 0.6
FLASH_SALE_EVERY_S = 45 * 60.0  # mean simulated time between two flash sales
FLASH_SALE_MINUTES = (3.0, 10.0)
FLASH_SALE_BOOST = 5.0  # checkouts per minute during a sale, relative to normal
FLASH_SALE_MEDIAN = 35.0  # smaller baskets: discounted
# A visit to the shop (`shop.clicks`, tags user and step): a few product views, then fewer and
# fewer visitors go on to the cart, the checkout and payment (a funnel), the clicks seconds to
# minutes apart in simulated time, never 30 minutes (the demo rules' session gap).
CLICKS_PER_VISIT = 4.0  # about, on average: what the share of the budget is divided by
VIEW_MORE = 0.6  # after a view, the chance of another
TO_CART, TO_CHECKOUT, TO_PAID = 0.45, 0.55, 0.8
# On their lunch break (the restaurant's lunch rush) visitors browse and buy less: at its
# height a visit is this much less likely to view once more, to go on to the cart and from
# the cart to the checkout. Bounces go from about 22 % to 43 %, the cart from 45 % to 23 %.
LUNCH_VIEW_DROP, LUNCH_CART_DROP, LUNCH_CHECKOUT_DROP = 0.25, 0.5, 0.3
BACK_TO_VIEW = 0.15  # after the cart, the chance of one more view first (steps out of order)
CLICK_GAP_MEDIAN_S = 45.0
CLICK_GAP_MAX_S = 20 * 60.0


CLICKS_TOPIC = "shop.clicks"
"""Every click of every visit, tagged by user and funnel step: what the demo's session rule
makes visits of (`shop.visits`, a topic pushsvc produces, not the demo)."""
KITCHEN_TOPIC = "restaurant.kitchen"
"""Every station's latencies again, in one topic tagged by station: what a rule groups."""
REVIEWS_TOPIC = "restaurant.reviews"
"""Every dish's ratings again, in one topic tagged by dish."""


def topic_names(prefix: str = "") -> tuple[str, ...]:
    """Every topic the demo publishes: the one list that docs/demo.md's table must match."""
    return tuple(
        prefix + name
        for name in (
            *(f"restaurant.latency.{station}" for station in STATIONS),
            *(f"restaurant.rating.{dish}" for dish in DISHES),
            KITCHEN_TOPIC,
            REVIEWS_TOPIC,
            "shop.pageviews",
            "shop.session_seconds",
            "shop.checkout_value",
            CLICKS_TOPIC,
        )
    )


@dataclass(frozen=True)
class DemoEvent:
    offset: float  # machine seconds since the demo started
    topic: str
    value: float
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Incident:
    """Something worth watching for: a bad batch of a dish, a flash sale in the shop."""

    kind: str  # "bad batch" | "flash sale"
    topic: str  # the topic that shows it
    start: float  # machine offsets
    end: float
    note: str


Intensity = Callable[[float], float]  # offset → fraction of the stream's peak rate, in [0, 1]


class Scenario:
    """The restaurant and the shop on a simulated day; see the module docstring."""

    def __init__(self, clock: SimClock, rate: float, seed: int | None = None, prefix: str = ""):
        self.clock = clock
        self.rate = rate
        self.prefix = prefix
        self.incidents: list[Incident] = []  # appended as the streams reach them
        self._seeds = random.Random(seed)  # None: seeded from the system's entropy

    def events(self) -> Iterator[DemoEvent]:
        """Every event, in offset order, for ever."""
        streams = [
            *(self._latency(station, median) for station, median in STATIONS.items()),
            *(self._ratings(dish, quality, share) for dish, (quality, share) in DISHES.items()),
            self._pageviews(),
            self._sessions(),
            self._checkouts(),
            self._clicks(),
        ]
        return heapq.merge(*streams, key=lambda event: event.offset)

    # ------------------------------------------------------------------ helpers

    def _rng(self) -> random.Random:
        # One generator per stream, seeded in a fixed order: streams never share draws.
        return random.Random(self._seeds.getrandbits(128))

    def _arrivals(
        self, rng: random.Random, peak_rate: float, intensity: Intensity
    ) -> Iterator[float]:
        """Offsets of a Poisson process of rate `peak_rate * intensity(offset)`."""
        offset = 0.0
        while True:
            offset += rng.expovariate(peak_rate)
            if rng.random() < intensity(offset):
                yield offset

    def _hour(self, offset: float) -> float:
        return self.clock.hour(offset)

    def _topic(self, name: str) -> str:
        return self.prefix + name

    # ------------------------------------------------------------------ the restaurant

    def _latency(self, station: str, median_s: float) -> Iterator[DemoEvent]:
        """Seconds from order to pass at one station: lognormal, slower in the rushes."""
        rng = self._rng()
        topic = self._topic(f"restaurant.latency.{station}")
        kitchen = self._topic(KITCHEN_TOPIC)
        peak_rate = self.rate * LATENCY_SHARE / len(STATIONS)
        for offset in self._arrivals(rng, peak_rate, self._orders):
            hour = self._hour(offset)
            value = median_s * kitchen_load(hour) * math.exp(LATENCY_SIGMA * rng.gauss(0.0, 1.0))
            yield DemoEvent(offset, topic, round(value, 1), {"station": station})
            yield DemoEvent(offset, kitchen, round(value, 1), {"station": station})

    def _orders(self, offset: float) -> float:
        return orders(self._hour(offset)) / ORDERS_PEAK

    def _ratings(self, dish: str, mean: float, share: float) -> Iterator[DemoEvent]:
        """1-5 stars: the dish's quality drifts slowly (an Ornstein-Uhlenbeck process in
        simulated time) and drops while a bad batch is served."""
        rng = self._rng()
        topic = self._topic(f"restaurant.rating.{dish}")
        reviews = self._topic(REVIEWS_TOPIC)
        batches = self._bad_batches(rng, dish, topic)
        start, end, drop = next(batches)
        quality = mean
        last_s = self.clock.seconds(0.0)
        for offset in self._arrivals(rng, self.rate * RATING_SHARE * share, self._orders):
            now_s = self.clock.seconds(offset)
            keep = math.exp(-(now_s - last_s) / QUALITY_REVERSION_S)
            spread = QUALITY_DRIFT * math.sqrt(1.0 - keep * keep)
            quality = mean + (quality - mean) * keep + spread * rng.gauss(0.0, 1.0)
            last_s = now_s
            while offset >= end:
                start, end, drop = next(batches)
            served = quality - drop if offset >= start else quality
            stars = min(5, max(1, round(served + RATING_NOISE * rng.gauss(0.0, 1.0))))
            yield DemoEvent(offset, topic, float(stars), {"dish": dish})
            yield DemoEvent(offset, reviews, float(stars), {"dish": dish})

    def _bad_batches(
        self, rng: random.Random, dish: str, topic: str
    ) -> Iterator[tuple[float, float, float]]:
        """(start, end, drop) of each bad batch of `dish`, in machine offsets, recorded as
        incidents."""
        at_s = self.clock.seconds(0.0)
        while True:
            at_s += rng.expovariate(1.0 / BAD_BATCH_EVERY_S)
            length_s = 60.0 * rng.uniform(*BAD_BATCH_MINUTES)
            drop = rng.uniform(*BAD_BATCH_DROP)
            start, end = self.clock.offset(at_s), self.clock.offset(at_s + length_s)
            self.incidents.append(
                Incident("bad batch", topic, start, end, f"{dish} ratings drop by {drop:.1f}")
            )
            yield start, end, drop
            at_s += length_s

    # ------------------------------------------------------------------ the shop

    def _shop(self, offset: float) -> float:
        return shop_traffic(self._hour(offset)) / SHOP_PEAK

    def _pageviews(self) -> Iterator[DemoEvent]:
        """Page views per second, counted over each period (a Poisson count)."""
        rng = self._rng()
        topic = self._topic("shop.pageviews")
        period = max(PAGEVIEWS_PERIOD_S, 1.0 / (self.rate * PAGEVIEWS_SHARE))
        offset = 0.0
        while True:
            offset += period
            views = _poisson(rng, PAGEVIEWS_PEAK * self._shop(offset) * period)
            yield DemoEvent(offset, topic, round(views / period, 2))

    def _sessions(self) -> Iterator[DemoEvent]:
        """Length of each finished session (seconds): longer in the evening."""
        rng = self._rng()
        topic = self._topic("shop.session_seconds")
        for offset in self._arrivals(rng, self.rate * SESSION_SHARE, self._shop):
            evening = 1.0 + 0.4 * bump(self._hour(offset), 21.0, 2.0)
            value = SESSION_MEDIAN_S * evening * math.exp(SESSION_SIGMA * rng.gauss(0.0, 1.0))
            yield DemoEvent(offset, topic, float(round(value)))

    def _checkouts(self) -> Iterator[DemoEvent]:
        """Basket value of each checkout: bursts of smaller baskets during flash sales."""
        rng = self._rng()
        topic = self._topic("shop.checkout_value")
        sales = self._flash_sales(rng, topic)
        start, end = next(sales)

        def intensity(offset: float) -> float:
            nonlocal start, end
            while offset >= end:
                start, end = next(sales)
            boost = FLASH_SALE_BOOST if offset >= start else 1.0
            return self._shop(offset) * boost / FLASH_SALE_BOOST

        for offset in self._arrivals(rng, self.rate * CHECKOUT_SHARE, intensity):
            on_sale = offset >= start  # `intensity` moved the sale window up to this offset
            median = FLASH_SALE_MEDIAN if on_sale else CHECKOUT_MEDIAN
            value = median * math.exp(CHECKOUT_SIGMA * rng.gauss(0.0, 1.0))
            campaign = "flash-sale" if on_sale else "none"
            yield DemoEvent(offset, topic, round(value, 2), {"campaign": campaign})

    def _clicks(self) -> Iterator[DemoEvent]:
        """Each visit's clicks (value 1, tags user and step), the visits interleaved."""
        rng = self._rng()
        topic = self._topic(CLICKS_TOPIC)
        pending: list[tuple[float, int, DemoEvent]] = []  # later clicks of visits under way
        order = itertools.count()  # ties in time: the click made first goes first
        arrivals = self._arrivals(rng, self.rate * CLICKS_SHARE / CLICKS_PER_VISIT, self._shop)
        for visit, offset in enumerate(arrivals, start=1):
            while pending and pending[0][0] <= offset:
                yield heapq.heappop(pending)[2]
            user = f"visitor{visit}"
            at_s = self.clock.seconds(offset)
            for step in _visit_steps(rng, bump(self._hour(offset), *LUNCH)):
                at = self.clock.offset(at_s)
                event = DemoEvent(at, topic, 1.0, {"user": user, "step": step})
                heapq.heappush(pending, (at, next(order), event))
                gap = CLICK_GAP_MEDIAN_S * math.exp(0.8 * rng.gauss(0.0, 1.0))
                at_s += min(gap, CLICK_GAP_MAX_S)

    def _flash_sales(self, rng: random.Random, topic: str) -> Iterator[tuple[float, float]]:
        at_s = self.clock.seconds(0.0)
        while True:
            at_s += rng.expovariate(1.0 / FLASH_SALE_EVERY_S)
            length_s = 60.0 * rng.uniform(*FLASH_SALE_MINUTES)
            start, end = self.clock.offset(at_s), self.clock.offset(at_s + length_s)
            self.incidents.append(
                Incident("flash sale", topic, start, end, "checkouts burst, smaller baskets")
            )
            yield start, end
            at_s += length_s


def _visit_steps(rng: random.Random, lunch: float = 0.0) -> list[str]:
    """One visit's clicks, by funnel step: views, then maybe the cart (and sometimes a view
    more), the checkout, payment; `lunch` (0 to 1: the height of the lunch rush) makes a
    visit drop off sooner."""
    steps = ["view"]
    while rng.random() < VIEW_MORE * (1.0 - LUNCH_VIEW_DROP * lunch):
        steps.append("view")
    if rng.random() < TO_CART * (1.0 - LUNCH_CART_DROP * lunch):
        steps.append("cart")
        if rng.random() < BACK_TO_VIEW:
            steps.append("view")
        if rng.random() < TO_CHECKOUT * (1.0 - LUNCH_CHECKOUT_DROP * lunch):
            steps.append("checkout")
            if rng.random() < TO_PAID:
                steps.append("paid")
    return steps


def _poisson(rng: random.Random, mean: float) -> int:
    """A Poisson count: the arrivals of a unit-rate process within `mean` (exact, one draw per
    arrival: PAGEVIEWS_PEAK per page-view period at most). The standard library has no Poisson
    draw, and the demo needs nothing beyond it."""
    count = 0
    elapsed = rng.expovariate(1.0)
    while elapsed < mean:
        count += 1
        elapsed += rng.expovariate(1.0)
    return count
