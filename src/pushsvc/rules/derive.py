"""Derived metrics: `[[derive]]` recording rules, parsed and checked once at start (pure).

```toml
[[derive]]
topic = "shop.conversion"
every = "10s"
value = "count[5m](shop.paid) / count[5m](shop.checkout)"
```

`value` is an expression over terms `stat[range](topic)` (stat: `count`, `sum`, `mean`,
`min`, `max`, `rate`; range a whole multiple of `every`), numbers, `+ - * /` and parentheses,
read by the small recursive-descent parser below (never `eval`: a rules file is data). The
grammar, loosest first:

    expression := product (("+" | "-") product)*
    product    := unary (("*" | "/") unary)*
    unary      := ("-" | "+") unary | atom
    atom       := number | stat "[" duration "]" "(" topic ")" | "(" expression ")"

What a derived value means at a boundary (the closed buckets of tier `every` in
`[t - range, t)`) and when it is computed is `pushsvc.aggregate.derive`'s; this module only
says which values are valid (a table's shape is `DeriveTable`, converted with the rest of the
file by `pushsvc.rules.file_shape`; its value and its sources' tiers are `parse_derives`'), and
`evaluate` is the one place an expression is computed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from msgspec import Struct

from pushsvc.core.durations import duration_label, parse_duration_us
from pushsvc.core.topics import TOPIC_PATTERN
from pushsvc.rules.fields import Duration, TopicName, wrong
from pushsvc.rules.tiers import SeriesTier

__all__ = [
    "DERIVE_STATS",
    "Binary",
    "DeriveError",
    "DeriveRule",
    "DeriveTable",
    "Expression",
    "Negate",
    "Number",
    "Term",
    "evaluate",
    "parse_derives",
    "parse_expression",
]

DERIVE_STATS = ("count", "sum", "mean", "min", "max", "rate")
"""What a term may ask of a source's closed buckets: what merges exactly across buckets."""

