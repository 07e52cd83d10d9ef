"""Settings: read once from `PUSHSVC_*` variables and CLI flags (a flag wins), validated early."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pushsvc.errors import ConfigError

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


def redact_url(url: str | None) -> str | None:
    """The URL with any password replaced, for logs."""
    if not url:
        return url
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _windows(text: str) -> tuple[int, ...]:
    widths = [parse_duration_us(part) for part in text.split(",") if part.strip()]
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


def _non_negative_duration(text: str) -> int:
    return parse_duration_us(text)


def _positive_duration(text: str) -> int:
    value = parse_duration_us(text)
    if value <= 0:
        raise ValueError(f"{text!r} must be longer than 0")
    return value


def _redis_url(text: str) -> str | None:
    if not text:
        return None
    if urlsplit(text).scheme not in ("redis", "rediss", "unix"):
        raise ValueError(f"{redact_url(text)!r} is not a redis://, rediss:// or unix:// URL")
    return text


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
    chosen = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [part for part in chosen if part not in STAT_KEYS]
    if unknown or not chosen:
        raise ValueError(f"{text!r}: choose from {', '.join(STAT_KEYS)} (or all)")
    return tuple(k for k in STAT_KEYS if k in chosen)


def _data_dir(text: str) -> str | None:
    if not text:
        return None
    path = os.path.abspath(os.path.expanduser(text))
    os.makedirs(path, exist_ok=True)
    if not os.access(path, os.W_OK):
        raise ValueError(f"{text!r} is not a writable directory")
    return path


def _origins(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _setting(default: str, parse: Any, *, secret: bool = False) -> Any:
    return field(default=None, metadata={"default": default, "parse": parse, "secret": secret})


@dataclass(frozen=True)
class Settings:
    """Every setting, parsed. Field `x` comes from flag `--x` or variable `PUSHSVC_X`.

    Durations (windows, tick, allowed_lateness, heartbeat, retry, slow_client_timeout, lease)
    are integer microseconds.
    """

    host: str = _setting("127.0.0.1", str)
    port: int = _setting("8000", _port)
    redis_url: str | None = _setting("", _redis_url, secret=True)
    prefix: str = _setting("pushsvc:", _prefix)
    windows: tuple[int, ...] = _setting("10s,1m,5m", _windows)
    stats: tuple[str, ...] = _setting("all", _stats)
    tick: int = _setting("1s", _non_negative_duration)
    allowed_lateness: int = _setting("5s", _non_negative_duration)
    history: int = _setting("10000", _positive_int)
    heartbeat: int = _setting("15s", _positive_duration)
    retry: int = _setting("3s", _positive_duration)
    max_body: int = _setting("1048576", _positive_int)
    max_batch: int = _setting("10000", _positive_int)
    queue_size: int = _setting("1000", _positive_int)
    slow_client_timeout: int = _setting("30s", _positive_duration)
    shard: tuple[int, int] = _setting("0/1", _shard)
    lease: int = _setting("5s", _positive_duration)
    cors_origins: tuple[str, ...] = _setting("", _origins)
    workers: int = _setting("1", _positive_int)
    data_dir: str | None = _setting("", _data_dir)

    @property
    def window_labels(self) -> tuple[str, ...]:
        return tuple(duration_label(w) for w in self.windows)

    @classmethod
    def load(
        cls,
        overrides: Mapping[str, object] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Settings:
        """Flags (`overrides`, by field name; None means not given) win over `PUSHSVC_*` variables.

        Raises ConfigError naming the setting, its flag and its variable.
        """
        environ = os.environ if environ is None else environ
        overrides = dict(overrides or {})
        unknown = set(overrides) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        values: dict[str, Any] = {}
        for spec in fields(cls):
            variable = f"PUSHSVC_{spec.name.upper()}"
            given = overrides.get(spec.name)
            if given is not None and not isinstance(given, str):
                values[spec.name] = given  # already typed (tests, create_app mappings)
                continue
            raw = given if given is not None else environ.get(variable, spec.metadata["default"])
            try:
                values[spec.name] = spec.metadata["parse"](raw)
            except ValueError as exc:
                flag = "--" + spec.name.replace("_", "-")
                raise ConfigError(f"invalid {flag} / {variable}: {exc}") from None
        return cls(**values)

    def redacted(self) -> dict[str, object]:
        """Settings as a dict for logs, secrets hidden."""
        out: dict[str, object] = {}
        for spec in fields(self):
            value = getattr(self, spec.name)
            out[spec.name] = redact_url(value) if spec.metadata["secret"] else value
        return out
