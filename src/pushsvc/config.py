"""Settings: read once from `PUSHSVC_*` variables and CLI flags (a flag wins), validated early."""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar, cast

from pushsvc.broker.base import DEFAULT_ALERT_RETENTION_US
from pushsvc.broker.redis.url import check_redis_url, redact_url
from pushsvc.core.durations import duration_label, parse_duration_us
from pushsvc.core.lists import comma_list
from pushsvc.core.log_levels import LogLevels, parse_log_levels
from pushsvc.core.sizes import parse_size_bytes, size_label
from pushsvc.errors import ConfigError, InvalidTopic, RulesError
from pushsvc.ingest.outbox_dsn import PostgresDsn, parse_dsn
from pushsvc.ingest.outbox_sql import DEFAULT_TABLE, check_table
from pushsvc.security.scopes import Scope

if TYPE_CHECKING:
    from pushsvc.rules.analytics import Rules
    from pushsvc.rules.tiers import SeriesTier
    from pushsvc.security.tokens import JwtKey

T = TypeVar("T")

WAITING_SHARES = 16
"""`--max-waiting` over what one client address may keep waiting, and over the connections
shed a second: the defaults these settings had (4,096 and 256 each) kept as a ratio."""

TOPIC_SHARES = 4
"""`--max-topics` over what one publisher may hold unless `--max-topics-per-publisher` says:
filling the table takes four publishers, as a quarter of the auth proxy's asks is one
address's (`pushsvc.security.backend_auth`)."""

MESSAGE_SHARES = 16
"""`--max-body` over the largest message's data (64 KiB of the default 1 MiB)."""

BUFFER_SHARES = 32
"""The process's pending stream bytes over one stream's `--max-stream-buffer` (256 MiB of the
default 8 MiB)."""

TOPIC_BYTES = 10 * 1024
"""What a topic is admitted as costing when `--max-topics` is a memory budget: a topic of
messages only with its first message, what the server and its broker keep of it, with room
(measured: docs/performance.md, "A topic's cost")."""


def _topic_bound(text: str) -> int:
    """`--max-topics`: a count (`100000`), or a memory budget (`1GiB`) admitting a topic for
    every `TOPIC_BYTES` of it."""
    if text.strip().isdigit():
        return _positive_int(text)
    count = _positive_size(text) // TOPIC_BYTES
    if count < 1:
        raise ValueError(f"{text!r} holds no topic: a topic is counted as {TOPIC_BYTES} bytes")
    return count


def _windows(text: str) -> tuple[int, ...]:
    widths = [parse_duration_us(part) for part in comma_list(text)]
    if not widths:
        raise ValueError("at least one window is required")
    if any(w <= 0 for w in widths):
        raise ValueError("windows must be longer than 0")
    if len(set(widths)) != len(widths):
        raise ValueError("windows must be distinct")
    return tuple(sorted(widths))


def _series(text: str) -> tuple[SeriesTier, ...]:
    from pushsvc.rules.tiers import parse_tiers

    return parse_tiers(text)


def _int(text: str, takes: str) -> int:
    """A whole number, or a ValueError saying what the setting takes (int()'s own message
    names its base, not the setting)."""
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{text!r} {takes}") from None


def _positive_int(text: str) -> int:
    value = _int(text, "must be a positive integer")
    if value <= 0:
        raise ValueError(f"{text!r} must be a positive integer")
    return value


def _port(text: str) -> int:
    value = _int(text, "is not a TCP port (0 to 65535)")
    if not 0 <= value <= 65535:
        raise ValueError(f"{text!r} is not a TCP port (0 to 65535)")
    return value


def _optional_port(text: str) -> int | None:
    return _port(text) if text else None


def _positive_size(text: str) -> int:
    value = parse_size_bytes(text)
    if value <= 0:
        raise ValueError(f"{text!r} must be more than 0 bytes")
    return value


def _positive_duration(text: str) -> int:
    value = parse_duration_us(text)
    if value <= 0:
        raise ValueError(f"{text!r} must be longer than 0")
    return value


def _optional_positive_int(text: str) -> int | None:
    return _positive_int(text) if text.strip() else None


def _optional_positive_duration(text: str) -> int | None:
    return _positive_duration(text) if text.strip() else None


def _redis_url(text: str) -> str | None:
    return check_redis_url(text) if text else None


