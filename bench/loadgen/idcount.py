"""Counting pushsvc updates in an event stream at C speed, and judging them afterwards (pure).

pushsvc writes every update as `id: <epoch>:<ms>-<seq>\\nevent: stats\\ndata: <one line>\\n\\n`,
ids strictly increasing in emission order; a messages stream (`messages=True`) writes each
message under its update's id as `event: message` with the published data, whose `value` the
benchmark's producer puts first. `IdCounter.feed` finds those frames with one
regex over each whole read (no per-message Python work) and keeps their `<ms>-<seq>`
parts as text; `IdCounter.ids()` turns them into an (n, 2) int64 array in arrival order.
With `values=True` it also reads each update's `event.value` (slower: one subscriber of a
run does it, as the reference that ties ids to published events).

`judge_ids` and `judge_values` then count, for a stream that should carry `expected`
updates each exactly once and in id order:

* duplicates — a frame whose id (or event value) was already seen on this stream;
* out_of_order — a first sighting whose id is below the highest id seen before it;
* missing — `expected` minus the distinct ids (or values) seen;
* unexpected — distinct ids beyond `expected`; values that are not an integer in
  0..expected-1; update frames that carry no event value (a window tick).

Frames are split only at message ends (`\\n\\n`, which one-line JSON data cannot contain),
so a frame cut across two reads is counted once, when its end arrives.
"""

from __future__ import annotations

import re

import numpy as np
import numpy.typing as npt

from bench.loadgen.tally import Verdict

UPDATE_ID = re.compile(rb"id: [0-9a-f]{1,16}:([0-9]{1,18}-[0-9]{1,18})\nevent: stats\n")
"""An update frame's head; the group is `<ms>-<seq>` (18 digits at most, so each fits an
int64; a larger one is not counted, hence reported missing). Not anchored with `^`: that would
cost Python's regex engine its literal-prefix search (5x slower); `id: ` followed by a line
`event: stats` occurs nowhere else in a pushsvc stream (data is one line of JSON)."""

UPDATE_VALUE = re.compile(
    rb'id: [0-9a-f]{1,16}:[0-9]{1,18}-[0-9]{1,18}\nevent: stats\ndata: \{"id":"[^"]*",'
    rb'"topic":"(?:[^"\\]|\\.)*","ts":[^,]*,"reason":"[a-z]*","event":\{"value":([^,}]*)'
)
"""The same frame up to its event's value (what the producer sent, as orjson prints it)."""

MESSAGE_ID = re.compile(rb"id: [0-9a-f]{1,16}:([0-9]{1,18}-[0-9]{1,18})\nevent: message\n")
MESSAGE_VALUE = re.compile(
    rb'id: [0-9a-f]{1,16}:[0-9]{1,18}-[0-9]{1,18}\nevent: message\ndata: \{"value":([^,}]*)'
)
"""A messages stream's frames: the message's head, and its data up to the published value."""

_CONVERT_AT = 64 * 1024  # bytes of pending id text converted to integers at once


