"""A Symfony application's publications, made with Symfony's own Mercure component (Debian's
`php-symfony-mercure`, which CI installs: `.ci/run`) through `tests/support/symfony_publish.php`,
on the embedded server, on Redis and on a Redis Cluster:

* one sequential publisher's updates over several topics reach a subscriber of all of them in
  the order it published them (the hub's one sequence), and a resume from one of its own ids
  is exact;
* any type the specification allows (`Book Updated`, `café`, `user/created`) is carried, as
  the `event:` a browser's listener is added for;
* what the specification refuses is refused (the component raises its `RuntimeException`),
  and a private update reaches only a subscriber allowed it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness.live import PushsvcProcess

from support.mercure_hub import BACKENDS, HUB, iri, serving_hub, subscribe, token

SCRIPT = Path(__file__).resolve().parents[1] / "support" / "symfony_publish.php"
COMPONENT = Path("/usr/share/php/Symfony/Component/Mercure/autoload.php")

pytestmark = pytest.mark.skipif(
    shutil.which("php") is None or not COMPONENT.exists(),
    reason="needs php and Symfony's Mercure component (apt: php-cli php-symfony-mercure)",
)


@pytest.fixture(params=BACKENDS, scope="module")
def hub(request: pytest.FixtureRequest) -> Iterator[PushsvcProcess]:
    with serving_hub(request.param, request) as proc:
        yield proc


def symfony_publish(hub: PushsvcProcess, updates: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Each of `updates` published in turn by Symfony's `Hub::publish`; what each returned."""
    env = {
        **os.environ,
        "MERCURE_URL": f"http://127.0.0.1:{hub.port}{HUB}",
        "MERCURE_JWT": token(publish=["*"]),
    }
    done = subprocess.run(
        ["php", str(SCRIPT)],
        input="".join(json.dumps(u) + "\n" for u in updates),
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(results) == len(updates), done.stdout + done.stderr
    return results


def test_a_symfony_publishers_updates_arrive_in_its_order_and_resume_exactly(
    hub: PushsvcProcess,
) -> None:
    run = uuid.uuid4().hex[:8]
    books = [iri(f"sf-{run}-book") for _ in range(3)] + [iri(f"sf-{run}-books")]
    selectors = [("match", t) for t in books]
    plan = [{"topics": [books[n % 4]], "data": f"i={n}", "id": f"{run}-{n}"} for n in range(40)]
    with subscribe(hub, *selectors) as stream:
        results = symfony_publish(hub, plan)
        assert [r.get("id") for r in results] == [u["id"] for u in plan], results
        received = [stream.next() for _ in plan]
    assert [m.data for m in received] == [u["data"] for u in plan]
    with subscribe(hub, *selectors, last_event_id=plan[9]["id"]) as resumed:
        assert [resumed.next().id for _ in plan[10:]] == [u["id"] for u in plan[10:]]


def test_every_type_the_specification_allows_is_carried(hub: PushsvcProcess) -> None:
    topic = iri("sf-typed")
    types = ["Book Updated", "café", "user/created"]
    with subscribe(hub, ("match", topic)) as stream:
        results = symfony_publish(hub, [{"topics": [topic], "type": t} for t in types])
        assert all("id" in r for r in results), results
        assert [stream.next().event for _ in types] == types


def test_what_the_specification_refuses_is_refused_and_private_stays_private(
    hub: PushsvcProcess,
) -> None:
    topic = iri("sf-private")
    allowed = subscribe(hub, ("match", topic), auth=token(subscribe=[topic]))
    anonymous = subscribe(hub, ("match", topic))
    try:
        results = symfony_publish(
            hub,
            [
                {"topics": ["\\.well-known\\mercure\\subscriptions\\x"], "data": "forged"},
                {"topics": [topic], "id": "#mine"},
                {"topics": [topic], "id": "a\u200bb"},
                {"topics": [topic + "\u0001"]},
                {"topics": [topic], "type": "mercure"},
                {"topics": [topic], "data": "secret", "private": True, "id": f"p-{topic}"},
                {"topics": [topic], "data": "public", "id": f"n-{topic}"},
            ],
        )
        assert all("RuntimeException" in r.get("error", "") for r in results[:5]), results
        assert [r.get("id") for r in results[5:]] == [f"p-{topic}", f"n-{topic}"]
        assert [allowed.next().data for _ in range(2)] == ["secret", "public"]
        assert anonymous.next().data == "public"  # the private one would have come first
    finally:
        allowed.close()
        anonymous.close()
