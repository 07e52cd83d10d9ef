"""deploy/nginx.conf in front of a real pushsvc: a real nginx (Debian's package) on free ports
with a self-signed certificate, spoken to over TLS (HTTP/1.1 from Python, HTTP/2 from curl).

Clients connect from distinct loopback addresses (127.0.0.x), so that pushsvc's per-address
limits, which see them through X-Forwarded-For, tell them apart.
"""

from __future__ import annotations

import http.client
import itertools
import json
import re
import shutil
import ssl
import statistics
import subprocess
import time
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from harness.live import PushsvcProcess, post, request, wait_until
from harness.net import free_port
from harness.sse_parser import EventStreamParser, SSEMessage

from pushsvc.core.durations import parse_duration_us
from support.nginx import NGINX, Nginx, render

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "deploy" / "nginx.conf"
CURL = shutil.which("curl")
HEARTBEAT_DEFAULT_S = 15.0
MAX_BODY_DEFAULT = 1 << 20  # PUSHSVC_MAX_BODY's default, which the test server keeps
HEARTBEAT_S = 0.5  # the test server's: short, to watch heartbeats pass through
MAX_STREAMS_PER_IP = 2

pytestmark = pytest.mark.skipif(NGINX is None, reason="nginx is not installed (apt install nginx)")


@dataclass
class Proxy:
    """The running pair: pushsvc behind nginx."""

    nginx: Nginx
    server: PushsvcProcess
    cert: Path
    http: int
    site: str

    @property
    def https(self) -> int:
        return self.nginx.https

    def connection(self, source: str = "127.0.0.1") -> http.client.HTTPSConnection:
        """An HTTPS connection to nginx from `source`, verifying its certificate."""
        context = ssl.create_default_context(cafile=str(self.cert))
        return http.client.HTTPSConnection(
            "127.0.0.1", self.https, context=context, source_address=(source, 0), timeout=10
        )


