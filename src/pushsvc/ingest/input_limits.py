"""Per-request limits on producer input (from `--max-body` and `--max-future`; a batch's
length is fixed, `MAX_BATCH`), and the topics producers may not post to (derived metrics and
session topics, which pushsvc itself produces)."""

from __future__ import annotations

from dataclasses import dataclass

MAX_BATCH = 10_000
"""Events per request (and topics per broadcast): past it, 413. Fixed, not a setting: a
request's bytes are what cost, bounded by `--max-body`, and a producer with more events sends
another batch."""


@dataclass(frozen=True, slots=True)
class InputLimits:
    """Per-request limits on producer input."""

    max_body_bytes: int = 1 << 20
    max_future_us: int = 300_000_000
    """How far ahead of the server's clock an event's `ts` may be (`future_event` past it)."""
    max_message_bytes: int = 64 * 1024
    """A message's data, as compact JSON (a sixteenth of `--max-body`; past it, 413)."""
    derived_topics: frozenset[str] = frozenset()
    """The topics of `[[derive]]` rules: only the deriver appends to them."""
    session_topics: frozenset[str] = frozenset()
    """The topics of `[[session]]` rules: only the sessionizer appends to them."""

    def __post_init__(self) -> None:
        if self.max_body_bytes < 1:
            raise ValueError("max_body_bytes must be at least 1")
        if self.max_future_us <= 0:
            raise ValueError("max_future_us must be longer than 0")
        if self.max_message_bytes < 4:
            raise ValueError("max_message_bytes must be at least 4 (the data null)")


DEFAULT_LIMITS = InputLimits()


DEFAULT_LIMITS = InputLimits()