def _non_negative_int(text: str) -> int:
    value = _int(text, "must be a whole number, 0 or more")
    if value < 0:
        raise ValueError(f"{text!r} must be 0 or more")
    return value


def _partitions(text: str) -> int:
    from pushsvc.core.partitions import check_partitions

    return check_partitions(_int(text, "is not a whole number of partitions"))


def _prefix(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9._:-]{0,64}", text):
        raise ValueError(f"{text!r} may hold only ASCII letters, digits and ._:-")
    return text


def _data_dir(text: str) -> str | None:
    if not text:
        return None
    path = os.path.abspath(os.path.expanduser(text))
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{text!r} is a file, not a directory")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:  # under a file, under /proc or /sys, a read-only parent
        raise ValueError(
            f"cannot create the directory {text!r}: {exc.strerror}; give a directory pushsvc "
            "may create and write in"
        ) from None
    if not os.access(path, os.W_OK):
        raise ValueError(f"{text!r} is not a writable directory")
    return path


def _origins(text: str) -> tuple[str, ...]:
    origins = comma_list(text)
    for origin in origins:
        # Credentials (the cookie) go with every CORS answer: a wildcard would hand them to
        # any site, so each origin is named.
        if not re.fullmatch(r"https?://[A-Za-z0-9.-]+(:\d{1,5})?", origin):
            raise ValueError(
                f"{origin!r} is not an origin like https://app.example.com (no '*', no path)"
            )
    return origins


def _alertmanagers(text: str) -> tuple[str, ...]:
    urls = comma_list(text)
    for url in urls:
        if not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", url):
            raise ValueError(f"{url!r} is not an http(s) URL of an Alertmanager")
    return urls


def _auth_url(text: str) -> str | None:
    if not text:
        return None
    if not re.fullmatch(r"https?://[^\s/?#]+(/[^\s#]*)?", text):
        raise ValueError(f"{text!r} is not an http(s) URL of the application's auth endpoint")
    return text


def _cookie_names(text: str) -> tuple[str, ...]:
    names = comma_list(text)
    for name in names:
        if not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", name):
            raise ValueError(f"{name!r} is not a cookie name")
    return names


def _log_format(text: str) -> str:
    if text not in ("text", "json"):
        raise ValueError(f"{text!r}: choose text or json")
    return text


def _mercure(text: str) -> str:
    if text not in ("off", "on", "anonymous"):
        raise ValueError(f"{text!r}: choose off, on or anonymous")
    return text


def _optional(text: str) -> str | None:
    return text or None


