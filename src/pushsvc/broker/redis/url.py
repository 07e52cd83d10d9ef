"""The Redis URL setting (pure): which forms are accepted, the Sentinel form parsed, and the
password kept out of logs.

`redis://`, `rediss://` and `unix://` are redis-py's own. For high availability,
`redis+sentinel://[[user]:password@]host:port[,host:port...]/service[/db][?sentinel_password=…]`
names the sentinels to ask for the current primary of `service` (port 26379 by default); the
password is the primary's, `sentinel_password` the sentinels' own when they require one.
To grow past one primary, `redis+cluster://[[user]:password@]host:port[,host:port...]` (TLS:
`rediss+cluster://`) names seed nodes of a Redis Cluster (port 6379 by default); the client
learns the rest of the cluster from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

PLAIN_SCHEMES = ("redis", "rediss", "unix")
SENTINEL_SCHEME = "redis+sentinel"
SENTINEL_PORT = 26379
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
CLUSTER_PORT = 6379


@dataclass(frozen=True)
class SentinelUrl:
    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None


@dataclass(frozen=True)
class ClusterUrl:
    seeds: tuple[tuple[str, int], ...]
    tls: bool = False
    username: str | None = None
    password: str | None = None


def is_sentinel(url: str) -> bool:
    return url.startswith(SENTINEL_SCHEME + "://")


def is_cluster(url: str) -> bool:
    return url.startswith(tuple(scheme + "://" for scheme in CLUSTER_SCHEMES))


def check_redis_url(url: str) -> str:
    """`url` if pushsvc can connect with it; ValueError saying what is wrong otherwise."""
    if is_sentinel(url):
        parse_sentinel_url(url)
    elif is_cluster(url):
        parse_cluster_url(url)
    elif urlsplit(url).scheme not in PLAIN_SCHEMES:
        raise ValueError(
            f"{redact_url(url)!r} is not a redis://, rediss://, unix://, {SENTINEL_SCHEME}:// "
            "or redis+cluster:// URL"
        )
    return url


def is_tls(url: str) -> bool:
    return urlsplit(url).scheme in ("rediss", "rediss+cluster")


def cluster_credentials(url: str) -> dict[str, str]:
    """The username and password of a cluster URL, as connection options."""
    parsed = parse_cluster_url(url)
    found = {"username": parsed.username, "password": parsed.password}
    return {name: value for name, value in found.items() if value is not None}


def parse_cluster_url(url: str) -> ClusterUrl:
    parts = urlsplit(url)
    if parts.scheme not in CLUSTER_SCHEMES:
        raise ValueError(f"{redact_url(url)!r} is not a redis+cluster:// URL")
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    username, password = _credentials(userinfo)
    seeds = tuple(_host_port(item, url, CLUSTER_PORT) for item in hostinfo.split(","))
    if parts.path.strip("/") or parts.query:
        raise ValueError(
            f"{redact_url(url)!r}: a cluster URL names seed nodes only (a cluster has one "
            "database and takes no options), e.g. redis+cluster://h1:6379,h2:6379"
        )
    return ClusterUrl(seeds, parts.scheme == "rediss+cluster", username, password)


def parse_sentinel_url(url: str) -> SentinelUrl:
    parts = urlsplit(url)
    if parts.scheme != SENTINEL_SCHEME:
        raise ValueError(f"{redact_url(url)!r} is not a {SENTINEL_SCHEME}:// URL")
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    username, password = _credentials(userinfo)
    sentinels = tuple(_host_port(item, url) for item in hostinfo.split(","))
    path = [unquote(p) for p in parts.path.split("/") if p]
    if not 1 <= len(path) <= 2:
        raise ValueError(
            f"{redact_url(url)!r}: give the service name after the hosts, e.g. "
            f"{SENTINEL_SCHEME}://h1:26379,h2:26379/mymaster/0"
        )
    if len(path) == 2 and not path[1].isdigit():
        raise ValueError(f"{redact_url(url)!r}: the database must be a number")
    query = parse_qs(parts.query)
    unknown = set(query) - {"sentinel_password"}
    if unknown:
        raise ValueError(f"{redact_url(url)!r}: unknown option(s) {', '.join(sorted(unknown))}")
    return SentinelUrl(
        sentinels=sentinels,
        service=path[0],
        db=int(path[1]) if len(path) == 2 else 0,
        username=username,
        password=password,
        sentinel_password=query["sentinel_password"][0] if "sentinel_password" in query else None,
    )


def redact_url(url: str | None) -> str | None:
    """The URL with any password replaced, for logs (every accepted form, several hosts too)."""
    if not url:
        return url
    parts = urlsplit(url)
    userinfo, at, hostinfo = parts.netloc.rpartition("@")
    if at and ":" in userinfo:
        user = userinfo.split(":", 1)[0]
        parts = parts._replace(netloc=f"{user}:***@{hostinfo}")
    if "sentinel_password=" in parts.query:
        query = "&".join(
            "sentinel_password=***" if item.startswith("sentinel_password=") else item
            for item in parts.query.split("&")
        )
        parts = parts._replace(query=query)
    return parts.geturl()


def _credentials(userinfo: str) -> tuple[str | None, str | None]:
    if not userinfo:
        return None, None
    user, colon, password = userinfo.partition(":")
    return (unquote(user) or None), (unquote(password) if colon else None)


def _host_port(item: str, url: str, default_port: int = SENTINEL_PORT) -> tuple[str, int]:
    host, colon, port = item.strip().rpartition(":")
    if not colon:
        host, port = item.strip(), str(default_port)
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{redact_url(url)!r}: {item!r} is not host:port")
    return host, int(port)
