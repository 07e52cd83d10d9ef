"""The fan-out benchmark runs and counts correctly — never a timing threshold.

`bench/fanout.py --smoke` starts real servers and the real load generator; each row
must show every subscriber connected and every event delivered exactly once, in order.
"""

from __future__ import annotations

from typing import Any

import pytest
from bench.loadgen.cclient import compiler

from support.bench_run import json_rows, run_bench


def _smoke(server: str, *more: str, timeout: float = 120) -> list[dict[str, Any]]:
    redis = server.startswith("pushsvc-redis")
    done = run_bench(
        "fanout", "--smoke", "--servers", server, "--json", *more, timeout=timeout, redis=redis
    )
    rows = json_rows(done)
    assert done.returncode == 0, done.stderr[-3000:]
    return rows


@pytest.mark.parametrize(
    "server", ["pushsvc-memory", pytest.param("pushsvc-redis-1", marks=pytest.mark.redis)]
)
def test_fanout_smoke(server: str) -> None:
    rows = _smoke(server)
    assert [(r["server"], r["rate"]) for r in rows] == [(server, "100"), (server, "max")]
    for row in rows:
        assert row["status"] == "ok", row
        assert row["connected"] == row["subscribers"] == 20
        assert row["published"] == row["events"] == 20
        assert row["expected"] == 20 * 20
        assert row["received"] == 400
        assert (row["missing"], row["duplicates"], row["out_of_order"], row["unexpected"]) == (
            0, 0, 0, 0,
        )  # fmt: skip
        assert row["stream_errors"] == {} and row["publish_errors"] == {}
        latency = row["latency_ms"]
        assert isinstance(latency, dict) and latency["p50"] is not None
        assert isinstance(row["server_cpu_s"], float)  # CPU per delivery is reported (no threshold)


def test_fanout_smoke_json_parsing_client() -> None:
    """The subscriber that JSON-parses every update, as a browser does, counts the same
    deliveries: its CPU per delivery is what a browser-like client costs."""
    rows = _smoke("pushsvc-memory", "--client", "json", "--rate", "max")
    assert [(r["client"], r["status"], r["received"], r["missing"]) for r in rows] == [
        ("json", "ok", 400, 0)
    ]


@pytest.mark.parametrize("payload", ["plain", "stats"])
def test_fanout_smoke_nchan_peer(payload: str) -> None:
    """nginx + nchan as a peer: the load generator publishes to nchan's publisher location and
    reads its EventSource frames as it reads the others', every delivery exactly once, in
    order, and the server's CPU (nginx's master and workers) is reported. With
    `--peer-payload stats` the peer carries (and the client parses) a document as large as a
    pushsvc update."""
    rows = _smoke("nchan", "--client", "count,json", "--rate", "max", "--peer-payload", payload)
    if any(r["status"] == "skipped" for r in rows):
        pytest.skip(str(rows[0]["reason"]))
    assert [(r["server"], r["client"], r["status"]) for r in rows] == [
        ("nchan", "count", "ok"), ("nchan", "json", "ok"),
    ]  # fmt: skip
    for row in rows:
        _every_delivery_once(row)
        versions = row["versions"]
        assert isinstance(versions, dict) and versions["nginx"]
        size = row["bytes_per_delivery"]
        assert isinstance(size, int) and (size > 500 if payload == "stats" else size < 150)
        assert isinstance(row["server_cpu_s"], float)


def test_fanout_smoke_c_client() -> None:
    """The C subscribers (bench/loadgen/sse_clients.c) with a Python publisher beside them
    count the same deliveries, and the row has the publisher's figures."""
    if compiler() is None:
        pytest.skip("no C compiler (cc or gcc): the C client cannot be built")
    rows = _smoke("pushsvc-memory", "--client", "c")
    assert [(r["client"], r["rate"], r["status"]) for r in rows] == [
        ("c", "100", "ok"), ("c", "max", "ok"),
    ]  # fmt: skip
    for row in rows:
        _every_delivery_once(row)
        assert row["id_regressions"] == 0
        assert row["deliveries_per_s"] > 0 and row["latency_ms"]["p50"] is not None
        assert isinstance(row["client_cpu_us_per_delivery"], float)


def _every_delivery_once(row: dict[str, Any]) -> None:
    """20 subscribers each got the 20 events once and in order, and nothing failed."""
    assert (row["connected"], row["published"], row["received"]) == (20, 20, 400)
    assert (row["missing"], row["duplicates"], row["out_of_order"], row["unexpected"]) == (
        0, 0, 0, 0,
    )  # fmt: skip
    assert row["stream_errors"] == {} and row["publish_errors"] == {}


def test_fanout_smoke_gzip_client() -> None:
    """The subscriber that offers gzip gets every delivery exactly once, decoded, and its
    bytes per delivery are the compressed wire's: fewer than the plain subscriber's."""
    rows = _smoke("pushsvc-memory", "--client", "count,gzip", "--rate", "100")
    assert [r["client"] for r in rows] == ["count", "gzip"]
    for row in rows:
        assert row["status"] == "ok", row
        assert row["received"] == row["expected"] == 400
        assert (row["missing"], row["duplicates"], row["out_of_order"]) == (0, 0, 0)
    plain, zipped = rows
    assert zipped["bytes_per_delivery"] < plain["bytes_per_delivery"]


def test_fanout_smoke_messages_relay() -> None:
    """`--messages`: pushsvc's messages stream and the peers relay the same 100-byte message,
    read by the C subscribers, every delivery once and in order; a peer that cannot run here
    (no nginx with nchan, no PyPI for sse-starlette's venv) says so in its row."""
    if compiler() is None:
        pytest.skip("no C compiler (cc or gcc): the C client cannot be built")
    servers = "pushsvc-memory,nchan,sse-starlette,flask-sse"
    rows = _smoke(servers, "--messages", "--client", "c", "--rate", "100", timeout=300)
    assert [(r["server"], r["payload"]) for r in rows] == [
        (server, "message") for server in servers.split(",")
    ]
    assert rows[-1]["status"] == "skipped"  # Flask-SSE re-encodes what it relays
    ran = [r for r in rows[:-1] if r["status"] != "skipped"]
    assert ran[0]["server"] == "pushsvc-memory"
    for row in ran:
        _every_delivery_once(row)
        # The message and its framing: never a pushsvc update (~700 bytes).
        size = row["bytes_per_delivery"]
        assert isinstance(size, int) and 100 < size < 250, row
        assert isinstance(row["server_cpu_s"], float)


def test_fanout_smoke_mercure_hub() -> None:
    """`pushsvc-mercure`: the Mercure hub relays the same message, POSTed as an update's data
    with a publisher's token and read by anonymous subscribers matching its topic IRI; the
    Python and the C subscribers each count every delivery once and in order, and the bytes
    per delivery are the message with its Mercure framing (an `id:` of a `urn:uuid:`)."""
    clients = "count,c" if compiler() is not None else "count"
    rows = _smoke("pushsvc-mercure", "--messages", "--client", clients, "--rate", "100")
    assert [(r["server"], r["client"], r["status"]) for r in rows] == [
        ("pushsvc-mercure", client, "ok") for client in clients.split(",")
    ], rows
    for row in rows:
        _every_delivery_once(row)
        size = row["bytes_per_delivery"]
        assert isinstance(size, int) and 100 + len("id: urn:uuid:") + 36 < size < 250, row
        assert isinstance(row["server_cpu_s"], float)
