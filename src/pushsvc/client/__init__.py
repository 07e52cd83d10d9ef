"""The Python client: `Client` (publish with retries, history as a DataFrame, typed
subscribe), `Endpoint` (the plain HTTP transport the tools use), what they return
(`models`), the SSE reader (`sse_parser`) and the CSV replay tool (`csv_replay`)."""

from pushsvc.client.client import (
    HISTORY_PAGE,
    IDEMPOTENCY_KEY,
    RETRYABLE,
    Backoff,
    Client,
    ClientError,
    Endpoint,
    RetryAfter,
    Unreachable,
    batches,
    new_idempotency_key,
)

__all__ = [
    "HISTORY_PAGE",
    "IDEMPOTENCY_KEY",
    "RETRYABLE",
    "Backoff",
    "Client",
    "ClientError",
    "Endpoint",
    "RetryAfter",
    "Unreachable",
    "batches",
    "new_idempotency_key",
]