class IdCounter:
    """One stream's update frames. `count` is exact after every `feed`."""

    __slots__ = ("_blocks", "_frame", "_partial", "_pending", "_pending_bytes", "_valued_frame",
                 "_values", "count", "valued")  # fmt: skip

    def __init__(self, *, values: bool = False, messages: bool = False) -> None:
        self._frame, self._valued_frame = (
            (MESSAGE_ID, MESSAGE_VALUE) if messages else (UPDATE_ID, UPDATE_VALUE)
        )
        self.count = 0
        """Update frames seen so far."""
        self.valued = 0
        """Of those, frames whose event value was read (values=True only)."""
        self._partial = b""  # the start of a message whose end has not arrived
        self._pending: list[bytes] = []  # `<ms>-<seq>` texts, joined per read
        self._pending_bytes = 0
        self._blocks: list[npt.NDArray[np.int64]] = []
        self._values: list[bytes] | None = [] if values else None

    def feed(self, data: bytes) -> int:
        """Count the update frames that `data` completes; returns how many."""
        # Where the first message ends: in `data`, or straddling the partial one and `data`.
        if self._partial[-1:] == b"\n" and data[:1] == b"\n":
            first = 1
        else:
            first = data.find(b"\n\n") + 2
            if first == 1:  # no message ends in `data`
                self._partial += data
                return 0
        end = max(first, data.rfind(b"\n\n") + 2)
        found = 0
        start = 0
        if self._partial:
            found += self._scan(self._partial + data[:first], 0, len(self._partial) + first)
            start = first
        found += self._scan(data, start, end)
        self._partial = data[end:]
        return found

    def _scan(self, data: bytes, start: int, end: int) -> int:
        ids = self._frame.findall(data, start, end)
        if ids:
            text = b" ".join(ids)
            self._pending.append(text)
            self._pending_bytes += len(text)
            if self._pending_bytes >= _CONVERT_AT:
                self._convert()
            if self._values is not None:
                values = self._valued_frame.findall(data, start, end)
                self.valued += len(values)
                self._values.extend(values)
        self.count += len(ids)
        return len(ids)

    def _convert(self) -> None:
        text = b" ".join(self._pending).replace(b"-", b" ")
        numbers = np.fromstring(text, dtype=np.int64, sep=" ")  # 5x np.array(text.split())
        if len(numbers) != text.count(b" ") + 1:
            raise ValueError("an id did not parse as two int64")
        self._blocks.append(numbers)
        self._pending.clear()
        self._pending_bytes = 0

    def ids(self) -> npt.NDArray[np.int64]:
        """Every update id seen, in arrival order, as rows (ms, seq)."""
        if self._pending:
            self._convert()
        if not self._blocks:
            return np.zeros((0, 2), dtype=np.int64)
        return np.concatenate(self._blocks).reshape(-1, 2)

    def values(self) -> list[bytes]:
        """The event values read, as sent on the wire (values=True only)."""
        if self._values is None:
            raise ValueError("this counter does not read values")
        return list(self._values)


def id_keys(ids: npt.NDArray[np.int64], base: int | None = None) -> npt.NDArray[np.int64]:
    """One int64 per id row (ms, seq), ordered as the ids are; `base` (default: the smallest
    ms) must be the same for keys that are compared across streams."""
    if not len(ids):
        return np.zeros(0, dtype=np.int64)
    ms, seq = ids[:, 0], ids[:, 1]
    base = int(ms.min()) if base is None else base
    if int(ms.min()) < base or int(ms.max()) - base >= 1 << 30 or int(seq.max()) >= 1 << 32:
        raise ValueError("ids span more than 12 days or a sequence beyond 2**32")
    return ((ms - base) << 32) | seq


def _first_sightings(keys: npt.NDArray[np.int64]) -> tuple[int, int]:
    """(distinct keys, first sightings below the highest key seen before them)."""
    if not len(keys):
        return 0, 0
    _, first_index = np.unique(keys, return_index=True)
    first = np.zeros(len(keys), dtype=bool)
    first[first_index] = True
    highest_before = np.empty_like(keys)
    highest_before[0] = np.iinfo(np.int64).min
    np.maximum.accumulate(keys[:-1], out=highest_before[1:])
    return len(first_index), int(np.count_nonzero(first & (keys < highest_before)))


def judge_ids(ids: npt.NDArray[np.int64], expected: int) -> Verdict:
    """Counts for a stream whose ids (rows (ms, seq), arrival order) should be `expected`
    distinct, strictly increasing ids."""
    keys = id_keys(ids)
    distinct, out_of_order = _first_sightings(keys)
    return Verdict(
        received=len(keys),
        distinct=distinct,
        duplicates=len(keys) - distinct,
        out_of_order=out_of_order,
        missing=max(0, expected - distinct),
        unexpected=max(0, distinct - expected),
    )


def judge_values(values: list[bytes], frames: int, expected: int) -> Verdict:
    """Counts for the event values of a stream (arrival order) that should carry 0..expected-1,
    each once; `frames` is the number of update frames, valued or not. Order is judged by
    value, which is emission order only when one publisher sent them in value order."""
    numbers = np.array(b" ".join(values).split(), dtype=np.float64) if values else np.zeros(0)
    integral = (numbers == np.floor(numbers)) & (numbers >= 0) & (numbers < expected)
    keys = numbers[integral].astype(np.int64)
    distinct, out_of_order = _first_sightings(keys)
    return Verdict(
        received=frames,
        distinct=distinct,
        duplicates=len(keys) - distinct,
        out_of_order=out_of_order,
        missing=expected - distinct,
        unexpected=int(np.count_nonzero(~integral)) + frames - len(values),
    )
