"""GET /topics/{topic}/history: what the dashboard draws first and what analysts load.

The updates it returns are judged against the same updates received over a real SSE stream;
its CSV and the client's DataFrame against pandas (`json_normalize` of the streamed updates
is the oracle for columns, dtypes and values). Parameters and access control are checked
in-process with Flask's test client.
"""

from __future__ import annotations

import io
from typing import Any

import pandas as pd
import pytest
from flask.testing import FlaskClient
from harness.live import PushsvcProcess, SSEClient, post, request

from conftest import MakeApp
from pushsvc.client import Client
from pushsvc.core.updates import UpdateId
from support.auth_tokens import SECRET, hs256

WINDOWS = ("10s", "1m", "5m")
STATS = ("count", "sum", "mean", "min", "max", "var", "stddev", "p50", "p90", "p99")
T0 = 1_763_700_000  # 2025-11-21T04:40:00Z


def streamed(server: PushsvcProcess, topic: str, events: list[dict[str, Any]]) -> list[Any]:
    """Post `events` one request each while a stream of the topic is open; the updates it
    received (parsed), in order."""
    with SSEClient(server.port, f"/topics/{topic}/stream") as stream:
        stream.next_data("snapshot")
        for event in events:
            assert post(server.port, topic, event)[0] == 202
        return [data for _, data in stream.take(len(events))]


def oracle(updates: list[dict[str, Any]]) -> pd.DataFrame:
    """What a pandas user would build from the streamed JSON by hand."""
    flat = pd.json_normalize(updates)
    frame = pd.DataFrame(
        {
            "id": flat["id"].astype("str"),
            "time": pd.to_datetime((flat["ts"] * 1e6).round().astype("int64"), unit="us", utc=True),
            "reason": flat["reason"].astype("str"),
            "value": flat["event.value"].astype("float64"),
        }
    )
    for window in WINDOWS:
        for stat in STATS:
            column = flat[f"windows.{window}.{stat}"]
            frame[f"{window}_{stat}"] = column.astype("int64" if stat == "count" else "float64")
    # Then a column per tag name the events carry, by name: the tag's value, or nothing.
    for column in sorted(c for c in flat.columns if c.startswith("event.tags.")):
        frame[f"tag.{column.removeprefix('event.tags.')}"] = flat[column]
    return frame


def test_json_csv_and_the_dataframe_agree_with_the_streamed_updates(
    server: PushsvcProcess, topic: str
) -> None:
    values = [10, 20.5, -3, 1e-7, 60]
    # 90 s apart at the end: the last update has empty 10s/1m-only statistics (nulls).
    events = [{"value": v, "ts": T0 + i} for i, v in enumerate(values[:-1])]
    events[1]["tags"] = {"dish": "rice, fried", "k": "w"}  # a comma: quoted in the CSV
    events.append({"value": values[-1], "ts": T0 + 200, "tags": {"k": "v"}})
    updates = streamed(server, topic, events)
    with Client(server.base) as client:
        page = client.history_page(topic)
        frame = client.history(topic)
    assert page["updates"] == updates  # exactly what the stream carried
    # The history's newest id: the last update, or a series point published after it.
    resume = UpdateId.parse(page["resume_id"])
    assert resume is not None and not UpdateId.parse(updates[-1]["id"]).is_after(resume)
    assert (page["more"], page["gap"], page["windows"], page["stats"]) == (
        False,
        False,
        list(WINDOWS),
        list(STATS),
    )

    expected = oracle(updates)
    pd.testing.assert_frame_equal(frame, expected)
    assert frame.attrs == {"resume_id": page["resume_id"], "gap": False}
    assert frame["1m_var"].isna().tolist() == [True, False, False, False, True]
    assert list(frame.columns[-2:]) == ["tag.dish", "tag.k"]
    tag_k = [v if isinstance(v, str) else None for v in frame["tag.k"]]
    assert tag_k == [None, "w", None, None, "v"]

    _, _, csv = request(server.port, "GET", f"/topics/{topic}/history?format=csv")
    from_csv = pd.read_csv(io.BytesIO(csv), parse_dates=["time"])
    pd.testing.assert_frame_equal(from_csv, expected, check_dtype=False)
    assert from_csv.dtypes.to_dict() == expected.dtypes.to_dict() | {
        "time": from_csv["time"].dtype  # read_csv picks its own resolution; UTC either way
    }
    assert str(from_csv["time"].dt.tz) == "UTC"


