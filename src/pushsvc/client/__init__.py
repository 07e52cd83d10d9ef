"""The Python clients, on httpx: `Client` for blocking programs and `AsyncClient` for asyncio,
with one API — publish events and messages with idempotent retries, history and series as
pandas DataFrames, typed subscriptions that resume, the application's messages as published,
and `frames()`, a live DataFrame.

    from pushsvc.client import Client
    with Client("http://127.0.0.1:8000") as client:
        client.publish("orders", [{"value": 12.5}])
        client.publish("orders", data={"order": 4711}, type="shipped")

The modules: `sync_client` and `async_client` (the two clients), `calls` (what each operation
asks, free of I/O), `stream` (a subscription between connections), `message_streams` (what
`messages()` returns), `retry` (backoff and tenacity's loops), `errors`, `models` (typed
messages, DataFrames), `live_frames`, `session` and `csv_replay` (`pushsvc replay`).
"""

from pushsvc.client.async_client import AsyncClient
from pushsvc.client.batching import BatchSettings
from pushsvc.client.calls import IDEMPOTENCY_KEY, batches, new_idempotency_key
from pushsvc.client.errors import ApiError, ClientError, Unreachable
from pushsvc.client.message_streams import AsyncMessageStream, MessageStream
from pushsvc.client.models import (
    AlertChange,
    FunnelStep,
    Gap,
    Message,
    Point,
    SessionStats,
    Snapshot,
    StreamMessage,
    StreamUpdate,
    TopValue,
    anomaly_rate_of,
    distinct_of,
    sessions_of,
    top_of,
)
from pushsvc.client.published import Published, PublishFuture
from pushsvc.client.retry import Backoff
from pushsvc.client.stream import RawMessage, StreamOptions
from pushsvc.client.sync_client import Client

__all__ = [
    "IDEMPOTENCY_KEY",
    "AlertChange",
    "ApiError",
    "AsyncClient",
    "AsyncMessageStream",
    "Backoff",
    "BatchSettings",
    "Client",
    "ClientError",
    "FunnelStep",
    "Gap",
    "Message",
    "MessageStream",
    "Point",
    "PublishFuture",
    "Published",
    "RawMessage",
    "SessionStats",
    "Snapshot",
    "StreamMessage",
    "StreamOptions",
    "StreamUpdate",
    "TopValue",
    "Unreachable",
    "anomaly_rate_of",
    "batches",
    "distinct_of",
    "new_idempotency_key",
    "sessions_of",
    "top_of",
]
