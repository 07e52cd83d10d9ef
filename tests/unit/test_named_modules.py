"""Every `pushsvc.<module>[.<name>]` that a docstring, a comment or a doc page names exists:
names go stale when modules move, and a reader follows them."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NAMED = re.compile(r"`(pushsvc(?:\.[A-Za-z_][A-Za-z0-9_]*)+)")
PATH = re.compile(r"`((?:[a-z_]+/)+[a-z_]+\.(?:py|lua|js))`")
# The same names written bare, as comments (Python's and Lua's) write them, `pushsvc/` or not.
BARE_PATH = re.compile(r"(?<![\w/.`-])((?:[a-z_]+/)+[a-z_]+\.(?:py|lua))\b")
NOT_PYTHON = {
    "pushsvc.js",  # the browser client, a file
    "pushsvc.publish",  # scopes, not modules
    "pushsvc.subscribe",
    "pushsvc.partitions",  # a logger's name (`--log-level`), not a module
}


def _resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            found: object = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attribute in parts[cut:]:
            if not hasattr(found, attribute):
                return False
            found = getattr(found, attribute)
        return True
    return False


def test_every_named_module_and_attribute_exists() -> None:
    pages = [p for p in (ROOT / "docs").rglob("*.md") if "journal" not in p.parts]
    files = [*(ROOT / "src" / "pushsvc").rglob("*.py"), *pages, ROOT / "README.md"]
    stale = sorted(
        f"{path.relative_to(ROOT)}: {name}"
        for path in files
        for name in set(NAMED.findall(path.read_text()))
        if name not in NOT_PYTHON and not _resolves(name)
    )
    assert not stale, "\n".join(stale)


def test_every_named_source_file_exists() -> None:
    """A path such as `broker/redis/log.py` is read from the package, `src/` or the repository
    (the journal keeps the names a change had when it was measured, and is left out). A page's
    `bench/…` paths are test_doc_bench_commands.py's: a withdrawn benchmark stays named beside
    its figures where the page says it was removed."""
    package = ROOT / "src" / "pushsvc"
    pages = [p for p in (ROOT / "docs").rglob("*.md") if "journal" not in p.parts]
    files = [*package.rglob("*.py"), *package.rglob("*.lua"), *pages, ROOT / "README.md"]
    wheres = (package, ROOT, ROOT / "src", package / "static", package / "broker")
    stale = sorted(
        f"{path.relative_to(ROOT)}: {name}"
        for path in files
        for name in set(PATH.findall(path.read_text()))
        if not (path.suffix == ".md" and name.startswith("bench/"))
        and not any((where / name).exists() for where in wheres)
    )
    assert not stale, "\n".join(stale)


def test_every_source_file_a_comment_names_exists() -> None:
    """Comments and docstrings in Python and Lua name files bare (`pushsvc/core/lateness.py's
    rule`): those names go stale as quietly as quoted ones."""
    package = ROOT / "src" / "pushsvc"
    files = [*package.rglob("*.py"), *package.rglob("*.lua")]
    wheres = (package, ROOT, ROOT / "src", package / "broker")
    stale = sorted(
        f"{path.relative_to(ROOT)}: {name}"
        for path in files
        for name in set(BARE_PATH.findall(path.read_text()))
        if not any((where / name.removeprefix("pushsvc/")).exists() for where in wheres)
    )
    assert not stale, "\n".join(stale)


# A Redis key as the docs write it: the prefix, then for a partition's key its hash tag written
# as a placeholder (`{tag}`, `{…}`, `{i}`) or a lease's own tag (`{bridge}`); a topic, a key, a
# resolution are placeholders too (`{topic}`), and `[…]` an optional part.
DOC_KEY = re.compile(r"\{prefix\}(?:\{[^}]*\}|[^\s`'\",;()])*")
_PARTITION_TAG = re.compile(r"^\{prefix\}\{[^}]*\}:")
_PLACEHOLDER = re.compile(r"\{[^}]*\}")


def _key_shape(key: str) -> str:
    """A key with its partition tag as `{tag}`, every other placeholder as `*`, and its
    optional parts and trailing punctuation left out."""
    key = re.sub(r"\[[^\]]*\]", "", key).rstrip(".")
    key = _PARTITION_TAG.sub("{prefix}{tag}:", key)
    head = "{prefix}{tag}:" if key.startswith("{prefix}{tag}:") else "{prefix}"
    return head + _PLACEHOLDER.sub("*", key[len(head) :])


def _key_templates() -> list[re.Pattern[str]]:
    """Every name `keys.py` gives, as a pattern a doc's key shape must match: its arguments
    (a topic, a resolution...) stand for any text."""
    from pushsvc.broker.redis.keys import Keys, PartitionKeys

    keys = Keys("P:", partitions=1)
    part = PartitionKeys(0, "P:{T}:")
    names: set[str] = {"P:", "P:{T}:"}
    for owner in (keys, part):
        for attribute in dir(type(owner)):
            value = getattr(type(owner), attribute)
            if isinstance(value, property):
                got = getattr(owner, attribute)
                if isinstance(got, str | bytes):
                    names.add(got.decode() if isinstance(got, bytes) else got)
    names |= {part.groups("\0"), part.idempotency("\0", "\0"), part.series_keys("\0")}
    names |= {part.series("\0", "\0"), part.series("\0", "\0", "\0"), part.fence("\0")}
    names |= {part.checkpoint("\0"), keys.updates_pattern("\0").decode()}
    names |= {part.presence_names("\0"), part.presence_patterns("\0")}
    names |= {channel.decode() + "\0" for channel in (part.updates_channel, keys.ingest_channel)}
    names |= {f"{keys.derive_lease}:taken", f"{keys.bridge_lease}:taken"}
    names |= {f"{keys.session_lease}:taken", f"{part.lease}:taken"}
    templates = []
    for name in names:
        shape = name.replace("P:{T}:", "{prefix}{tag}:").replace("P:{*}:", "{prefix}{tag}:")
        if shape.startswith("P:"):
            shape = "{prefix}" + shape[2:]
        # A lease's own tag ({bridge}, {derive}, {session}) is written as a tag too.
        shape = re.sub(r"^\{prefix\}\{[a-z]+\}:", "{prefix}{tag}:", shape)
        pattern = re.escape(shape).replace(re.escape("\0"), ".+").replace(r"\*", ".*")
        templates.append(re.compile(pattern))
    return templates


def test_every_redis_key_a_doc_names_is_one_keys_py_makes() -> None:
    """`{prefix}…` in a doc page (the journal aside) is a name `broker/redis/keys.py` makes:
    the docs once named the layout before partitions (`{prefix}history`, `{prefix}log:i/P`)."""
    templates = _key_templates()
    pages = [p for p in (ROOT / "docs").rglob("*.md") if "journal" not in p.parts]
    stale = sorted(
        f"{path.relative_to(ROOT)}: {key}"
        for path in [*pages, ROOT / "README.md"]
        for key in set(DOC_KEY.findall(path.read_text()))
        if not any(t.fullmatch(_key_shape(key)) for t in templates)
    )
    assert not stale, "\n".join(stale)


def test_a_stale_key_is_found() -> None:
    templates = _key_templates()

    def known(key: str) -> bool:
        return any(t.fullmatch(_key_shape(key)) for t in templates)

    assert known("{prefix}{tag}:log") and known("{prefix}{…}:u:{topic}")
    assert known("{prefix}{tag}:series:{res}:{topic}[|{group id}]")
    assert known("{prefix}{tag}:idem:{topic}/{key}") and known("{prefix}ingest:{topic}")
    assert known("{prefix}{bridge}:lease[:taken]") and known("{prefix}aggregators")
    assert not known("{prefix}log:i/P") and not known("{prefix}updates:{topic}")
    assert not known("{prefix}history") and not known("{prefix}lease:derive")


# A metric as `/metrics` exposes it: what ops/metrics.py defines, with prometheus_client's
# suffixes (`_total` for a counter, `_bucket`/`_sum`/`_count` for a histogram, `_info`).
_METRIC_DEFINITION = re.compile(
    r"\b(Counter|Gauge|Info|Histogram|CounterMetricFamily|GaugeMetricFamily|"
    r"HistogramMetricFamily)\(\s*\"(pushsvc_[a-z0-9_]+)\""
)
DOC_METRIC = re.compile(r"(?<![\w/.-])pushsvc_[a-z0-9_]*[a-z0-9_]")
# The dashboard's cookie (docs/security.md); the outbox's default tables and trigger
# (docs/deploy.md, `pushsvc.ingest.outbox_sql`).
NOT_METRICS = {"pushsvc_token", "pushsvc_outbox", "pushsvc_outbox_dead", "pushsvc_outbox_notify"}


def _metric_names() -> set[str]:
    source = (ROOT / "src" / "pushsvc" / "ops" / "metrics.py").read_text()
    names: set[str] = set()
    for kind, name in _METRIC_DEFINITION.findall(source):
        if kind.startswith("Counter"):
            names.add(name.removesuffix("_total") + "_total")
        elif kind.startswith("Histogram"):
            names |= {name, *(name + suffix for suffix in ("_bucket", "_sum", "_count"))}
        elif kind == "Info":
            names.add(name + "_info")
        else:
            names.add(name)
    return names


def test_every_metric_a_doc_names_is_one_pushsvc_exposes() -> None:
    """A `pushsvc_…` name in a doc page is a metric `/metrics` has (a name ending in `_`, as
    in `pushsvc_redis_*`, is the start of some)."""
    names = _metric_names()
    assert {"pushsvc_events_accepted_total", "pushsvc_delivery_seconds_bucket"} <= names
    pages = [p for p in (ROOT / "docs").rglob("*.md") if "journal" not in p.parts]
    stale = sorted(
        f"{path.relative_to(ROOT)}: {name}"
        for path in [*pages, ROOT / "README.md"]
        for name in set(DOC_METRIC.findall(path.read_text()))
        if name not in NOT_METRICS
        and name not in names
        and not (name.endswith("_") and any(n.startswith(name) for n in names))
    )
    assert not stale, "\n".join(stale)
