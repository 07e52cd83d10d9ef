"""Setting security up: keys refused when weak or misplaced, misspelt variables refused at
start-up, secrets never printed, and `pushsvc token` with the tools that carry tokens."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
from harness.live import PushsvcProcess, SSEClient, run_tool, start_tool

from conftest import MakeApp
from pushsvc.config import Settings
from pushsvc.errors import ConfigError
from pushsvc.security.tokens import NOT_A_JWT, Verifier, load_key
from support.auth_tokens import OTHER_SECRET, SECRET, hs256, remember, write_keypair

# ---------------------------------------------------------------------------- keys


@pytest.mark.parametrize(
    ("key", "says"),
    [
        ("short", "at least 32 bytes"),
        ("-----BEGIN PUBLIC KEY-----" + "A" * 40, "@PATH"),
        ("@/nonexistent/key.pem", "cannot read"),
    ],
)
def test_weak_or_misplaced_keys_are_refused(key: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says) as refused:
        Settings.load({}, {"PUSHSVC_JWT_KEY": key})
    assert "PUSHSVC_JWT_KEY" in str(refused.value)


def test_a_private_key_file_is_refused_as_the_verification_key(tmp_path: Path) -> None:
    private, public = write_keypair(tmp_path, "rsa")
    with pytest.raises(ValueError, match="public half"):
        load_key(f"@{private}")
    assert load_key(f"@{public}").algorithm == "RS256"


def test_the_secret_never_appears_in_the_settings_a_server_logs() -> None:
    settings = Settings.load({}, {"PUSHSVC_JWT_KEY": SECRET})
    assert SECRET not in repr(settings.redacted())
    assert SECRET not in repr(settings)


# ---------------------------------------------------------------------------- variables


def test_a_misspelt_variable_is_refused_naming_the_right_one() -> None:
    with pytest.raises(ConfigError, match=r"PUSHSVC_JWT_KYE.*did you mean PUSHSVC_JWT_KEY"):
        Settings.load({}, {"PUSHSVC_JWT_KYE": SECRET})


def test_a_misspelt_variable_stops_the_server_with_one_line() -> None:
    done = run_tool("serve", "--port", "0", env={"PUSHSVC_JWT_KYE": SECRET})
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "pushsvc: unknown variable PUSHSVC_JWT_KYE (did you mean PUSHSVC_JWT_KEY?)"
    ]


def test_the_tools_variables_are_not_taken_for_typos() -> None:
    env = {"PUSHSVC_URL": "http://x", "PUSHSVC_TOKEN": "t", "PUSHSVC_DEMO_RATE": "4"}
    assert Settings.load({}, env).jwt_key is None


def test_the_compose_files_variables_are_not_taken_for_typos() -> None:
    # A shell that exports them for docker-compose must still start a server.
    compose = (Path(__file__).resolve().parents[2] / "docker-compose.yml").read_text()
    names = set(re.findall(r"\$\{(PUSHSVC_[A-Z0-9_]+)", compose))
    # Those of the server's own settings it passes on are checked as settings.
    names -= {spec.variable for spec in Settings.specs()}
    assert names, "docker-compose.yml names no PUSHSVC_ variable of its own"
    assert Settings.load({}, dict.fromkeys(names, "x")).jwt_key is None


def test_a_previous_key_needs_the_key_it_rotates_to() -> None:
    with pytest.raises(ConfigError, match="needs --jwt-key"):
        Settings.load({}, {"PUSHSVC_JWT_PREVIOUS_KEY": SECRET})


def test_the_previous_key_never_appears_in_the_settings_a_server_logs() -> None:
    settings = Settings.load(
        {}, {"PUSHSVC_JWT_KEY": OTHER_SECRET, "PUSHSVC_JWT_PREVIOUS_KEY": SECRET}
    )
    assert SECRET not in repr(settings.redacted()) and OTHER_SECRET not in repr(settings)


def test_certfile_and_keyfile_go_together(tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("x")
    with pytest.raises(ConfigError, match="go together"):
        Settings.load({}, {"PUSHSVC_CERTFILE": str(cert)})


# ---------------------------------------------------------------------------- pushsvc token


@pytest.fixture(scope="module")
def secured() -> Iterator[PushsvcProcess]:
    proc = PushsvcProcess("serve", "--tick", "0", env={"PUSHSVC_JWT_KEY": SECRET}).start()
    yield proc
    proc.stop()


def _mint(*args: str, env: dict[str, str] | None = None) -> str:
    done = run_tool("token", *args, env=env)
    assert done.returncode == 0, done.stderr
    return remember(done.stdout.strip())


def test_pushsvc_token_mints_what_the_server_accepts(secured: PushsvcProcess) -> None:
    token = _mint(
        "--publish", "tok.a,tok.b.*", "--subscribe", "tok.a", "--ttl", "2h", "--sub", "ci",
        env={"PUSHSVC_JWT_KEY": SECRET},
    )  # fmt: skip
    grant = Verifier(load_key(SECRET)).verify(token)
    assert grant.subject == "ci"
    assert grant.publish.selectors == ("tok.a", "tok.b.*")
    assert grant.subscribe.selectors == ("tok.a", "tok.a.late")  # its late stream too
    url = f"--url={secured.base}"
    with SSEClient(
        secured.port, "/topics/tok.a/stream", headers={"Authorization": f"Bearer {token}"}
    ) as s:
        s.next_data("snapshot")
        done = run_tool("publish", url, "tok.a", "4", env={"PUSHSVC_TOKEN": token})
        assert done.stdout.strip() == "accepted 1", done.stderr
        assert s.next_data()[1]["event"]["value"] == 4
    refused = run_tool("publish", url, "tok.a", "4")
    assert refused.returncode != 0 and "401" in refused.stderr
    beyond = run_tool("publish", url, "other", "4", env={"PUSHSVC_TOKEN": token})
    assert beyond.returncode != 0 and "403" in beyond.stderr


def test_pushsvc_subscribe_with_a_token(secured: PushsvcProcess) -> None:
    token = _mint("--publish", "tok.s", "--subscribe", "tok.s", env={"PUSHSVC_JWT_KEY": SECRET})
    url = f"--url={secured.base}"
    subscriber = start_tool("subscribe", url, "--token", token, "tok.s", "--count", "1")
    try:
        assert subscriber.stdout is not None
        assert json.loads(subscriber.stdout.readline())["event"] == "snapshot"
        assert run_tool("publish", url, "--token", token, "tok.s", "9").returncode == 0
        update = json.loads(subscriber.stdout.readline())
        assert update["data"]["event"]["value"] == 9
        assert subscriber.wait(10) == 0
    finally:
        subscriber.kill()
        subscriber.wait()
        assert subscriber.stdout is not None
        subscriber.stdout.close()
    unauthorized = run_tool("subscribe", url, "tok.s", "--count", "0")
    assert unauthorized.returncode != 0 and "401" in unauthorized.stderr


def test_pushsvc_replay_without_a_token_is_one_line_saying_401(
    secured: PushsvcProcess, tmp_path: Path
) -> None:
    csv = tmp_path / "values.csv"
    csv.write_text("value\n1\n2\n")
    done = run_tool("replay", f"--url={secured.base}", str(csv), "--topic", "tok.r")
    assert done.returncode == 1
    (line,) = done.stderr.splitlines()  # no progress bar drawn before it, nor after
    assert line.startswith("Error: HTTP 401 ")


def test_pushsvc_token_with_a_private_key_and_its_errors(tmp_path: Path) -> None:
    private, public = write_keypair(tmp_path, "ec")
    token = _mint("--private-key", str(private), "--publish", "*")
    assert Verifier(load_key(f"@{public}")).verify(token).publish.everything
    # The server's public key can verify but not sign.
    done = run_tool("token", "--publish", "*", env={"PUSHSVC_JWT_KEY": f"@{public}"})
    assert done.returncode == 2 and "--private-key" in done.stderr
    done = run_tool("token", "--publish", "bad*")
    assert done.returncode == 2
    done = run_tool("token", "--publish", "bad*", env={"PUSHSVC_JWT_KEY": SECRET})
    assert done.returncode == 2 and "bad*" in done.stderr


def test_a_garbage_token_is_a_401_saying_it_is_not_a_jwt(make_app: MakeApp) -> None:
    client = make_app(jwt_key=SECRET).test_client()
    answer = client.get("/topics/orders/stats", headers={"Authorization": "Bearer abc.def.ghi"})
    assert answer.status_code == 401
    assert answer.json["error"]["message"] == f"invalid token: {NOT_A_JWT}"


@pytest.mark.parametrize("ttl", ["1h", "7d", "1s", "90"])
def test_pushsvc_token_lasts_exactly_its_ttl(ttl: str) -> None:
    claims = jwt.decode(
        _mint("--subscribe", "a", "--ttl", ttl, env={"PUSHSVC_JWT_KEY": SECRET}),
        options={"verify_signature": False},
    )
    seconds = {"1h": 3600, "7d": 7 * 86400, "1s": 1, "90": 90}[ttl]
    assert claims["exp"] - claims["iat"] == seconds


@pytest.mark.parametrize("ttl", ["0", "500ms", "1500ms"])
def test_pushsvc_token_refuses_a_ttl_under_a_second_or_not_whole_in_one_line(ttl: str) -> None:
    done = run_tool("token", "--subscribe", "a", "--ttl", ttl, env={"PUSHSVC_JWT_KEY": SECRET})
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        f"pushsvc token: --ttl takes whole seconds, at least 1s (30m, 1h, 7d); got {ttl!r}\n"
    )


def test_pushsvc_token_warns_when_it_grants_no_topic() -> None:
    done = run_tool("token", "--sub", "ci", env={"PUSHSVC_JWT_KEY": SECRET})
    assert done.returncode == 0 and done.stdout.count(".") == 2
    assert done.stderr == (
        "pushsvc token: warning: no --publish and no --subscribe: this token grants no topic\n"
    )
    quiet = run_tool("token", "--subscribe", "a", env={"PUSHSVC_JWT_KEY": SECRET})
    assert quiet.stderr == ""


@pytest.mark.parametrize("origins", ["*", "https://a.test/*", "a.test", "https://a.test/path"])
def test_cors_origins_are_named_never_a_wildcard(origins: str) -> None:
    with pytest.raises(ConfigError, match="PUSHSVC_CORS_ORIGINS"):
        Settings.load({}, {"PUSHSVC_CORS_ORIGINS": origins})
    ok = Settings.load({}, {"PUSHSVC_CORS_ORIGINS": "https://a.test, http://b.test:8080"})
    assert ok.cors_origins == ("https://a.test", "http://b.test:8080")


def test_json_logs_carry_the_request_id() -> None:
    server = PushsvcProcess(
        "serve", "--tick", "0", "--log-format", "json", env={"PUSHSVC_JWT_KEY": SECRET}
    ).start()
    try:
        # `exp` is the minting second plus the TTL: 3 s leaves at least 2 s to open the
        # stream on a loaded machine (1 s once left a few ms, and the token expired first).
        token = hs256(subscribe=["logs.a"], ttl_s=3)
        headers = {"Authorization": f"Bearer {token}", "X-Request-ID": "req-42"}
        with SSEClient(server.port, "/topics/logs.a/stream", headers=headers) as stream:
            assert stream.response_headers["x-request-id"] == "req-42"
            stream.next_data("snapshot")
            # Held open until the token expires: a client that leaves first ends its stream
            # as `gone`, which is not logged.
            stream.wait_closed(timeout=10)
        server.wait_for_log("stream ended: expired")
    finally:
        server.stop()
    lines = [json.loads(line) for line in server.output]  # every line is one JSON object
    ended = next(line for line in lines if line["message"] == "stream ended: expired")
    assert ended["request_id"] == "req-42" and ended["level"] == "info"
    assert {"ts", "logger"} <= set(ended)
