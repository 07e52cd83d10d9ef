"""`GET /rules`' answer, defined once: `RulesView`, with a view of each kind of rule it lists.

The rules describe themselves (`describe()` of each rule class under `pushsvc.rules`, which
the rules' digest covers too, so their output never changes for this module's sake).
`/openapi.json`'s `RulesView` and the schemas it holds are generated from these classes, and
tests/integration/test_answer_shapes.py decodes what the server answers strictly into them,
over a rules file with every kind of rule, so the two cannot drift apart.
"""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import UNSET, Meta, Struct, UnsetType

Label = Annotated[str, Meta(description="a duration as the rules file writes it: 10s, 1m, 1h")]


class WindowView(Struct, frozen=True, omit_defaults=True):
    """one window of a rule: a time window (`seconds`) or the last `events` events"""

    label: str
    kind: Literal["time", "count"]
    seconds: float | UnsetType = UNSET
    events: int | UnsetType = UNSET
    percentiles: Literal["exact", "sketch"] | UnsetType = UNSET
    relative_error: float | UnsetType = UNSET
    edge_seconds: (
        Annotated[float, Meta(description="a sketch window's edge is rounded to this")] | UnsetType
    ) = UNSET


class DistinctView(Struct, frozen=True):
    """a tag whose different values each window counts"""

    tag: str
    stat: str
    exact_in: Annotated[
        list[str], Meta(description="windows that count exactly at any number of values")
    ]
    exact_up_to: Annotated[int, Meta(description="different values counted exactly elsewhere")]
    relative_error: float


class TopView(Struct, frozen=True):
    """a tag whose k most frequent values each window keeps"""

    tag: str
    k: int
    stat: str
    exact_in: list[str]
    exact_up_to: int


class AnomalyView(Struct, frozen=True):
    """how a rule scores its series' buckets"""

    every: str
    stat: str
    learn: Label
    learn_points: int
    threshold: float


class ForecastView(Struct, frozen=True, omit_defaults=True):
    """how a rule forecasts a statistic of a series tier: a line over `range`, or Holt-Winters
    over a `season`"""

    stat: str
    tier: str
    model: Literal["linear", "holt_winters"]
    horizon: Label
    horizon_points: int
    range: Label | UnsetType = UNSET
    range_points: int | UnsetType = UNSET
    season: Label | UnsetType = UNSET
    season_points: int | UnsetType = UNSET
    fit: bool | UnsetType = UNSET
    alpha: float | UnsetType = UNSET
    beta: float | UnsetType = UNSET
    gamma: float | UnsetType = UNSET
    phi: float | UnsetType = UNSET


class RuleView(Struct, frozen=True, omit_defaults=True):
    """what the topics a rule matches keep: windows, statistics, groups, series, distinct
    and top tags, anomaly scores, forecasts, and their late events' grace"""

    rule: Annotated[int, Meta(description="place in the file; 0: the default")]
    topics: list[str]
    windows: list[WindowView]
    stats: list[str]
    group_by: list[str]
    max_groups: int | UnsetType = UNSET
    series: list[str] | UnsetType = UNSET
    distinct: list[DistinctView] | UnsetType = UNSET
    top: list[TopView] | UnsetType = UNSET
    anomaly: AnomalyView | UnsetType = UNSET
    forecast: ForecastView | UnsetType = UNSET
    grace_seconds: float | UnsetType = UNSET
    late: Literal["refuse"] | UnsetType = UNSET


class AlertView(Struct, frozen=True, omit_defaults=True):
    """an `[[alert]]`: when it fires on the topics it matches, and what it says"""

    name: str
    topics: list[str]
    when: str
    for_seconds: float
    keep_firing_for_seconds: float
    labels: dict[str, str]
    annotations: dict[str, str]
    clear: str | UnsetType = UNSET


class DeriveView(Struct, frozen=True):
    """a `[[derive]]`: a topic computed from other topics' series"""

    derive: Annotated[int, Meta(description="place in the file")]
    topic: str
    every: Annotated[str, Meta(description="a series resolution")]
    value: Annotated[str, Meta(description="the expression, as written")]
    sources: list[str]


class FunnelView(Struct, frozen=True):
    """a session rule's funnel: the steps, by the tag's values, within a duration"""

    tag: str
    steps: list[str]
    within: Label


class SessionView(Struct, frozen=True, omit_defaults=True, rename={"sources": "from"}):
    """a `[[session]]`: the sessions a topic is made of, from its source topics' events"""

    session: Annotated[int, Meta(description="place in the file")]
    topic: str
    sources: list[str]
    key: str
    gap: Label
    max_open: int
    keep_key: bool
    max_duration: Label | UnsetType = UNSET
    funnel: FunnelView | UnsetType = UNSET


class RulesView(Struct, frozen=True, omit_defaults=True, rename={"derives": "derive"}):
    """the effective rules (of the topics the caller may read): what each topic keeps"""

    digest: Annotated[str, Meta(description="equal where statistics are equal")]
    rules: list[RuleView]
    default: RuleView
    alerts: list[AlertView] | UnsetType = UNSET
    derives: (
        Annotated[
            list[DeriveView],
            Meta(description="the derived metrics (`[[derive]]`), when the file has any"),
        ]
        | UnsetType
    ) = UNSET
    session: list[SessionView] | UnsetType = UNSET
