"""The sse-starlette peer: a Starlette app that relays each POSTed body to every subscriber.

Runs in its own venv (.bench-venvs/sse-starlette, built by bench/servers.py) under
`uvicorn sse_starlette_app:app`. Subscribers: GET /stream, an `EventSourceResponse` whose
every message is an unnamed `data:` holding exactly the body published (LF line ends, as
pushsvc and nchan write them; sse-starlette's default is CRLF). Producers: POST /publish.
GET /subscribers: how many streams are live (readiness, for the benchmark). A subscriber is
counted before its response head is sent, so a client that has the head gets every message
published after it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

subscribers: set[asyncio.Queue[str]] = set()


async def stream(request: Request) -> EventSourceResponse:
    queue: asyncio.Queue[str] = asyncio.Queue()
    subscribers.add(queue)

    async def messages() -> AsyncIterator[dict[str, str]]:
        try:
            while True:
                yield {"data": await queue.get()}
        finally:
            subscribers.discard(queue)

    # No ping while the benchmark runs (pushsvc's heartbeat is every 15 s, nchan sends none).
    return EventSourceResponse(messages(), sep="\n", ping=3600)


async def publish(request: Request) -> JSONResponse:
    body = (await request.body()).decode()
    for queue in subscribers:
        queue.put_nowait(body)
    return JSONResponse({"receivers": len(subscribers)}, status_code=202)


async def count(request: Request) -> JSONResponse:
    return JSONResponse({"subscribers": len(subscribers)})


app = Starlette(
    routes=[
        Route("/stream", stream),
        Route("/publish", publish, methods=["POST"]),
        Route("/subscribers", count),
    ]
)
