"""`GET /rules` as one caller may see it: the rules file names topics, alerts, conditions and
annotations, so with auth on a caller is shown only what concerns topics it may read
(docs/security.md, "Private topics stay private everywhere").

* A `[[rule]]` or `[[alert]]` is shown when one of its selectors selects some topic the caller
  may read (`Scope.reaches`: `secret.*` reaches a scope holding `secret.report`, not one of
  `public.*`), with only those selectors. The others select no topic the caller may read, so
  for every topic it may read the first matching rule is still the one the server uses.
* A `[[derive]]` is shown when the caller may read its topic and every source: its `value`
  names the sources.
* A `[[session]]` likewise: when the caller may read its topic and every topic each of its
  `from` selectors selects (a pattern within one of the caller's own).
* The default rule and the digest are always shown: they name no topic.

`visible_names` is the same narrowing for names a caller may be told or may use: the windows,
statistics (`distinct_<tag>` and `top_<tag>` name tags), series tiers and group tags of the
rules shown. A stream's `?windows=`/`?stats=`/`?series=` are judged against them, and
/openapi.json and the 400s list them, so a private rule's tags show neither in a listing nor
as a difference between "unknown" and "accepted" (docs/security.md).
"""

from __future__ import annotations

import functools
from typing import Any

from pushsvc.rules.analytics import Rules
from pushsvc.security.scopes import Scope


def visible_rules(rules: Rules, scope: Scope | None) -> dict[str, Any]:
    """`rules.describe()` narrowed to `scope` (None: auth off, everything)."""
    if scope is None or scope.everything:
        return rules.describe()
    described: dict[str, Any] = {
        "digest": rules.digest,
        "rules": [
            _narrowed(rule.describe(), reached)
            for rule in rules.rules
            if (reached := _reached(rule.selectors, scope))
        ],
        "default": rules.default.describe(),
    }
    alerts = [
        _narrowed(alert.describe(), reached)
        for alert in rules.alerts
        if (reached := _reached(alert.selectors, scope))
    ]
    if alerts:
        described["alerts"] = alerts
    derives = [
        rule.describe()
        for rule in rules.derives
        if all(scope.allows(topic) for topic in (rule.topic, *rule.sources))
    ]
    if derives:
        described["derive"] = derives
    sessions = [
        rule.describe()
        for rule in rules.sessions
        if scope.allows(rule.topic) and all(_covers(scope, source) for source in rule.sources)
    ]
    if sessions:
        described["session"] = sessions
    return described


def visible_names(rules: Rules, scope: Scope | None) -> Rules:
    """The rules whose names a caller with `scope` may be told: those `visible_rules` shows it
    (`rules` itself with auth off or a `*` scope) and the default; a session topic's own
    statistics when it may read one."""
    if scope is None or scope.everything:
        return rules
    return _visible_names(rules, scope.selectors)


# Keyed by the scope's selectors: a scope is rebuilt per request, its selectors are not, and
# every stream opened asks.
@functools.lru_cache(maxsize=256)
def _visible_names(rules: Rules, selectors: tuple[str, ...]) -> Rules:
    scope = Scope.of(selectors)
    return Rules(
        [rule for rule in rules.rules if _reached(rule.selectors, scope)],
        rules.default,
        sessions=[rule for rule in rules.sessions if scope.allows(rule.topic)],
    )


def _covers(scope: Scope, selector: str) -> bool:
    """Whether every topic `selector` (a name, `prefix.*` or `*`) selects is one `scope`
    allows."""
    if not selector.endswith("*"):
        return scope.allows(selector)
    stem = selector[:-1]  # "prefix." or "" for "*"
    return any(
        own == "*" or (own.endswith("*") and stem.startswith(own[:-1])) for own in scope.selectors
    )


def _reached(selectors: tuple[str, ...], scope: Scope) -> list[str]:
    return [selector for selector in selectors if scope.reaches(selector)]


def _narrowed(described: dict[str, Any], selectors: list[str]) -> dict[str, Any]:
    return {**described, "topics": selectors}
