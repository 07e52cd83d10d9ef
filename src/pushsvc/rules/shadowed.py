"""Rules that can never apply: a topic takes the FIRST rule whose `topics` match it, so a rule
every one of whose selectors an earlier rule already matches (`a.b` after `a.*`, anything
after `*`) is never taken. The file is valid — the order may be a slip or a leftover — so it
is said at start, one line per such rule naming the rules that take its topics first, rather
than refused; nothing else tells the user why `a.b` keeps the other rule's windows (pure).

A selector is an exact name, a prefix pattern (`a.*`: the names under `a.`) or `*`. One
earlier selector covers it when it matches every topic it can: `*` covers all; a pattern
`p.*` covers a name under `p.` and a pattern under `p.` (`p.q.*`); a name covers itself.
"""

from __future__ import annotations

from collections.abc import Sequence

from pushsvc.core.topics import ALL

_PATTERN = ".*"


def _covers(earlier: str, selector: str) -> bool:
    """Whether every topic `selector` matches is matched by `earlier`."""
    if earlier == ALL:
        return True
    if selector == ALL:
        return False
    if earlier.endswith(_PATTERN):
        prefix = earlier[:-1]  # "a.*" -> "a."
        # A pattern `q.*` matches what starts with `q.`: inside `p.*` when `q.` starts with `p.`.
        named = selector[:-1] if selector.endswith(_PATTERN) else selector
        return named.startswith(prefix)
    return earlier == selector


def shadowed(rules: Sequence[tuple[int, Sequence[str]]]) -> list[tuple[int, list[int]]]:
    """`rules`: each rule's number and selectors, in file order. The rules that can never
    apply, each with the numbers of the earlier rules that take its topics first."""
    found = []
    for at, (number, selectors) in enumerate(rules):
        takers: list[int] = []
        for selector in selectors:
            taker = next(
                (n for n, before in rules[:at] if any(_covers(e, selector) for e in before)),
                None,
            )
            if taker is None:
                break
            if taker not in takers:
                takers.append(taker)
        else:
            found.append((number, takers))
    return found


def describe_shadowed(rules: Sequence[tuple[int, Sequence[str]]], source: str) -> list[str]:
    """One line per rule that can never apply, naming it and the rules that take its topics
    first."""
    named = {number: f"rule {number} ({', '.join(selectors)})" for number, selectors in rules}
    return [
        f"rules file {source}: {named[number]} never applies: its topics take "
        f"{' and '.join(named[t] for t in takers)} first (a topic takes the first rule that "
        "matches it; move it above)"
        for number, takers in shadowed(rules)
    ]
