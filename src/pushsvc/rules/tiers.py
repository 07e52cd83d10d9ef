"""Series tiers: `resolution:retention` pairs, as `PUSHSVC_SERIES` and a rule's `series` give
them, checked once (pure).

Tiers are Netdata's: each resolution a whole multiple of the next finer one's, so a coarser
tier's bucket is exactly a run of finer buckets and is built by merging them as they close
(`pushsvc.series.buckets`): only the finest tier costs anything per event.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pushsvc.core.durations import duration_label, parse_duration_us

__all__ = ["DEFAULT_SERIES", "MAX_TIERS", "SeriesTier", "check_tiers", "parse_tiers"]

DEFAULT_SERIES = "1s:15m,1m:24h"
MAX_TIERS = 6
MIN_RESOLUTION_US = 1_000_000
"""Buckets are named by their start in whole milliseconds (a Redis stream id); a second is
the finest resolution that keeps a point per bucket affordable at any rate."""


@dataclass(frozen=True, slots=True)
class SeriesTier:
    """One tier of long-range series: closed buckets of `resolution_us`, kept `retention_us`."""

    resolution_us: int
    retention_us: int

    @property
    def label(self) -> str:
        """`1m:24h`"""
        return f"{duration_label(self.resolution_us)}:{duration_label(self.retention_us)}"

    @property
    def resolution_label(self) -> str:
        """`1m`: how streams (`?series=`) and `/series` name the tier."""
        return duration_label(self.resolution_us)


def parse_tiers(text: str) -> tuple[SeriesTier, ...]:
    """`1s:15m,1m:24h` (`none`: no tiers); ValueError with one line saying what is wrong."""
    text = text.strip()
    if text == "none":
        return ()
    items = [item.strip() for item in text.split(",")]
    if not text or not all(items):
        raise ValueError('series are resolution:retention pairs, e.g. "1s:15m,1m:24h", or none')
    return check_tiers([parse_tier(item) for item in items])


def parse_tier(item: str) -> SeriesTier:
    resolution, colon, retention = item.partition(":")
    if not colon:
        raise ValueError(f'{item!r} is not resolution:retention, e.g. "1m:24h"')
    try:
        return SeriesTier(parse_duration_us(resolution), parse_duration_us(retention))
    except ValueError as exc:
        raise ValueError(f"{item!r}: {exc}") from None


def check_tiers(tiers: Sequence[SeriesTier]) -> tuple[SeriesTier, ...]:
    """The tiers finest first; ValueError unless each resolution is at least 1 s and a whole
    multiple of the next finer one, each keeps at least one bucket, and there are at most
    `MAX_TIERS` of them."""
    if len(tiers) > MAX_TIERS:
        raise ValueError(f"at most {MAX_TIERS} series tiers, got {len(tiers)}")
    ordered = sorted(tiers, key=lambda tier: tier.resolution_us)
    for tier in ordered:
        if tier.resolution_us < MIN_RESOLUTION_US or tier.resolution_us % MIN_RESOLUTION_US:
            raise ValueError(f"{tier.label}: a resolution is a whole number of seconds, >= 1s")
        if tier.retention_us < tier.resolution_us:
            raise ValueError(f"{tier.label} keeps less than one bucket")
    for finer, coarser in itertools.pairwise(ordered):
        if coarser.resolution_us == finer.resolution_us:
            raise ValueError(f"resolution {finer.resolution_label} is given twice")
        if coarser.resolution_us % finer.resolution_us:
            raise ValueError(
                f"{coarser.label}: each resolution must be a whole multiple of the next finer "
                f"one ({finer.resolution_label})"
            )
    return tuple(ordered)


def field_table(given: object, field: str, example: str, keys: Sequence[str]) -> Mapping[str, Any]:
    """A rule's inline table field (`anomaly`, `forecast`) that takes only `keys`; ValueError
    saying what is wrong, with `example` written as the rules file writes it."""
    if not isinstance(given, Mapping):
        raise ValueError(f"write it as {example}, got {type(given).__name__} {given!r}"[:160])
    for key in given:
        if key not in keys:
            raise ValueError(f"unknown key {key!r}; {field} has {', '.join(keys)}")
    return given


def kept_tier(key: str, given: Mapping[str, Any], tiers: Sequence[SeriesTier], doing: str) -> int:
    """The resolution (µs) `given[key]` names, which must be one of the rule's `tiers`."""
    if key not in given:
        raise ValueError(f'{key} is missing: name the series tier to {doing}, e.g. {key} = "1m"')
    return check_kept(key, positive_duration(key, given[key]), tiers)


def check_kept(key: str, resolution_us: int, tiers: Sequence[SeriesTier]) -> int:
    """`resolution_us`, which `key` names, if it is one of the rule's `tiers`."""
    kept = [tier.resolution_us for tier in tiers]
    if resolution_us not in kept:
        labels = ", ".join(duration_label(r) for r in kept) or "none"
        raise ValueError(
            f"{key} = {duration_label(resolution_us)!r} is not a tier the rule's series keep "
            f"(they keep {labels})"
        )
    return resolution_us


def positive_duration(key: str, given: object) -> int:
    """A rule field's duration, as the rules file writes it ("1m"), longer than 0."""
    if not isinstance(given, str):
        raise ValueError(f'{key} is a duration like "1m", got {type(given).__name__} {given!r}')
    try:
        width = parse_duration_us(given)
    except ValueError as exc:
        raise ValueError(f"{key}: {exc}") from None
    if width <= 0:
        raise ValueError(f"{key}: {given!r} must be longer than 0")
    return width