def test_since_an_id_an_epoch_time_or_an_rfc3339_time(client: FlaskClient, topic: str) -> None:
    events = [{"value": n, "ts": T0 + n} for n in range(5)]
    assert client.post(f"/topics/{topic}/events", json=events).status_code == 202
    ids = [u["id"] for u in client.get(f"/topics/{topic}/history").json["updates"]]

    def values(**query: object) -> list[float]:
        response = client.get(f"/topics/{topic}/history", query_string=query)
        assert response.status_code == 200, response.json
        return [u["event"]["value"] for u in response.json["updates"]]

    assert values(since=ids[1]) == [2, 3, 4]  # an id: exclusive, like Last-Event-ID
    assert values(since=T0 + 2) == [2, 3, 4]  # a time: inclusive on the update's ts
    assert values(since=T0 + 2.5) == [3, 4]
    assert values(since="2025-11-21T04:40:03Z") == [3, 4]
    assert values(since="2025-11-21T05:40:03+01:00") == [3, 4]
    assert values(limit=2) == [3, 4]  # the newest two, newest last
    assert values(since=T0, limit=2) == [0, 1]  # from `since` forward: the first two


def test_a_full_page_resumes_where_it_ends(client: FlaskClient, topic: str) -> None:
    events = [{"value": n, "ts": T0 + n} for n in range(5)]
    assert client.post(f"/topics/{topic}/events", json=events).status_code == 202
    seen: list[float] = []
    since: str | float = T0
    while True:
        response = client.get(f"/topics/{topic}/history", query_string={"since": since, "limit": 2})
        page = response.json
        seen += [u["event"]["value"] for u in page["updates"]]
        assert response.headers["Pushsvc-Resume-Id"] == page["resume_id"]
        assert response.headers["Pushsvc-More"] == ("true" if page["more"] else "false")
        if not page["more"]:
            break
        since = page["resume_id"]
    assert seen == [0, 1, 2, 3, 4]


def test_csv_by_accept_header_or_format(client: FlaskClient, topic: str) -> None:
    assert client.post(f"/topics/{topic}/events", json={"value": 1.5, "ts": T0}).status_code == 202
    by_accept = client.get(f"/topics/{topic}/history", headers={"Accept": "text/csv"})
    by_format = client.get(f"/topics/{topic}/history?format=csv")
    assert by_accept.mimetype == by_format.mimetype == "text/csv"
    assert by_accept.data == by_format.data
    header, row = by_accept.data.decode().splitlines()
    assert header.split(",")[:6] == ["id", "time", "reason", "value", "10s_count", "10s_sum"]
    assert row.split(",")[1:6] == ["2025-11-21T04:40:00.000000Z", "event", "1.5", "1", "1.5"]
    json_anyway = client.get(f"/topics/{topic}/history?format=json", headers={"Accept": "text/csv"})
    assert json_anyway.mimetype == "application/json"


def test_an_unknown_topic_has_an_empty_history(client: FlaskClient, topic: str) -> None:
    response = client.get(f"/topics/{topic}/history")
    assert response.status_code == 200
    assert response.json["updates"] == [] and response.json["resume_id"] is None
    csv = client.get(f"/topics/{topic}/history?format=csv").data.decode()
    assert csv.splitlines()[0].startswith("id,time,reason,value,10s_count")
    assert len(csv.splitlines()) == 1


@pytest.mark.parametrize(
    ("query", "names"),
    [
        ("limit=0", "limit"),
        ("limit=10001", "limit"),
        ("limit=ten", "limit"),
        ("limit=-1", "limit"),
        ("since=yesterday", "since"),
        ("since=nan", "since"),
        ("since=1e300", "since"),
        # Not the epoch seconds /openapi.json describes, though float() would take them.
        ("since=1e9", "since"),
        ("since=%2B1763700000", "since"),
        ("since=1_763_700_000", "since"),
        ("since=%201763700000", "since"),
        ("since=2025-13-01T00:00:00Z", "since"),
        ("format=xml", "format"),
    ],
)
def test_bad_parameters_are_a_400_naming_them(
    client: FlaskClient, topic: str, query: str, names: str
) -> None:
    response = client.get(f"/topics/{topic}/history?{query}")
    assert response.status_code == 400
    assert response.json["error"]["code"] == "bad_request"
    assert f"?{names}=" in response.json["error"]["message"]