def _flag(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{text!r} is not true or false")


def _rate(text: str) -> float | None:
    if text.strip() in ("", "unlimited"):
        return None
    try:
        value = float(text)
    except ValueError:
        value = float("nan")  # float()'s own message names no setting: the one below does
    if not 0 < value < float("inf"):
        raise ValueError(f"{text!r} must be a positive number of events per second")
    return value


def _jwt_key(text: str) -> JwtKey | None:
    if not text:
        return None
    # Imported when a key is given: PyJWT and cryptography are half of what importing the
    # settings costs, and the command line's client commands (`publish`, `subscribe`) load
    # settings without serving anything.
    from pushsvc.security.tokens import load_key

    return load_key(text)


def _selectors(text: str) -> tuple[str, ...]:
    selectors = comma_list(text)
    try:
        Scope.of(selectors)
    except InvalidTopic as exc:
        raise ValueError(exc.message) from None
    return selectors


def _readable_file(text: str) -> str | None:
    if not text:
        return None
    path = os.path.abspath(os.path.expanduser(text))
    if not os.access(path, os.R_OK):
        raise ValueError(f"{text!r} is not a readable file")
    return path


START = "Start here"
DEPLOYMENT = "Redis, partitions and processes"
TIMING = "Analytics timing"
HISTORY = "History and replay"
STREAMS = "Streams"
OUTPUTS = "Alerts and the outbox"
ACCESS = "Access"
EDGE = "TLS, proxies and logs"
BOUNDS = "Attack bounds"
GROUPS = (START, DEPLOYMENT, TIMING, HISTORY, STREAMS, OUTPUTS, ACCESS, EDGE, BOUNDS)
"""The settings by who needs them, in this order in `--help` and docs/configuration.md: the
few a newcomer meets first, then what an operator tunes to a deployment, then the bounds that
hold against hostile clients."""


def setting(
    default: str,
    parse: Callable[[str], T],
    *,
    group: str,
    name: str | None = None,
    secret: bool = False,
) -> T:
    """A Settings field read from flag `--name` / variable `PUSHSVC_NAME` (`name` defaults to the
    field's; fields in units say so, e.g. `tick_us` is `--tick 1s`), typed as `parse` returns,
    shown under `group` (one of GROUPS)."""
    assert group in GROUPS, group
    metadata = {"default": default, "parse": parse, "name": name, "secret": secret, "group": group}
    return cast(T, field(default=None, metadata=metadata))


@dataclass(frozen=True)
class Setting:
    """How one field is given: its name (the flag's and the variable's), default, parser."""

    field: str
    name: str
    default: str
    parse: Callable[[str], object]
    secret: bool
    group: str

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def variable(self) -> str:
        return f"PUSHSVC_{self.name.upper()}"

    @property
    def is_size(self) -> bool:
        """Given in bytes or KiB, MiB, GiB (`pushsvc.core.sizes`), shown as given."""
        return self.parse is _positive_size


@dataclass(frozen=True)
class Settings:
    """Every setting, parsed. Durations are integer microseconds (`*_us`), given as `10s`."""

    # -- Start here --------------------------------------------------------------------------
    host: str = setting("127.0.0.1", str, group=START)
    port: int = setting("8000", _port, group=START)
    redis_url: str | None = setting("", _redis_url, secret=True, group=START)
    workers: int = setting("1", _positive_int, group=START)
    data_dir: str | None = setting("", _data_dir, group=START)
    # Analytics rules (docs/design.md): per family of topics; windows and series below are the
    # default rule's, with every statistic but `rate` (`Settings.rules`).
    rules_file: str | None = setting("", _readable_file, name="rules", group=START)
    windows_us: tuple[int, ...] = setting("10s,1m,5m", _windows, name="windows", group=START)
    # Long-range series: resolution:retention tiers for the topics whose rule has none.
    series: tuple[SeriesTier, ...] = setting("1s:15m,1m:24h", _series, group=START)
    # Security (docs/security.md): off until a key is given.
    jwt_key: JwtKey | None = setting("", _jwt_key, secret=True, group=START)  # noqa: RUF009
    anonymous: tuple[str, ...] = setting("", _selectors, group=START)

    # -- Redis, partitions and processes -----------------------------------------------------
    prefix: str = setting("pushsvc:", _prefix, group=DEPLOYMENT)
    # Every process of a deployment must give the same count (docs/scaling.md).
    partitions: int = setting("16", _partitions, group=DEPLOYMENT)
    lease_us: int = setting("5s", _positive_duration, name="lease", group=DEPLOYMENT)
    redis_min_replicas: int = setting("0", _non_negative_int, group=DEPLOYMENT)
    # `aggregate` only: the port of its /metrics.
    metrics_port: int | None = setting("", _optional_port, group=DEPLOYMENT)

    # -- Analytics timing --------------------------------------------------------------------
    tick_us: int = setting("1s", parse_duration_us, name="tick", group=TIMING)
    # How far behind its topic's clock an event is still applied in place, for topics whose
    # rule names no `grace` (an older one goes to the late stream, docs/rules.md).
    grace_us: int = setting("5s", parse_duration_us, name="grace", group=TIMING)
    # An event further ahead of the server's clock is refused: it would make every event after
    # it late until the clock catches up (one wrong clock must never lock a topic).
    max_future_us: int = setting("5m", _positive_duration, name="max_future", group=TIMING)
    # Idle topics forgotten after it (0: never).
    topic_ttl_us: int = setting("1h", parse_duration_us, name="topic_ttl", group=TIMING)

    # -- History and replay ------------------------------------------------------------------
    history: int = setting("10000", _positive_int, group=HISTORY)
    # The history's bytes per partition (its updates' bodies), besides its count: updates of
    # 64 KiB messages would make 10,000 of them 650 MB a partition (docs/reliability.md).
    history_bytes: int = setting("32MiB", _positive_size, group=HISTORY)

    # -- Streams -----------------------------------------------------------------------------
    heartbeat_us: int = setting("15s", _positive_duration, name="heartbeat", group=STREAMS)
    retry_us: int = setting("3s", _positive_duration, name="retry", group=STREAMS)
    # Presence (docs/api.md): whether the token subjects watching a topic are kept and told to
    # callers whose token has a presence scope for it.
    presence_subs: bool = setting("false", _flag, group=STREAMS)

    # -- Alerts and the outbox ---------------------------------------------------------------
    # Alerts (docs/design.md): Alertmanagers to post firing and resolved instances to
    # (comma-separated: an HA pair).
    alertmanager_url: tuple[str, ...] = setting("", _alertmanagers, secret=True, group=OUTPUTS)
    # Events from the application's database (docs/deploy.md): a PostgreSQL outbox table read
    # into the log by the aggregating process that holds its lease; unset, none is read.
    outbox_dsn: PostgresDsn | None = setting(  # noqa: RUF009 (frozen)
        "", parse_dsn, secret=True, group=OUTPUTS
    )
    outbox_table: str = setting(DEFAULT_TABLE, check_table, group=OUTPUTS)

    # -- Access ------------------------------------------------------------------------------
    # While keys are rotated: tokens signed with the key being replaced still verify.
    jwt_previous_key: JwtKey | None = setting(  # noqa: RUF009 (frozen)
        "", _jwt_key, secret=True, group=ACCESS
    )
    jwt_audience: str | None = setting("", _optional, group=ACCESS)
    jwt_issuer: str | None = setting("", _optional, group=ACCESS)
    mercure: str = setting("off", _mercure, group=ACCESS)
    # Mercure's active subscriptions (events and API): off by default, as the reference hub's
    # `subscriptions` directive; on, every subscription's start and end is a log append.
    mercure_subscriptions: bool = setting("false", _flag, group=ACCESS)
    token_query: bool = setting("false", _flag, group=ACCESS)
    # Access decided by the application's backend (pushsvc.security.backend_auth): its URL
    # turns it on; the cookies forwarded to it besides the Authorization header
    # (`pushsvc.security.backend_auth` fixes how long and how many asks at once).
    auth_url: str | None = setting("", _auth_url, secret=True, group=ACCESS)
    auth_cookies: tuple[str, ...] = setting("", _cookie_names, group=ACCESS)
    cors_origins: tuple[str, ...] = setting("", _origins, group=ACCESS)

    # -- TLS, proxies and logs ---------------------------------------------------------------
    certfile: str | None = setting("", _readable_file, group=EDGE)
    keyfile: str | None = setting("", _readable_file, group=EDGE)
    trusted_proxies: int = setting("0", _non_negative_int, group=EDGE)
    log_format: str = setting("text", _log_format, group=EDGE)
    # What is logged: a level for every logger, then levels for single loggers
    # (`info,pushsvc.partitions=debug`: each partition's lease, rebuild and hand-over).
    log_level: LogLevels = setting("info", parse_log_levels, group=EDGE)  # noqa: RUF009 (frozen)

    # -- Attack bounds -----------------------------------------------------------------------
    max_streams: int = setting("20000", _positive_int, group=BOUNDS)
    max_streams_per_ip: int = setting("256", _positive_int, group=BOUNDS)
    # Connections waiting on their client (a head, a body, a keep-alive) at once, from every
    # address: each costs ~60 KB (a greenlet parked in a read, its buffers). One address may
    # hold a share of them, and the shedding has a pace (`max_waiting_per_ip`, `shed_rate`).
    max_waiting: int = setting("4096", _positive_int, group=BOUNDS)
    # How long a client may keep the server waiting on it (nginx's client_body_timeout,
    # client_header_timeout and send_timeout in one): a request's whole body within it, and
    # never longer than a third of it for its head or between two pieces of its body
    # (`header_timeout_us`, `body_read_timeout_us`; slowloris, R.U.D.Y.); a client whose
    # socket takes nothing of an answer for it is disconnected (`slow_client_timeout_us`).
    body_timeout_us: int = setting("30s", _positive_duration, name="body_timeout", group=BOUNDS)
    max_body_bytes: int = setting("1MiB", _positive_size, name="max_body", group=BOUNDS)
    publish_rate: float | None = setting("unlimited", _rate, group=BOUNDS)
    # Bytes, not counts: what one stream may have pending (rendered, not yet taken by its
    # socket) before it is conflated; what every stream of the process may have pending
    # together before new streams are refused (503) follows (`stream_buffer_budget`).
    # 8 MiB, not Centrifugo's 1 MiB: past it a stream conflates (Centrifugo disconnects, and
    # its client recovers each update), and an honest reader behind a failover's backlog on a
    # Redis Cluster held more than 1 MiB (the fault suite lost updates to conflation there).
    max_stream_buffer: int = setting("8MiB", _positive_size, group=BOUNDS)
    # A cap on live topics (idle ones are forgotten after --topic-ttl): a memory budget, or a
    # count; the number of topics it holds.
    max_topics: int = setting("1GiB", _topic_bound, group=BOUNDS)
    # New topics one publisher (token subject, else client address) may hold, per process;
    # unset: a quarter of --max-topics (`topic_share`).
    max_topics_per_publisher: int | None = setting("", _optional_positive_int, group=BOUNDS)

    @property
    def checkpoint_interval_us(self) -> int:
        """How often an aggregator saves its checkpoints and trims the log behind them: once
        a lease (5 s at the default), so that a cold start, or a partition taken over from a
        process that died, replays at most about a lease of the log past its checkpoint, the
        same order as the time the take-over itself waits."""
        return self.lease_us

    @property
    def header_timeout_us(self) -> int:
        """The longest wait for a request's line and headers, and an idle keep-alive's next
        request: a third of `--body-timeout` (10 s of the default 30 s), the same wait as
        between two pieces of a body (nginx gives client_header_timeout and
        client_body_timeout one default)."""
        return max(1, self.body_timeout_us // 3)

    @property
    def slow_client_timeout_us(self) -> int:
        """How long a client whose socket takes nothing of what it is sent (a stream with
        output pending, any other answer being written) is kept: `--body-timeout`, the
        wait a body may take on the way in, as long on the way out."""
        return self.body_timeout_us

    @property
    def max_message_bytes(self) -> int:
        """A message's data as compact JSON (docs/api.md, Messages; past it the batch is a
        413): a sixteenth of `--max-body` (64 KiB of the default 1 MiB), so that a body holds
        sixteen messages at their largest; at least 4 bytes (the data `null`)."""
        return max(4, self.max_body_bytes // MESSAGE_SHARES)

    @property
    def stream_buffer_budget(self) -> int:
        """Bytes every stream of the process may have pending together before new streams
        are refused (503): 32 streams at `--max-stream-buffer` (256 MiB of the default 8 MiB),
        so that one stream never spends more than a thirty-second of it."""
        return self.max_stream_buffer * BUFFER_SHARES

    @property
    def body_read_timeout_us(self) -> int:
        """The longest wait for the next piece of a request's body: a third of
        `--body-timeout` (10 s of the default 30 s), so that a body stalled twice is cut off
        before its whole deadline, and a body that trickles is cut off at the whole one."""
        return max(1, self.body_timeout_us // 3)

    @property
    def topic_share(self) -> int:
        """The topics one publisher may hold (`pushsvc.security.topic_shares`): as set, at
        most `--max-topics`; unset, a quarter of it (at least 1), so that filling the table
        takes four publishers."""
        if self.max_topics_per_publisher is not None:
            return min(self.max_topics_per_publisher, self.max_topics)
        return max(1, self.max_topics // TOPIC_SHARES)

    @property
    def max_waiting_per_ip(self) -> int:
        """Connections one client address may keep waiting at once: a sixteenth of
        `--max-waiting` (256 of the default 4,096), so that filling the waiting set takes at
        least 16 addresses, and a client behind a NAT keeps room for its users."""
        return max(1, self.max_waiting // WAITING_SHARES)

    @property
    def shed_rate(self) -> int:
        """Waiting connections that may be closed a second (past the two caps above): a
        sixteenth of `--max-waiting` (256 of the default 4,096), so that shedding turns the
        whole waiting set over in 16 s at the fastest. Past it the attacker's addresses are
        refused at once, and an attacker reopening every connection closed spends no more of
        the server's CPU (docs/security.md#limits)."""
        return max(1, self.max_waiting // WAITING_SHARES)

    @property
    def window_labels(self) -> tuple[str, ...]:
        return tuple(duration_label(w) for w in self.windows_us)

    @cached_property
    def alert_keep_us(self) -> int:
        """How long alert changes are kept (`_alerts`' history, whatever --history keeps): the
        longest retention of any topic's series tiers, a chart's longest range, whose periods
        they shade; else a day."""
        rules = self.rules
        kept = [t.retention_us for r in (rules.default, *rules.rules) for t in rules.series_of(r)]
        return max(kept, default=DEFAULT_ALERT_RETENTION_US)

    @cached_property
    def rules(self) -> Rules:
        """The analytics rules: the rules file's, then `--windows`, every statistic but `rate`
        (`STAT_KEYS`) and `--series` for every other topic. Read once; `load` reads it, so a
        bad file stops the process at start."""
        from pushsvc.rules.analytics import Rules, default_rule, load_rules
        from pushsvc.stats import STAT_KEYS

        default = default_rule(self.windows_us, STAT_KEYS, self.series)
        if self.rules_file is None:
            return Rules((), default)
        return load_rules(self.rules_file, default)

    @classmethod
    def specs(cls) -> tuple[Setting, ...]:
        return tuple(
            Setting(
                field=spec.name,
                name=spec.metadata["name"] or spec.name,
                default=spec.metadata["default"],
                parse=spec.metadata["parse"],
                secret=spec.metadata["secret"],
                group=spec.metadata["group"],
            )
            for spec in fields(cls)
        )

    @classmethod
    def load(
        cls,
        overrides: Mapping[str, object] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Settings:
        """Flags (`overrides`, by setting name, e.g. `tick`; None means not given) win over
        `PUSHSVC_*` variables. A non-string override is taken as already parsed.

        Raises ConfigError naming the setting, its flag and its variable.
        """
        environ = os.environ if environ is None else environ
        specs = cls.specs()
        flags = _flags_given(overrides or {}, specs)
        _check_variables(environ, specs)
        values: dict[str, Any] = {
            spec.field: _value(spec, flags.get(spec.name), environ) for spec in specs
        }
        settings = cls(**values)
        if settings.jwt_key is None and settings.auth_url is None:
            _refuse_auth_only(settings)
        for needed, message in _needs(settings):
            if not needed:
                raise ConfigError(message)
        settings.rules  # noqa: B018 (read now: a bad rules file stops the process at start)
        _check_sessions(settings)
        return settings

    def redacted(self) -> dict[str, object]:
        """Settings by name for logs, as they are given (durations as `10s`, sizes as `8MiB`,
        tiers as `1s:15m`), secrets hidden."""
        out: dict[str, object] = {}
        for spec in self.specs():
            value = getattr(self, spec.field)
            # Secrets that are not URLs are typed values whose repr hides them (JwtKey).
            out[spec.name] = redact_url(value) if spec.secret and isinstance(value, str) else value
            if spec.field.endswith("_us"):
                out[spec.name] = _as_given(value)
            elif spec.is_size:
                out[spec.name] = size_label(value)
        out["series"] = ",".join(tier.label for tier in self.series)
        out["log_level"] = str(self.log_level)
        return out


def _flags_given(overrides: Mapping[str, object], specs: tuple[Setting, ...]) -> dict[str, object]:
    """The flags given (not None), once no retired or unknown one is among them."""
    given = {name: value for name, value in overrides.items() if value is not None}
    for name in given.keys() & RETIRED.keys():
        raise ConfigError(RETIRED[name])
    unknown = given.keys() - {spec.name for spec in specs}
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    return given


def _value(spec: Setting, given: object, environ: Mapping[str, str]) -> object:
    """One setting's value: its flag's (taken as parsed unless text), else its variable's,
    else its default, parsed."""
    if given is not None and not isinstance(given, str):
        return given
    raw = given if given is not None else environ.get(spec.variable, spec.default)
    try:
        return spec.parse(raw)
    except ValueError as exc:
        raise ConfigError(f"invalid {spec.flag} / {spec.variable}: {exc}") from None


def _needs(settings: Settings) -> list[tuple[bool, str]]:
    """Settings that need another: (whether what it needs is there, the line that says what)."""
    keyed = settings.jwt_key is not None
    return [
        (
            settings.jwt_previous_key is None or keyed,
            "--jwt-previous-key (PUSHSVC_JWT_PREVIOUS_KEY) is for rotating keys: "
            "it needs --jwt-key (PUSHSVC_JWT_KEY), the new one",
        ),
        (
            settings.mercure == "off" or keyed,
            "--mercure (PUSHSVC_MERCURE) checks publishers' tokens: it needs --jwt-key "
            "(PUSHSVC_JWT_KEY), the key Mercure tokens are signed with",
        ),
        (
            not settings.mercure_subscriptions or settings.mercure != "off",
            "--mercure-subscriptions (PUSHSVC_MERCURE_SUBSCRIPTIONS) tracks the Mercure "
            "hub's subscriptions: it needs --mercure on or anonymous",
        ),
        (
            # With the auth proxy alone there are no tokens of pushsvc's to take from a URL.
            not settings.token_query or keyed,
            "--token-query (PUSHSVC_TOKEN_QUERY) takes pushsvc's tokens from ?token=: it "
            "needs --jwt-key (PUSHSVC_JWT_KEY)",
        ),
        (
            (settings.certfile is None) == (settings.keyfile is None),
            "--certfile and --keyfile (PUSHSVC_CERTFILE, PUSHSVC_KEYFILE) go together",
        ),
    ]


def _check_sessions(settings: Settings) -> None:
    """What a `[[session]]` rule needs of the settings and of its topic's rule."""
    for session in settings.rules.sessions:
        rule = settings.rules.for_topic(session.topic)
        if not rule.windows_us:
            # The session statistics are kept in time windows (exact or long), not in
            # count windows (pushsvc.stats.session_stats).
            raise RulesError(
                f"rules file {settings.rules_file}: session {session.number} "
                f"({session.topic}): the session topic's rule has no time window, where "
                "its session statistics are kept; add one to its windows"
            )
        # The assembler's own bound (`SessionSettings`): a shorter cut could not be taken
        # back by an event arriving late within the lateness.
        limit = session.max_duration_us
        if limit is not None and limit < settings.grace_us:
            raise RulesError(
                f"rules file {settings.rules_file}: session {session.number} "
                f"({session.topic}): max_duration: shorter than the allowed lateness "
                f"(--grace {duration_label(settings.grace_us)})"
            )


def _refuse_auth_only(settings: Settings) -> None:
    """Settings that only narrow or widen access with auth on: given with auth off, the
    operator believes some topics private, or tokens in URLs needed, while anyone may read
    everything. Refused rather than warned about: a warning scrolls by; a server that starts
    open when its operator meant it closed does not."""
    given = []
    if settings.anonymous:
        given.append("--anonymous (PUSHSVC_ANONYMOUS)")
    if settings.token_query:
        given.append("--token-query (PUSHSVC_TOKEN_QUERY)")
    if given:
        raise ConfigError(
            f"{' and '.join(given)} only {'apply' if len(given) > 1 else 'applies'} with auth "
            "on: without --jwt-key "
            "(PUSHSVC_JWT_KEY) or --auth-url (PUSHSVC_AUTH_URL) anyone may read and publish "
            "every topic; set the key (docs/security.md), or drop the setting"
        )


def _as_given(us: object) -> object:
    """A duration setting (or a list of them) in microseconds, labelled as people write it."""
    if isinstance(us, int):
        return duration_label(us) if us else "0"  # 0 (a topic TTL of never) has no unit
    if isinstance(us, tuple):
        return ",".join(duration_label(part) for part in us)
    return us


def _fixed(name: str, now: str) -> str:
    flag, variable = "--" + name.replace("_", "-"), f"PUSHSVC_{name.upper()}"
    return f"{flag} / {variable} is no longer a setting: {now} (docs/configuration.md)"


RETIRED = {
    "stream_compression": _fixed(
        "stream_compression",
        "a stream is gzipped when its client offers gzip in Accept-Encoding, and only then",
    ),
    "stream_compression_contexts": _fixed(
        "stream_compression_contexts", "a process keeps 256 shared deflate contexts"
    ),
    "max_selectors": _fixed("max_selectors", "a stream or subscription takes 100 selectors"),
    "alert_retention": _fixed(
        "alert_retention",
        "alert changes are kept as long as the longest series retention (a chart's longest "
        "range, whose periods they shade), else a day",
    ),
    "allowed_lateness": _fixed(
        "allowed_lateness",
        "it is --grace / PUSHSVC_GRACE now (an event past it is kept on its topic's late "
        "stream, not refused)",
    ),
    "shard": (
        "--shard / PUSHSVC_SHARD is gone: aggregators share the partitions by leases now; "
        "give every process the same --partitions / PUSHSVC_PARTITIONS (default 16) and run "
        "as many `pushsvc aggregate` as you like"
    ),
    "history_hold": _fixed(
        "history_hold",
        "a sessionizer's hold keeps a partition's history up to --history-bytes / "
        "PUSHSVC_HISTORY_BYTES; raise that to hold more",
    ),
    "body_read_timeout": _fixed(
        "body_read_timeout",
        "it is a third of --body-timeout / PUSHSVC_BODY_TIMEOUT; set that instead",
    ),
    "max_waiting_per_ip": _fixed(
        "max_waiting_per_ip",
        "it is a sixteenth of --max-waiting / PUSHSVC_MAX_WAITING; set that instead",
    ),
    "max_shed_rate": _fixed(
        "max_shed_rate",
        "it is a sixteenth of --max-waiting / PUSHSVC_MAX_WAITING a second; set that instead",
    ),
    "queue_size": _fixed(
        "queue_size",
        "a stream queues 1000 runs; what bounds its memory is --max-stream-buffer / "
        "PUSHSVC_MAX_STREAM_BUFFER, set that instead",
    ),
    "redis_check": _fixed("redis_check", "Redis's memory is looked at every 5s"),
    "presence_expiry": _fixed("presence_expiry", "presence entries on Redis expire after 5s"),
    "max_priming": _fixed("max_priming", "64 new streams are primed at once"),
    "alertmanager_resend": _fixed(
        "alertmanager_resend", "a firing alert is posted again every 1m, as Prometheus does"
    ),
    "stats": _fixed(
        "stats",
        "a topic no rule matches has every statistic but rate; a rules file (--rules / "
        'PUSHSVC_RULES) chooses them per family of topics, every topic with topics = ["*"]',
    ),
    "auth_cache_size": _fixed(
        "auth_cache_size", "a process keeps the grants of 10000 credentials (and 64MiB at most)"
    ),
    "checkpoint_interval": _fixed(
        "checkpoint_interval",
        "an aggregator saves its checkpoints once a --lease / PUSHSVC_LEASE; set that instead",
    ),
    "auth_timeout": _fixed("auth_timeout", "an ask to --auth-url may take 2s, all of it"),
    "auth_max_asks": _fixed(
        "auth_max_asks", "a process has 64 asks to --auth-url waiting at once, at most"
    ),
    "auth_headers": _fixed(
        "auth_headers",
        "the Authorization header is forwarded to --auth-url, with the cookies named in "
        "--auth-cookies / PUSHSVC_AUTH_COOKIES",
    ),
    "idempotency_window": _fixed("idempotency_window", "an Idempotency-Key is remembered for 10m"),
    "outbox_poll": _fixed(
        "outbox_poll", "the outbox is read every 1s besides the NOTIFY each commit sends"
    ),
    "max_batch": _fixed("max_batch", "a request takes 10000 events"),
    "max_message": _fixed(
        "max_message",
        "it is a sixteenth of --max-body / PUSHSVC_MAX_BODY; set that instead",
    ),
    "header_timeout": _fixed(
        "header_timeout",
        "it is a third of --body-timeout / PUSHSVC_BODY_TIMEOUT; set that instead",
    ),
    "slow_client_timeout": _fixed(
        "slow_client_timeout",
        "it is --body-timeout / PUSHSVC_BODY_TIMEOUT; set that instead",
    ),
    "stream_buffer_budget": _fixed(
        "stream_buffer_budget",
        "it is 32 times --max-stream-buffer / PUSHSVC_MAX_STREAM_BUFFER; set that instead",
    ),
}
"""Settings that no longer exist, and the one line that says what replaces each."""


# Read by the tools, the demo and docker-compose.yml, not by a server: a
# shell that exports them for one must still start the other.
TOOL_VARIABLES = frozenset(
    {
        "PUSHSVC_URL",
        "PUSHSVC_TOKEN",
        "PUSHSVC_IMAGE",
        "PUSHSVC_PYTHON_IMAGE",
        "PUSHSVC_REDIS_IMAGE",
        "PUSHSVC_WEB1_PORT",
        "PUSHSVC_WEB2_PORT",
    }
)
TOOL_PREFIXES = ("PUSHSVC_DEMO_",)


def _check_variables(environ: Mapping[str, str], specs: tuple[Setting, ...]) -> None:
    """A misspelt variable must not silently leave a setting at its default (PUSHSVC_JWT_KYE
    would leave authentication off): refuse to start, naming the closest known one."""
    known = {spec.variable for spec in specs} | TOOL_VARIABLES
    for name, message in RETIRED.items():
        if f"PUSHSVC_{name.upper()}" in environ:
            raise ConfigError(message)
    for name in sorted(environ):
        if name.startswith("PUSHSVC_") and name not in known and not name.startswith(TOOL_PREFIXES):
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"unknown variable {name}{hint}")
