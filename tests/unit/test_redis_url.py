"""The Redis URL setting for a Redis Cluster (pure): which forms are accepted, what each one
names, and a password kept out of what is logged."""

from __future__ import annotations

import pytest

from pushsvc.broker.redis.url import (
    ClusterUrl,
    check_redis_url,
    cluster_credentials,
    is_cluster,
    is_tls,
    parse_cluster_url,
    redact_url,
)


def test_a_cluster_url_names_its_seeds_with_the_default_port() -> None:
    url = "redis+cluster://r1:7000,r2,10.0.0.3:7002"
    assert check_redis_url(url) == url and is_cluster(url) and not is_tls(url)
    assert parse_cluster_url(url) == ClusterUrl((("r1", 7000), ("r2", 6379), ("10.0.0.3", 7002)))


def test_a_tls_cluster_url_with_credentials() -> None:
    url = "rediss+cluster://app:s3cret@r1:7000"
    assert is_cluster(url) and is_tls(url)
    assert parse_cluster_url(url) == ClusterUrl((("r1", 7000),), True, "app", "s3cret")
    assert cluster_credentials(url) == {"username": "app", "password": "s3cret"}
    assert "s3cret" not in (redact_url(url) or "")


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+cluster://r1:7000/0", "seed nodes only"),
        ("redis+cluster://r1:7000?timeout=1", "seed nodes only"),
        ("redis+cluster://r1:notaport", "is not host:port"),
        ("redis+cluster://r1:70000", "is not host:port"),
        ("redis+clusters://r1:7000", "is not a redis://"),
    ],
)
def test_a_bad_cluster_url_is_refused_naming_what_is_wrong(url: str, says: str) -> None:
    with pytest.raises(ValueError, match=says) as refused:
        check_redis_url(url)
    assert "\n" not in str(refused.value)