def _certificate(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
            "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    directory = tmp_path_factory.mktemp("nginx")
    cert, key = _certificate(directory)
    server = PushsvcProcess(
        "serve", "--tick", "0", "--heartbeat", f"{HEARTBEAT_S}s",
        env={
            "PUSHSVC_TRUSTED_PROXIES": "1",
            "PUSHSVC_MAX_STREAMS_PER_IP": str(MAX_STREAMS_PER_IP),
        },
    ).start()  # fmt: skip
    https, http = free_port(), free_port()
    site = render(
        CONF.read_text(), https=https, http=http, upstream=server.port, cert=cert, key=key
    )
    nginx = Nginx(directory / "prefix", site, https)
    try:
        nginx.start()
        yield Proxy(nginx, server, cert, http, site)
    finally:
        nginx.stop()
        server.stop()


class Stream:
    """An SSE stream through nginx over HTTPS, read as it arrives (like SSEClient)."""

    def __init__(
        self, proxy: Proxy, path: str, *, source: str, headers: dict[str, str] | None = None
    ) -> None:
        self.conn = proxy.connection(source)
        self.conn.request("GET", path, headers={"Accept": "text/event-stream", **(headers or {})})
        self.sock = self.conn.sock
        self.resp = self.conn.getresponse()
        self.status = self.resp.status
        self.body = b"" if self.status == 200 else self.resp.read()
        self.parser = EventStreamParser()
        self.pending: list[SSEMessage] = []
        self.comment_times: list[float] = []  # when each comment (heartbeat) arrived

    def _read(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("nothing arrived in time")
        self.sock.settimeout(remaining)
        try:
            chunk = self.resp.read1(65536)
        except TimeoutError:
            raise TimeoutError("nothing arrived in time") from None
        if not chunk:
            raise EOFError("stream ended")
        comments = len(self.parser.comments)
        self.pending.extend(self.parser.feed(chunk))
        now = time.monotonic()
        self.comment_times += [now] * (len(self.parser.comments) - comments)

    def next(self, timeout: float = 10) -> SSEMessage:
        deadline = time.monotonic() + timeout
        while not self.pending:
            self._read(deadline)
        return self.pending.pop(0)

    def next_data(self, event: str = "stats", timeout: float = 10) -> tuple[str, Any]:
        while True:
            message = self.next(timeout)
            if message.event == event:
                return message.id, json.loads(message.data)

    def wait_for_comments(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.comment_times) < count:
            self._read(deadline)

    def close(self) -> None:
        self.resp.close()
        self.conn.close()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _post(conn: http.client.HTTPSConnection, topic: str, event: object) -> int:
    conn.request(
        "POST", f"/topics/{topic}/events", body=json.dumps(event),
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    response = conn.getresponse()
    response.read()
    return response.status


@pytest.fixture
def topic() -> str:
    return f"n-{uuid.uuid4().hex[:12]}"


def _subscribers(server: PushsvcProcess, topic: str) -> int:
    """This topic's subscriber count, asked of pushsvc directly."""
    _, _, body = request(server.port, "GET", "/topics")
    return sum(t["subscribers"] for t in json.loads(body)["topics"] if t["topic"] == topic)


# ---------------------------------------------------------------- the file itself


def _location(conf: str, opening: str) -> str:
    start = conf.index(opening)
    return conf[start : conf.index("\n    }", start)]


def _size(text: str) -> int:
    """An nginx size (`2m`, `512k`, `1048576`) in bytes."""
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    unit = text[-1].lower()
    return int(text[:-1]) * units[unit] if unit in units else int(text)


def _directive(block: str, name: str) -> str:
    match = re.search(rf"^\s*{name}\s+([^;]+);", block, re.MULTILINE)
    assert match, f"no {name} in {block!r}"
    return match[1].strip()


def test_streams_are_unbuffered_and_outlive_the_heartbeat_in_the_config() -> None:
    streams = _location(CONF.read_text(), "location ~ ^/(stream|topics/[^/]+/stream)$")
    assert _directive(streams, "proxy_buffering") == "off"
    assert _directive(streams, "proxy_cache") == "off"
    for timeout in ("proxy_read_timeout", "send_timeout"):
        seconds = parse_duration_us(_directive(streams, timeout)) / 1e6
        assert seconds > 2 * HEARTBEAT_DEFAULT_S, timeout  # a missed heartbeat is not the end
    server = CONF.read_text()
    assert _directive(server, "proxy_http_version") == "1.1"
    assert _directive(server, "proxy_set_header X-Forwarded-For") == "$proxy_add_x_forwarded_for"


def test_nginx_lets_a_body_over_max_body_through_to_pushsvc_in_the_config() -> None:
    # At pushsvc's own limit nginx would answer first, with an HTML 413.
    assert _size(_directive(CONF.read_text(), "client_max_body_size")) > MAX_BODY_DEFAULT


# ---------------------------------------------------------------- through a real nginx


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_body_just_over_max_body_gets_pushsvcs_json_413_through_nginx(
    proxy: Proxy, topic: str, framing: str
) -> None:
    line = b'{"value": 1}\n'
    body = line * (MAX_BODY_DEFAULT // len(line) + 1)
    assert MAX_BODY_DEFAULT < len(body) < MAX_BODY_DEFAULT + len(line) + 1
    conn = proxy.connection()
    headers = {"Content-Type": "application/x-ndjson"}
    if framing == "chunked":
        chunks = (body[at : at + 65536] for at in range(0, len(body), 65536))
        conn.request("POST", f"/topics/{topic}/events", chunks, headers, encode_chunked=True)
    else:
        conn.request("POST", f"/topics/{topic}/events", body, headers)
    response = conn.getresponse()
    answer = response.read()
    conn.close()
    assert response.status == 413
    assert response.getheader("Content-Type") == "application/json", answer[:200]
    error = json.loads(answer)["error"]
    assert error["code"] == "payload_too_large"
    assert str(MAX_BODY_DEFAULT) in error["message"]
    assert request(proxy.server.port, "GET", f"/topics/{topic}/stats")[0] == 404  # nothing taken


def test_plain_http_redirects_to_https(proxy: Proxy) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", proxy.http, timeout=10)
    conn.request("GET", "/topics/orders/stream")
    response = conn.getresponse()
    assert response.status == 301
    assert response.getheader("Location", "").startswith("https://")
    conn.close()


def test_updates_pass_through_nginx_as_they_are_written(proxy: Proxy, topic: str) -> None:
    """20 updates at 20/s: each is on the stream before the next is posted. A buffering proxy
    holds an update (~700 bytes) until its buffer fills, which here would be never."""
    source = "127.0.0.11"
    publisher = proxy.connection(source)
    latencies = []
    with Stream(proxy, f"/topics/{topic}/stream", source=source) as stream:
        assert stream.status == 200
        assert stream.resp.getheader("Content-Type", "").startswith("text/event-stream")
        stream.next_data("snapshot")
        start = time.monotonic()
        for i in range(20):
            time.sleep(max(0.0, start + i / 20 - time.monotonic()))  # the pace: 20 per second
            sent = time.monotonic()
            assert _post(publisher, topic, {"value": i}) == 202
            _, update = stream.next_data("stats", timeout=2)
            latencies.append(time.monotonic() - sent)
            assert update["event"]["value"] == i
    publisher.close()
    print(
        f"\npublish -> receive through nginx (ms): median {statistics.median(latencies) * 1e3:.1f}"
        f", max {max(latencies) * 1e3:.1f}, all {[round(x * 1e3, 1) for x in latencies]}"
    )
    assert max(latencies) < 1.0  # generous: buffering would mean never


def test_the_latency_check_catches_a_buffering_proxy(proxy: Proxy, topic: str) -> None:
    """The check above is not vacuous: the same nginx told to buffer (and to ignore pushsvc's
    X-Accel-Buffering: no) holds the update back."""
    buffering = proxy.site.replace(
        "        proxy_buffering off;\n",
        "        proxy_buffering on;\n        proxy_ignore_headers X-Accel-Buffering;\n",
    )
    assert buffering != proxy.site
    https = free_port()
    buffering = re.sub(r"listen 127\.0\.0\.1:\d+ ssl", f"listen 127.0.0.1:{https} ssl", buffering)
    buffering = re.sub(r"listen 127\.0\.0\.1:\d+;", f"listen 127.0.0.1:{free_port()};", buffering)
    buffering = buffering.replace("shared:pushsvc_tls:", "shared:pushsvc_tls_b:")
    nginx = Nginx(proxy.nginx.dir.parent / "buffering", buffering, https).start()
    conn = http.client.HTTPSConnection("127.0.0.1")  # replaced below; closed in any case
    try:
        other = Proxy(nginx, proxy.server, proxy.cert, 0, buffering)
        assert post(proxy.server.port, topic, {"value": 0})[0] == 202  # /topics lists it now
        conn = other.connection("127.0.0.19")
        conn.request("GET", f"/topics/{topic}/stream")
        wait_until(lambda: _subscribers(proxy.server, topic) == 1)
        publisher = other.connection("127.0.0.19")
        assert _post(publisher, topic, {"value": 1}) == 202
        publisher.close()
        assert conn.sock is not None
        conn.sock.settimeout(2)  # per read: nothing at all comes (nginx holds even the headers)

        def until_the_update() -> None:
            response, parser = conn.getresponse(), EventStreamParser()
            while not any(m.event == "stats" for m in parser.feed(response.read1(65536))):
                pass

        with pytest.raises(TimeoutError):
            until_the_update()
    finally:
        conn.close()
        nginx.stop()


def test_a_stream_resumes_through_nginx_with_last_event_id(proxy: Proxy, topic: str) -> None:
    source = "127.0.0.12"
    publisher = proxy.connection(source)
    path = f"/topics/{topic}/stream"
    with Stream(proxy, path, source=source) as stream:
        stream.next_data("snapshot")
        for value in range(5):
            assert _post(publisher, topic, {"value": value}) == 202
        seen = [stream.next_data("stats") for _ in range(2)]
    last_id = seen[-1][0]
    for value in range(5, 7):  # posted while the client is away
        assert _post(publisher, topic, {"value": value}) == 202
    with Stream(proxy, path, source=source, headers={"Last-Event-ID": last_id}) as stream:
        replayed = [stream.next_data("stats") for _ in range(5)]
        assert [u["event"]["value"] for _, u in replayed] == [2, 3, 4, 5, 6]
        assert _post(publisher, topic, {"value": 7}) == 202
        update_id, update = stream.next_data("stats")
        assert update["event"]["value"] == 7
        ids = [last_id, *(i for i, _ in replayed), update_id]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)  # no gap, no duplicate
    publisher.close()


@pytest.mark.skipif(CURL is None, reason="curl is not installed (apt install curl)")
def test_http2_carries_several_streams_on_one_connection(
    proxy: Proxy, topic: str, tmp_path: Path
) -> None:
    assert CURL is not None
    base = f"https://127.0.0.1:{proxy.https}"
    outputs = [tmp_path / "a.sse", tmp_path / "b.sse"]
    curl = subprocess.Popen(
        [
            CURL, "--http2", "--cacert", str(proxy.cert), "--interface", "127.0.0.13",
            "--parallel", "--no-progress-meter", "--no-buffer", "--max-time", "4",
            "--write-out", "%{http_version} %{num_connects} %{response_code}\\n",
            "-o", str(outputs[0]), f"{base}/topics/{topic}/stream",
            "-o", str(outputs[1]), f"{base}/stream?topic={topic}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )  # fmt: skip
    try:
        wait_until(lambda: all(p.exists() and b"snapshot" in p.read_bytes() for p in outputs))
        publisher = proxy.connection("127.0.0.13")
        assert _post(publisher, topic, {"value": 42}) == 202
        publisher.close()
        wait_until(lambda: all(b'"value":42' in p.read_bytes() for p in outputs))
    finally:
        # At --max-time both transfers end and curl reports them (--write-out); it says
        # nothing when killed.
        out, _ = curl.communicate(timeout=30)
    assert curl.returncode == 28, out  # "operation timed out": the streams were still open
    transfers = sorted(line.split() for line in out.splitlines())
    # Both over HTTP/2, one connection made for the two of them.
    assert transfers == [["2", "0", "200"], ["2", "1", "200"]], out


def test_per_address_stream_limits_see_the_client_behind_nginx(proxy: Proxy, topic: str) -> None:
    path = f"/topics/{topic}/stream"
    opened = [Stream(proxy, path, source="127.0.0.14") for _ in range(MAX_STREAMS_PER_IP)]
    try:
        assert [s.status for s in opened] == [200] * MAX_STREAMS_PER_IP
        with Stream(proxy, path, source="127.0.0.14") as over:
            assert over.status == 429
            assert json.loads(over.body)["error"]["code"]
        # A forged X-Forwarded-For is not believed: nginx appends the real address, and only
        # that last hop is trusted.
        forged = {"X-Forwarded-For": "127.0.0.99"}
        with Stream(proxy, path, source="127.0.0.14", headers=forged) as over:
            assert over.status == 429
        # Another client behind the same nginx has streams of its own: the limit is per client,
        # not per proxy.
        with Stream(proxy, path, source="127.0.0.15") as other:
            assert other.status == 200
    finally:
        for stream in opened:
            stream.close()


def test_heartbeats_pass_through_nginx_one_by_one(proxy: Proxy, topic: str) -> None:
    """An idle stream gets each heartbeat comment when pushsvc writes it (here every 0.5 s):
    what keeps a real stream open past nginx's read timeout (see the config test above)."""
    with Stream(proxy, f"/topics/{topic}/stream", source="127.0.0.16") as stream:
        stream.next_data("snapshot")
        stream.wait_for_comments(4, timeout=10 * HEARTBEAT_S)
        times = stream.comment_times
        # Separately, not held back and released together: each in a read of its own, and
        # spread over the three heartbeats between them. Not each gap near one heartbeat: on
        # a loaded machine one comment read late makes the next gap short (0.17 s seen).
        assert all(b > a for a, b in itertools.pairwise(times)), times
        assert times[-1] - times[0] > 2 * HEARTBEAT_S, times


def test_a_stream_is_released_when_its_client_leaves_nginx(tmp_path: Path, topic: str) -> None:
    """nginx closes its upstream connection when its client's closes, and pushsvc ends the
    stream on that alone: a 60 s heartbeat and nothing published, so nothing is written."""
    cert, key = _certificate(tmp_path)
    server = PushsvcProcess(
        "serve", "--tick", "0", "--heartbeat", "60s", env={"PUSHSVC_TRUSTED_PROXIES": "1"}
    ).start()
    https, http = free_port(), free_port()
    site = render(
        CONF.read_text(), https=https, http=http, upstream=server.port, cert=cert, key=key
    )
    nginx = Nginx(tmp_path / "prefix", site, https)
    try:
        nginx.start()
        proxy = Proxy(nginx, server, cert, http, site)

        def subscribers() -> int:
            text = request(server.port, "GET", "/metrics")[2].decode()
            match = re.search(r"^pushsvc_subscribers (\S+)$", text, re.MULTILINE)
            assert match
            return int(float(match[1]))

        stays = Stream(proxy, f"/topics/{topic}/stream", source="127.0.0.17")
        leaves = Stream(proxy, f"/topics/{topic}/stream", source="127.0.0.17")
        try:
            for stream in (stays, leaves):
                stream.next_data("snapshot")
            assert subscribers() == 2
            leaves.close()
            wait_until(lambda: subscribers() == 1, 5)
        finally:
            stays.close()
            leaves.close()
    finally:
        nginx.stop()
        server.stop()


def test_gzip_streams_pass_through_nginx_compressed_and_unbuffered(
    proxy: Proxy, topic: str
) -> None:
    """nginx passes the client's Accept-Encoding to pushsvc and its gzip stream back as it
    is (its own `gzip` is off for streams, and it never compresses a response that is
    already): each update decodes at the client before the next is posted."""
    source = "127.0.0.14"
    publisher = proxy.connection(source)
    stream = Stream(proxy, f"/topics/{topic}/stream", source=source,
                    headers={"Accept-Encoding": "gzip, deflate, br"})  # fmt: skip
    assert stream.status == 200
    assert stream.resp.getheader("Content-Encoding") == "gzip"
    assert stream.resp.getheader("Vary") == "Accept-Encoding"
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
    feed = stream.parser.feed
    stream.parser.feed = lambda chunk: feed(inflate.decompress(chunk))  # type: ignore[method-assign]
    stream.next_data("snapshot")
    for i in range(10):
        assert _post(publisher, topic, {"value": i}) == 202
        _, update = stream.next_data("stats", timeout=2)
        assert update["event"]["value"] == i
    stream.close()
    publisher.close()