_TOPIC = re.compile(TOPIC_PATTERN)
_NUMBER = re.compile(r"(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MAX_LENGTH = 4096
"""A longer `value` is refused: the parser recurses once per parenthesis."""


@dataclass(frozen=True, slots=True)
class Number:
    value: float


@dataclass(frozen=True, slots=True)
class Term:
    """`stat[range](topic)`: one statistic of a source over its closed buckets in
    `[t - range, t)`."""

    stat: str
    range_us: int
    topic: str

    @property
    def text(self) -> str:
        return f"{self.stat}[{duration_label(self.range_us)}]({self.topic})"


@dataclass(frozen=True, slots=True)
class Negate:
    operand: Expression


@dataclass(frozen=True, slots=True)
class Binary:
    operator: str
    """One of `+ - * /`."""
    left: Expression
    right: Expression


Expression = Number | Term | Negate | Binary


class DeriveError(ValueError):
    """A `[[derive]]` table is not valid: `field` and `problem` say why."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


def parse_expression(text: str) -> Expression:
    """The expression `text` reads as; ValueError names what is wrong and where."""
    if len(text) > _MAX_LENGTH:
        raise ValueError(f"longer than {_MAX_LENGTH} characters")
    parser = _Parser(text)
    expression = parser.expression()
    parser.skip_space()
    if parser.at < len(text):
        raise parser.unexpected("an operator or the end")
    return expression


def evaluate(expression: Expression, terms: Mapping[Term, float | None]) -> float | None:
    """The expression's value given each term's, or None where it is undefined: a term that
    is (the mean, min or max of no events), a division by zero, or a result that is not a
    finite number."""
    value = _evaluate(expression, terms)
    return value if value is not None and math.isfinite(value) else None


def _evaluate(expression: Expression, terms: Mapping[Term, float | None]) -> float | None:
    if isinstance(expression, Number):
        return expression.value
    if isinstance(expression, Term):
        return terms[expression]
    if isinstance(expression, Negate):
        operand = _evaluate(expression.operand, terms)
        return None if operand is None else -operand
    left = _evaluate(expression.left, terms)
    right = _evaluate(expression.right, terms)
    if left is None or right is None:
        return None
    operator = expression.operator
    if operator == "+":
        return left + right
    if operator == "-":
        return left - right
    if operator == "*":
        return left * right
    if right == 0:
        return None
    return left / right


def terms_of(expression: Expression) -> tuple[Term, ...]:
    """Every distinct term, in the order written."""
    found: dict[Term, None] = {}
    stack = [expression]
    while stack:
        node = stack.pop()
        if isinstance(node, Term):
            found[node] = None
        elif isinstance(node, Negate):
            stack.append(node.operand)
        elif isinstance(node, Binary):
            stack += [node.right, node.left]
    return tuple(found)


class _Parser:
    """Recursive descent over `text`; `at` is the next character to read."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.at = 0

    def skip_space(self) -> None:
        while self.at < len(self.text) and self.text[self.at].isspace():
            self.at += 1

    def peek(self) -> str:
        self.skip_space()
        return self.text[self.at] if self.at < len(self.text) else ""

    def unexpected(self, wanted: str) -> ValueError:
        self.skip_space()
        if self.at >= len(self.text):
            return ValueError(f"ends where {wanted} was expected")
        found = self.text[self.at : self.at + 12]
        return ValueError(f"expected {wanted} at character {self.at + 1}, found {found!r}")

    def expect(self, char: str) -> None:
        if self.peek() != char:
            raise self.unexpected(repr(char))
        self.at += 1

    def expression(self) -> Expression:
        node = self.product()
        while (operator := self.peek()) and operator in "+-":
            self.at += 1
            node = Binary(operator, node, self.product())
        return node

    def product(self) -> Expression:
        node = self.unary()
        while (operator := self.peek()) and operator in "*/":
            self.at += 1
            node = Binary(operator, node, self.unary())
        return node

    def unary(self) -> Expression:
        sign = self.peek()
        if sign and sign in "+-":
            self.at += 1
            operand = self.unary()
            return Negate(operand) if sign == "-" else operand
        return self.atom()

    def atom(self) -> Expression:
        char = self.peek()
        if char == "(":
            self.at += 1
            node = self.expression()
            self.expect(")")
            return node
        if match := _NUMBER.match(self.text, self.at):
            value = float(match.group())
            if not math.isfinite(value):
                raise ValueError(f"{match.group()!r} is not a finite number")
            self.at = match.end()
            return Number(value)
        if match := _NAME.match(self.text, self.at):
            return self.term(match)
        raise self.unexpected("a number, a term like count[5m](topic) or '('")

    def term(self, name: re.Match[str]) -> Term:
        stat = name.group()
        if stat not in DERIVE_STATS:
            raise ValueError(f"unknown statistic {stat!r}; a term takes {', '.join(DERIVE_STATS)}")
        self.at = name.end()
        self.expect("[")
        close = self.text.find("]", self.at)
        if close < 0:
            raise ValueError(f"{stat}[ has no closing ']'")
        written = self.text[self.at : close].strip()
        try:
            range_us = parse_duration_us(written)
        except ValueError as exc:
            raise ValueError(f"{stat}[{written}]: {exc}") from None
        if range_us <= 0:
            raise ValueError(f"{stat}[{written}]: a range must be longer than 0")
        self.at = close + 1
        self.expect("(")
        close = self.text.find(")", self.at)
        if close < 0:
            raise ValueError(f"{stat}[{written}]( has no closing ')'")
        topic = self.text[self.at : close].strip()
        if _TOPIC.fullmatch(topic) is None:
            raise ValueError(
                f"{stat}[{written}]({topic}): {topic!r} is not a topic name (a term names one "
                "topic, not a pattern)"
            )
        self.at = close + 1
        return Term(stat, range_us, topic)


@dataclass(frozen=True, slots=True)
class DeriveRule:
    """One `[[derive]]` table, valid. `number` is its place among the file's derive tables
    (1 for the first); `tiers` the tier of resolution `every` each source keeps."""

    number: int
    topic: str
    every_us: int
    value: str
    """As written."""
    expression: Expression
    terms: tuple[Term, ...]
    tiers: tuple[tuple[str, SeriesTier], ...]

    @property
    def sources(self) -> tuple[str, ...]:
        """The topics its terms name, each once, in the order written."""
        return tuple(dict.fromkeys(term.topic for term in self.terms))

    @property
    def every_label(self) -> str:
        return duration_label(self.every_us)

    @property
    def widest_us(self) -> int:
        return max(term.range_us for term in self.terms)

    def describe(self) -> dict[str, Any]:
        """The rule as `GET /rules` answers it (and as the rules digest covers)."""
        return {
            "derive": self.number,
            "topic": self.topic,
            "every": self.every_label,
            "value": self.value,
            "sources": list(self.sources),
        }


class DeriveTable(Struct, forbid_unknown_fields=True):
    """A `[[derive]]` table as written; `value` is read by `parse_derives`."""

    topic: TopicName
    every: Duration
    value: Annotated[str, wrong("an expression in a string, got {value!r}")]


def parse_derives(
    tables: Sequence[DeriveTable], tiers_of: Callable[[str], Sequence[SeriesTier]]
) -> tuple[DeriveRule, ...]:
    """The `[[derive]]` tables of a rules file, checked against the tiers each source keeps
    (`tiers_of(topic)`). ValueError, one line naming the derive table and the problem."""
    rules = []
    for number, table in enumerate(tables, start=1):
        try:
            rules.append(_derive(number, table, tiers_of))
        except DeriveError as exc:
            raise ValueError(f"derive {number} ({table.topic}): {exc}") from None
    topics: dict[str, DeriveRule] = {}
    for rule in rules:
        if rule.topic in topics:
            raise ValueError(
                f"derive {rule.number} ({rule.topic}): topic: derived already by derive "
                f"{topics[rule.topic].number}"
            )
        topics[rule.topic] = rule
    for rule in rules:
        cycle = _cycle(rule, topics)
        if cycle:
            raise ValueError(
                f"derive {rule.number} ({rule.topic}): value: {rule.topic} is a source of "
                f"itself ({' <- '.join(cycle)}); a derived topic cannot feed its own value"
            )
    return tuple(rules)


def _derive(
    number: int, table: DeriveTable, tiers_of: Callable[[str], Sequence[SeriesTier]]
) -> DeriveRule:
    every = table.every.us
    expression, terms = _value(table.value, every)
    tiers = tuple((source, _tier(source, every, terms, tiers_of)) for source in _sources(terms))
    return DeriveRule(number, table.topic, every, table.value, expression, terms, tiers)


def _value(given: str, every: int) -> tuple[Expression, tuple[Term, ...]]:
    """The value's expression and its terms, each over a whole number of `every`."""
    try:
        expression = parse_expression(given)
    except ValueError as exc:
        raise DeriveError("value", str(exc)) from None
    terms = terms_of(expression)
    if not terms:
        raise DeriveError("value", "names no source topic (a term like count[5m](topic))")
    for term in terms:
        if term.range_us % every:
            raise DeriveError(
                "value",
                f"{term.text}: the range is not a whole multiple of every "
                f"({duration_label(every)})",
            )
    return expression, terms


def _sources(terms: Sequence[Term]) -> list[str]:
    return list(dict.fromkeys(term.topic for term in terms))


def _tier(
    source: str,
    every: int,
    terms: Sequence[Term],
    tiers_of: Callable[[str], Sequence[SeriesTier]],
) -> SeriesTier:
    """The series tier of `source` the rule reads: at `every`, keeping twice its widest
    range."""
    kept = {tier.resolution_us: tier for tier in tiers_of(source)}
    tier = kept.get(every)
    if tier is None:
        labels = ", ".join(t.label for t in kept.values()) or "none"
        raise DeriveError(
            "every",
            f"{duration_label(every)} is not a series tier of source {source} (its tiers: "
            f"{labels}); every must be a resolution every source keeps",
        )
    widest = max(term.range_us for term in terms if term.topic == source)
    if 2 * widest > tier.retention_us:
        # The other half is the deriver's room: the allowed lateness, and catching up
        # after a failover, with every bucket of a range still kept.
        raise DeriveError(
            "value",
            f"{duration_label(widest)} of {source} is more than half of what its "
            f"{tier.label} tier keeps",
        )
    return tier


def _cycle(rule: DeriveRule, derived: Mapping[str, DeriveRule]) -> list[str]:
    """A chain of derived topics from `rule.topic` back to itself through its sources, or []
    when there is none (depth first)."""
    path = [rule.topic]
    seen: set[str] = set()

    def visit(topic: str) -> bool:
        for source in derived[topic].sources:
            if source == rule.topic:
                path.append(source)
                return True
            if source in derived and source not in seen:
                seen.add(source)
                path.append(source)
                if visit(source):
                    return True
                path.pop()
        return False

    return path if visit(rule.topic) else []
