"""The form of a `SeriesBuckets` durable state: what its version number says it holds.

A state's version says what each bucket holds: 1 the statistics, 2 also the distinct sets, 3
also the top summaries (after the distinct sets, if the rule has both), 4 and 5 as 2 and 3 with
distinct sets that may be sparse (written with distinct tags: an older reader refuses them
rather than misread a sparse set); a state of an older version restores into buckets with
more tags, which then count those from the restore on. 6 to 10 are 1 to 5 with what is
published within the grace after them (written only where the grace is beyond the lateness:
other states are as before); 11 is one of 1 to 10 but 2 and 7 (the next number says which)
with each coarser bucket's message counts after the rest, written only when an open coarser
bucket holds messages (so a state without any reads where this version is unknown).

Apart from `pushsvc.series.buckets` so that the numbering, which only grows and must read
every state written before, is read in one place: the buckets write and read their sections
in the order the form says, and ask it nothing else.
"""

from __future__ import annotations

from pushsvc.series.bucket_summary import TopTags
from pushsvc.stats.state_codec import StateReader, StateWriter

__all__ = ["StateForm", "read_form", "write_form"]

_VERSION = 1
_VERSION_DISTINCT = 2
"""The state of buckets with distinct counts (version 1 has none)."""
_VERSION_TOP = 3
"""The state of buckets with top values (and the distinct counts the rule keeps, if any)."""
_VERSION_SPARSE_DISTINCT = 4
_VERSION_SPARSE_TOP = 5
"""As 2 and 3, with distinct sets that may be sparse (`DistinctSet`'s kind 2)."""
_LATE = 5
"""Added to a version (6 to 10: as 1 to 5): the state also holds what is published within the
grace, after the coarser tiers (written only where the grace is beyond the lateness)."""
_VERSION_MESSAGES = 11
"""One of the versions above (the next number), each bucket followed by its message counts."""
_WITH_DISTINCT = (_VERSION_DISTINCT, _VERSION_SPARSE_DISTINCT)
_WITH_TOP = (_VERSION_TOP, _VERSION_SPARSE_TOP)


class StateForm:
    """What a state read holds: each coarser bucket's distinct sets (`distinct`: their tags,
    none in a state from before the rule counted them) and top summaries (`top`), whether
    its distinct sets may be `sparse`, whether each bucket has its `messages` counts, and
    whether the state has its `late` section (what is published within the grace)."""

    __slots__ = ("distinct", "late", "messages", "sparse", "top")

    def __init__(
        self, distinct: tuple[str, ...], top: TopTags, sparse: bool, messages: bool, late: bool
    ) -> None:
        self.distinct = distinct
        self.top = top
        self.sparse = sparse
        self.messages = messages
        self.late = late


def write_form(out: StateWriter, distinct: bool, top: bool, messages: bool, late: bool) -> None:
    """The version of a state of buckets with `distinct` and `top` tags (if any), with each
    bucket's message counts (`messages`) and the late section (`late`)."""
    if messages:
        out.uint(_VERSION_MESSAGES)
    if top:
        version = _VERSION_SPARSE_TOP if distinct else _VERSION_TOP
    else:
        version = _VERSION_SPARSE_DISTINCT if distinct else _VERSION
    out.uint(version + _LATE if late else version)


def read_form(source: StateReader, distinct: tuple[str, ...], top: TopTags) -> StateForm:
    """The form of a state for buckets of `distinct` and `top` tags; ValueError if the state is
    not of such buckets (it counts tags they do not) or of no version known."""
    version = source.uint()
    messages = version == _VERSION_MESSAGES
    if messages:
        version = source.uint()
        if version in (_VERSION_DISTINCT, _VERSION_DISTINCT + _LATE, _VERSION_MESSAGES):
            # (never written with counts)
            form = f"{_VERSION_MESSAGES} over {version}"
            raise ValueError(f"series state of version {form}, not of these buckets")
    late = version > _LATE
    if late:
        version -= _LATE
    if (
        version not in (_VERSION, *_WITH_DISTINCT, *_WITH_TOP)
        or (version in _WITH_DISTINCT and not distinct)
        or (version in _WITH_TOP and not top)
        or (version == _VERSION_SPARSE_TOP and not distinct)
    ):
        raise ValueError(f"series state of version {version}, not of these buckets")
    # A state from before the rule counted distinct (or top) values: its open coarser
    # buckets count only the events from now on.
    return StateForm(
        distinct if version != _VERSION else (),
        top if version in _WITH_TOP else (),
        version in (_VERSION_SPARSE_DISTINCT, _VERSION_SPARSE_TOP),
        messages,
        late,
    )
