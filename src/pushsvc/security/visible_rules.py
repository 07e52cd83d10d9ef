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
"""

from __future__ import annotations

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
