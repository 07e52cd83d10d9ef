"""Publish a Mercure update to pushsvc the way Symfony's Mercure component does.

    PUSHSVC_JWT_KEY='a-secret-of-at-least-32-bytes-long!!' pushsvc serve --mercure anonymous
    python examples/mercure_publish.py http://127.0.0.1:8000 'a-secret-of-at-least-32-bytes-long!!'

A form-encoded body (one `topic` field per topic, `data`, and `private`, `id`, `type` or
`retry` when wanted), `Authorization: Bearer` with a JWT whose `mercure.publish` claim lists
the topics it may publish to; the answer is the update's id, as text. Any browser receives it:

    const url = new URL("http://127.0.0.1:8000/.well-known/mercure");
    url.searchParams.append("match", "https://example.com/books/1");
    new EventSource(url).onmessage = (e) => console.log(JSON.parse(e.data));
"""

from __future__ import annotations

import json
import sys
import time
from urllib.parse import urlencode

import httpx
import jwt


def publisher_token(secret: str) -> str:
    """A token that may publish to every topic, as the Mercure bundle's factory makes one."""
    claims = {"mercure": {"publish": ["*"]}, "exp": int(time.time()) + 3600}
    return jwt.encode(claims, secret, algorithm="HS256")


def publish(hub: str, secret: str, topics: list[str], data: object, **fields: str) -> str:
    """POST one update to the hub; its id."""
    form = [("topic", topic) for topic in topics]
    form.append(("data", json.dumps(data)))
    form.extend(fields.items())
    answer = httpx.post(
        f"{hub}/.well-known/mercure",
        content=urlencode(form),  # as PHP's http_build_query: one `topic=` per topic
        headers={
            "Authorization": f"Bearer {publisher_token(secret)}",
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    answer.raise_for_status()
    return answer.text


if __name__ == "__main__":
    base, key = sys.argv[1], sys.argv[2]
    update_id = publish(
        base,
        key,
        ["https://example.com/books/1", "https://example.com/users/dunglas/books/1"],
        {"status": "OutOfStock"},
    )
    print(update_id)
