"""A plain loop of `Client.publish(...)` against a `pushsvc serve`: messages per second with the
client's batching (the default: each call held a few milliseconds, sent with others in one
`POST /events`) and without (`batching=None`: one POST per call, each awaited), to one topic
and to a topic per user.

    python -m bench.client_batching                     # 20,000 messages a mode
    python -m bench.client_batching --messages 5000 --users 1000 --json

Each mode runs on a fresh server (its topics new), the loop timed from the first call to the
last answer (`flush`). A message is `{"type": "notice", "data": {"n": i}}`.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from harness.live import PushsvcProcess

from pushsvc.client import BatchSettings, Client


def run(mode: str, topics: int, messages: int) -> dict[str, Any]:
    server = PushsvcProcess("serve", "--tick", "0", "--heartbeat", "15s").start()
    try:
        batching = None if mode == "unbatched" else BatchSettings()
        with Client(server.base, batching=batching) as client:
            client.publish("warm-up", data=0).result()
            started = time.perf_counter()
            futures = [
                client.publish(f"u{i % topics}", data={"n": i}, type="notice")
                for i in range(messages)
            ]
            client.flush()
            elapsed = time.perf_counter() - started
        accepted = sum(future.result() for future in futures)
    finally:
        server.stop()
    return {
        "mode": mode,
        "topics": topics,
        "messages": messages,
        "accepted": accepted,
        "seconds": round(elapsed, 3),
        "messages_per_s": round(messages / elapsed),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--users", type=int, default=10_000, help="topics of the per-user run")
    parser.add_argument("--json", action="store_true", help="one JSON object a line")
    args = parser.parse_args()
    for topics in (1, args.users):
        for mode in ("unbatched", "batched"):
            # Unbatched is one POST per message: a tenth of the messages keeps its run short.
            count = args.messages // 10 if mode == "unbatched" else args.messages
            row = run(mode, topics, count)
            if args.json:
                print(json.dumps(row), flush=True)
            else:
                print(
                    f"{row['mode']:>9}  {row['topics']:>6} topic(s)  {row['messages']:>6} "
                    f"messages  {row['messages_per_s']:>7} messages/s",
                    flush=True,
                )


if __name__ == "__main__":
    main()