def test_a_bad_topic_name_is_a_400(client: FlaskClient) -> None:
    assert client.get("/topics/bad%20name/history").status_code == 400


def test_limit_defaults_to_1000_and_goes_up_to_10000(client: FlaskClient, topic: str) -> None:
    events = [{"value": n, "ts": T0 + n / 1000} for n in range(1001)]
    assert client.post(f"/topics/{topic}/events", json=events).status_code == 202
    default = client.get(f"/topics/{topic}/history").json
    assert len(default["updates"]) == 1000 and default["more"] is True
    assert default["updates"][0]["event"]["value"] == 1
    largest = client.get(f"/topics/{topic}/history?limit=10000").json
    assert len(largest["updates"]) == 1001 and largest["more"] is False


def test_with_auth_it_answers_like_a_stream_of_the_topic(make_app: MakeApp) -> None:
    app = make_app(jwt_key=SECRET)
    client = app.test_client()
    publisher = {"Authorization": f"Bearer {hs256(publish=['*'])}"}
    assert (
        client.post("/topics/ok.a/events", json={"value": 1}, headers=publisher).status_code == 202
    )
    path = "/topics/ok.a/history"

    refused = client.get(path)
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    other = {"Authorization": f"Bearer {hs256(subscribe=['other.*'])}"}
    assert client.get(path, headers=other).status_code == 403
    # A bad token is judged before the parameters are used.
    assert client.get(path + "?limit=5", headers=other).status_code == 403

    reader = {"Authorization": f"Bearer {hs256(subscribe=['ok.*'])}"}
    assert len(client.get(path, headers=reader).json["updates"]) == 1
    client.set_cookie("pushsvc_token", hs256(subscribe=["ok.a"]))
    assert len(client.get(path).json["updates"]) == 1
    assert client.get(path + "?format=csv").status_code == 200


def test_openapi_describes_it_truthfully(client: FlaskClient, make_app: MakeApp) -> None:
    operation = client.get("/openapi.json").json["paths"]["/topics/{topic}/history"]["get"]
    assert set(operation["responses"]) == {"200", "400", "414", "503"}  # auth off: no 401/403
    secured = make_app(jwt_key="k" * 40).test_client()
    guarded = secured.get("/openapi.json").json["paths"]["/topics/{topic}/history"]["get"]
    assert set(guarded["responses"]) == {"200", "400", "401", "403", "414", "503"}
    assert set(operation["responses"]["200"]["content"]) == {"application/json", "text/csv"}
    assert {p["name"] for p in operation["parameters"]} == {
        "topic",
        "group",
        "since",
        "limit",
        "format",
    }


def test_more_on_the_newest_page_is_read_from_the_oldest_as_documented(
    client: FlaskClient, topic: str
) -> None:
    """Without `since`, `more` says older updates were left out; its resume_id continues live
    (nothing older), and `since=0` then `since=<resume_id>` reads them all, oldest first."""
    events = [{"value": n, "ts": T0 + n} for n in range(5)]
    assert client.post(f"/topics/{topic}/events", json=events).status_code == 202
    newest = client.get(f"/topics/{topic}/history", query_string={"limit": 2}).json
    assert newest["more"] and [u["event"]["value"] for u in newest["updates"]] == [3, 4]
    after = client.get(f"/topics/{topic}/history", query_string={"since": newest["resume_id"]})
    assert after.json["updates"] == []  # what the stream would continue with: nothing yet
    seen: list[float] = []
    since: str | int = 0
    while True:
        page = client.get(
            f"/topics/{topic}/history", query_string={"since": since, "limit": 2}
        ).json
        seen += [u["event"]["value"] for u in page["updates"]]
        if not page["more"]:
            break
        since = page["resume_id"]
    assert seen == [0, 1, 2, 3, 4]
    assert page["resume_id"] == newest["resume_id"]
