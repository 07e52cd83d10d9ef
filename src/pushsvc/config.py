"""Settings: read once from `PUSHSVC_*` variables and CLI flags (a flag wins), validated early."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar, cast

from pushsvc.errors import ConfigError
from pushsvc.lists import choose, comma_list
from pushsvc.redis_url import check_redis_url, redact_url

T = TypeVar("T")

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(us|ms|s|m|h)?")
_UNIT_US = {"us": 1, "ms": 1_000, "s": 1_000_000, "m": 60_000_000, "h": 3_600_000_000}


def parse_duration_us(text: str) -> int:
    """`500ms`, `10s`, `1m`, `1h`, `0`; a bare number means seconds."""
    match = _DURATION.fullmatch(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a duration (use e.g. 500ms, 10s, 1m, 1h)")
    number, unit = match.groups()
    return round(float(number) * _UNIT_US[unit or "s"])


def duration_label(us: int) -> str:
    """The shortest exact label: 10000000 → '10s', 60000000 → '1m', 1500000 → '1500ms'."""
    for unit in ("h", "m", "s", "ms"):
        if us % _UNIT_US[unit] == 0:
            return f"{us // _UNIT_US[unit]}{unit}"
    return f"{us}us"


def _windows(text: str) -> tuple[int, ...]:
    widths = [parse_duration_us(part) for part in comma_list(text)]
    if not widths:
        raise ValueError("at least one window is required")
    if any(w <= 0 for w in widths):
        raise ValueError("windows must be longer than 0")
    if len(set(widths)) != len(widths):
        raise ValueError("windows must be distinct")
    return tuple(sorted(widths))


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError(f"{text!r} must be a positive integer")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError(f"{text!r} is not a TCP port")
    return value


def _positive_duration(text: str) -> int:
    value = parse_duration_us(text)
    if value <= 0:
        raise ValueError(f"{text!r} must be longer than 0")
    return value


def _redis_url(text: str) -> str | None:
    return check_redis_url(text) if text else None


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(f"{text!r} must be 0 or more")
    return value


def _shard(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)/(\d+)", text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a shard (use i/N, e.g. 0/2)")
    index, count = int(match[1]), int(match[2])
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"{text!r}: need 0 <= i < N")
    return index, count


def _prefix(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9._:-]{0,64}", text):
        raise ValueError(f"{text!r} may hold only letters, digits and ._:-")
    return text


def _stats(text: str) -> tuple[str, ...]:
    # Imported here: the stats package is heavier than settings parsing needs to be.
    from pushsvc.stats import STAT_KEYS

    if text.strip() == "all":
        return STAT_KEYS
    try:
        return choose(text, STAT_KEYS)
    except ValueError as exc:
        raise ValueError(f"{exc} (or all)") from None


def _data_dir(text: str) -> str | None:
    if not text:
        return None
    path = os.path.abspath(os.path.expanduser(text))
    os.makedirs(path, exist_ok=True)
    if not os.access(path, os.W_OK):
        raise ValueError(f"{text!r} is not a writable directory")
    return path


def setting(
    default: str, parse: Callable[[str], T], *, name: str | None = None, secret: bool = False
) -> T:
    """A Settings field read from flag `--name` / variable `PUSHSVC_NAME` (`name` defaults to the
    field's; fields in units say so, e.g. `tick_us` is `--tick 1s`), typed as `parse` returns."""
    metadata = {"default": default, "parse": parse, "name": name, "secret": secret}
    return cast(T, field(default=None, metadata=metadata))


@dataclass(frozen=True)
class Setting:
    """How one field is given: its name (the flag's and the variable's), default, parser."""

    field: str
    name: str
    default: str
    parse: Callable[[str], object]
    secret: bool

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def variable(self) -> str:
        return f"PUSHSVC_{self.name.upper()}"


@dataclass(frozen=True)
class Settings:
    """Every setting, parsed. Durations are integer microseconds (`*_us`), given as `10s`."""

    host: str = setting("127.0.0.1", str)
    port: int = setting("8000", _port)
    redis_url: str | None = setting("", _redis_url, secret=True)
    redis_min_replicas: int = setting("0", _non_negative_int)
    prefix: str = setting("pushsvc:", _prefix)
    windows_us: tuple[int, ...] = setting("10s,1m,5m", _windows, name="windows")
    stats: tuple[str, ...] = setting("all", _stats)
    tick_us: int = setting("1s", parse_duration_us, name="tick")
    allowed_lateness_us: int = setting("5s", parse_duration_us, name="allowed_lateness")
    history: int = setting("10000", _positive_int)
    heartbeat_us: int = setting("15s", _positive_duration, name="heartbeat")
    retry_us: int = setting("3s", _positive_duration, name="retry")
    max_body_bytes: int = setting("1048576", _positive_int, name="max_body")
    max_batch: int = setting("10000", _positive_int)
    queue_size: int = setting("1000", _positive_int)
    slow_client_timeout_us: int = setting("30s", _positive_duration, name="slow_client_timeout")
    shard: tuple[int, int] = setting("0/1", _shard)
    lease_us: int = setting("5s", _positive_duration, name="lease")
    cors_origins: tuple[str, ...] = setting("", comma_list)
    workers: int = setting("1", _positive_int)
    data_dir: str | None = setting("", _data_dir)

    @property
    def window_labels(self) -> tuple[str, ...]:
        return tuple(duration_label(w) for w in self.windows_us)

    @classmethod
    def specs(cls) -> tuple[Setting, ...]:
        return tuple(
            Setting(
                field=spec.name,
                name=spec.metadata["name"] or spec.name,
                default=spec.metadata["default"],
                parse=spec.metadata["parse"],
                secret=spec.metadata["secret"],
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
        overrides = dict(overrides or {})
        specs = cls.specs()
        unknown = set(overrides) - {spec.name for spec in specs}
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        values: dict[str, Any] = {}
        for spec in specs:
            given = overrides.get(spec.name)
            if given is not None and not isinstance(given, str):
                values[spec.field] = given
                continue
            raw = given if given is not None else environ.get(spec.variable, spec.default)
            try:
                values[spec.field] = spec.parse(raw)
            except ValueError as exc:
                raise ConfigError(f"invalid {spec.flag} / {spec.variable}: {exc}") from None
        return cls(**values)

    def redacted(self) -> dict[str, object]:
        """Settings by name for logs, secrets hidden."""
        out: dict[str, object] = {}
        for spec in self.specs():
            value = getattr(self, spec.field)
            out[spec.name] = redact_url(value) if spec.secret else value
        return out
